"""Fetch the user's code into ``code/`` and unpack it safely.

Sources (``sagemaker_submit_directory`` or ``SAGEMAKER_SUBMIT_DIRECTORY``):
``s3://bucket/key.tar.gz`` (boto3, honouring ``AWS_ENDPOINT_URL_S3``), ``file://`` URIs and
plain paths naming a ``.tar.gz`` or a directory.

Archives are hostile input. Every member is checked *before* anything is written: no
absolute names, no ``..``, no links that point outside, no device files or FIFOs, and
limits on member count and total size stop archive bombs. A bad archive is refused whole
with a one-line reason; we never "sanitise" by guessing what the author meant.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import CodeFetchError

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 1024**3  # uncompressed code; source bundles are normally kilobytes
DEFAULT_MAX_MEMBERS = 20_000
GZIP_MAGIC = b"\x1f\x8b"


def _limit(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise CodeFetchError(f"{name} must be a whole number, not {raw!r}") from None
    if value < 1:
        raise CodeFetchError(f"{name} must be at least 1, not {value}")
    return value


def limits() -> tuple[int, int]:
    """(max total bytes, max members) for user code, from the environment."""
    return (
        _limit("ANYJOB_CODE_MAX_BYTES", DEFAULT_MAX_BYTES),
        _limit("ANYJOB_CODE_MAX_MEMBERS", DEFAULT_MAX_MEMBERS),
    )


def fetch_code(source: str, dest: Path, *, region: str | None = None) -> bool:
    """Put the code named by ``source`` into ``dest``.

    Returns False (and does nothing) when ``dest`` already holds files: code baked into
    the image wins, as in the official toolkit. Raises ``CodeFetchError``.
    """
    if dest.is_dir() and any(dest.iterdir()):
        log.info("%s is not empty: using the code already there", dest)
        return False
    if not source:
        raise CodeFetchError("no code location given (sagemaker_submit_directory is empty)")
    dest.mkdir(parents=True, exist_ok=True)
    if source.startswith("s3://"):
        fd, tmp = tempfile.mkstemp(prefix=".sourcedir-", suffix=".tar.gz", dir=dest.parent)
        os.close(fd)
        try:
            _download_s3(source, Path(tmp), region=region)
            extract_tar(Path(tmp), dest, shown_as=source)
        finally:
            os.unlink(tmp)
        return True
    path = local_path(source)
    if path.is_dir():
        copy_dir(path, dest)
    elif path.is_file():
        extract_tar(path, dest, shown_as=source)
    else:
        raise CodeFetchError(f"code location {source} does not exist")
    return True


def local_path(source: str) -> Path:
    """The local path a ``file://`` URI or plain path names; raises for other schemes."""
    if source.startswith("file://"):
        parsed = urlparse(source)
        if parsed.netloc not in ("", "localhost"):
            raise CodeFetchError(f"file:// URI must name a local path, not host {parsed.netloc!r}")
        return Path(unquote(parsed.path))
    if "://" in source:
        scheme = source.split("://", 1)[0]
        raise CodeFetchError(f"unsupported code location scheme {scheme!r}: use s3://, file:// or a path")
    return Path(source)


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not key:
        raise CodeFetchError(f"{uri} is not a valid s3://bucket/key URI")
    return bucket, key


def _download_s3(uri: str, target: Path, *, region: str | None) -> None:
    # boto3 costs ~0.4 s to import: only jobs whose code is on S3 pay for it.
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3_uri(uri)
    max_bytes, _ = limits()
    kwargs = {}
    if region and not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        kwargs["region_name"] = region
    try:
        client = boto3.client("s3", **kwargs)
        obj = client.get_object(Bucket=bucket, Key=key)
        size = obj.get("ContentLength") or 0
        if size > max_bytes:
            raise CodeFetchError(f"{uri} is {size} bytes, over the {max_bytes}-byte limit for code")
        copied = 0
        with open(target, "wb") as out:
            for chunk in obj["Body"].iter_chunks(1 << 20):
                copied += len(chunk)
                if copied > max_bytes:
                    raise CodeFetchError(f"{uri} is over the {max_bytes}-byte limit for code")
                out.write(chunk)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            raise CodeFetchError(f"{uri} does not exist") from None
        if code == "NoSuchBucket":
            raise CodeFetchError(f"bucket {bucket!r} of {uri} does not exist") from None
        if code in ("AccessDenied", "403", "Forbidden"):
            raise CodeFetchError(f"access to {uri} was denied") from None
        raise CodeFetchError(f"could not download {uri}: {code or exc}") from None
    except BotoCoreError as exc:
        raise CodeFetchError(f"could not download {uri}: {exc}") from None
    log.info("downloaded %s (%d bytes)", uri, copied)


def _check_member(member: tarfile.TarInfo, shown_as: str) -> str | None:
    """Return the member's normalised name, None to skip it, or raise CodeFetchError."""
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    if name in ("", "."):
        return None
    if name.startswith("/"):
        raise CodeFetchError(f"{shown_as}: member {member.name!r} has an absolute path; refusing the archive")
    if ".." in name.split("/"):
        raise CodeFetchError(
            f"{shown_as}: member {member.name!r} would land outside code/; refusing the archive"
        )
    if member.issym() or member.islnk():
        target = member.linkname
        if target.startswith("/"):
            raise CodeFetchError(
                f"{shown_as}: link {member.name!r} points to absolute path {target!r}; refusing the archive"
            )
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            raise CodeFetchError(
                f"{shown_as}: link {member.name!r} points outside code/ ({target!r}); refusing the archive"
            )
    elif not (member.isreg() or member.isdir()):
        raise CodeFetchError(
            f"{shown_as}: member {member.name!r} is a device file or FIFO; refusing the archive"
        )
    return name


def extract_tar(archive: Path, dest: Path, *, shown_as: str | None = None) -> None:
    """Validate every member of a ``.tar.gz``, then extract it into ``dest``."""
    shown_as = shown_as or str(archive)
    max_bytes, max_members = limits()
    with open(archive, "rb") as fh:
        if fh.read(2) != GZIP_MAGIC:
            raise CodeFetchError(f"{shown_as} is not a gzip-compressed tar archive (.tar.gz)")
    members: list[tarfile.TarInfo] = []
    total = 0
    try:
        with tarfile.open(archive, "r:gz") as tf:
            while (member := tf.next()) is not None:
                if len(members) >= max_members:
                    raise CodeFetchError(
                        f"{shown_as} has more than {max_members} members; refusing the archive"
                    )
                name = _check_member(member, shown_as)
                if name is None:
                    continue
                total += member.size
                if total > max_bytes:
                    raise CodeFetchError(
                        f"{shown_as} unpacks to more than {max_bytes} bytes; refusing the archive"
                    )
                members.append(member)
            # Second line of defence: the stdlib's 'data' filter refuses the same things
            # and strips set-uid bits and odd permissions.
            tf.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, tarfile.FilterError):
            raise CodeFetchError(f"{shown_as}: {exc}; refusing the archive") from None
        raise CodeFetchError(f"{shown_as} is not a readable .tar.gz archive ({exc})") from None
    log.info("unpacked %d files (%d bytes) from %s", len(members), total, shown_as)


def copy_dir(src: Path, dest: Path) -> None:
    """Copy a code directory, refusing links that leave it and special files."""
    max_bytes, max_members = limits()
    src = src.resolve()
    count = total = 0
    for root, dirs, files in os.walk(src):
        rel_root = Path(root).relative_to(src)
        for name in [*dirs, *files]:
            path = Path(root) / name
            count += 1
            if count > max_members:
                raise CodeFetchError(f"{src} has more than {max_members} files")
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                target = path.resolve()
                if target != src and src not in target.parents:
                    raise CodeFetchError(f"{src}: link {rel_root / name} points outside the code directory")
            elif not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise CodeFetchError(f"{src}: {rel_root / name} is a device file or FIFO")
            elif stat.S_ISREG(st.st_mode):
                total += st.st_size
                if total > max_bytes:
                    raise CodeFetchError(f"{src} holds more than {max_bytes} bytes")
    shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
