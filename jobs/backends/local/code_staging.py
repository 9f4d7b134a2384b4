"""Code bundles anyjob fetches for the container: ``s3://`` ones in the embedded store.

The container fetches ``sagemaker_submit_directory`` (a training job) or
``SAGEMAKER_SUBMIT_DIRECTORY`` (an endpoint) itself (``anyjob_container.code``): a ``file://``
path the sandbox exposes, or a real S3 with the role's credentials. anyjob's embedded S3 is
neither: its files are anyjob's state (hidden in the sandbox), its web server is on the host's
loopback (out of the job's network namespace), and a job gets no credentials for it. So the
executor or the endpoint host fetches such a bundle first, with ``jobs.storage`` and bounded
in size, into a file of its own folder, exposes that file read-only in the sandbox and names
it in ``STAGED_VAR`` (a ``file://`` URI), which the container reads instead. The URI the job
sees (its hyperparameters, ``SAGEMAKER_SUBMIT_DIRECTORY``, ``module_dir``) stays what was sent.

Real S3 (``ANYJOB_S3=aws``, mapped roles) is left to the container, as before. No Django here:
the executor stages before Django is set up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jobs import storage

#: The variable naming the staged bundle inside the sandbox (``anyjob_container`` reads it).
STAGED_VAR = "ANYJOB_STAGED_SUBMIT_DIRECTORY"
#: The folder (of the job's or endpoint's own folder, outside its volume) holding the bundle.
FOLDER = "staged-code"
NAME = "sourcedir.tar.gz"


def needs_staging(uri: Any) -> bool:
    """Whether anyjob must fetch ``uri`` for the container: an ``s3://`` URI of the embedded S3."""
    return isinstance(uri, str) and uri.startswith("s3://") and storage.s3_embedded()


def max_bytes(limit: int) -> int:
    """The most a bundle may hold: the container's own limit for code (``ANYJOB_CODE_MAX_BYTES``,
    1 GiB by default) and ``limit`` (the channels' bound), whichever is smaller."""
    from anyjob_container.code import DEFAULT_MAX_BYTES, limits
    from anyjob_container.errors import CodeFetchError

    try:
        code_limit = limits()[0]
    except CodeFetchError:
        code_limit = DEFAULT_MAX_BYTES
    return min(code_limit, limit)


def stage(uri: str, root: Path, limit: int) -> Path:
    """Copy the object at ``uri`` to ``root/staged-code/sourcedir.tar.gz`` (at most ``limit``
    bytes: ``storage.TooLarge`` beyond) and return the file's path; ``StorageError`` when it
    cannot be read. The file is readable by the job's uid (it is the job's own code, and the
    sandbox binds the file alone); its folder is anyjob's."""
    folder = Path(root) / FOLDER
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    target, partial = folder / NAME, folder / f".{NAME}.part"
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        written = 0
        with os.fdopen(fd, "wb") as out, storage.open_read(uri) as stream:
            while chunk := stream.read(storage.CHUNK):
                written += len(chunk)
                if written > limit:
                    raise storage.TooLarge(f"{uri} is more than {limit} bytes, the limit for code")
                out.write(chunk)
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target
