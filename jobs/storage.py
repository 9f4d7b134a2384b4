"""Artifact and data storage behind ``s3://`` and ``file://`` URIs.

The local emulator stages channels, stores ``model.tar.gz``/``output.tar.gz`` and reads them back
through this module; the dashboard stores code bundles and shows artifacts through it. No Django
here. S3 is reached only through ``jobs.aws`` (so ``AWS_ENDPOINT_URL_S3`` and friends apply),
or, with the embedded S3 (``s3_embedded()``: the default when no S3 is configured), through an
in-process client over the store that anyjob's ``/aws`` endpoint serves.

URIs
    ``s3://bucket/key`` — the key is taken literally (``?`` and ``#`` are key characters, as in
    SageMaker's ``S3Uri``). ``file:///absolute/path`` — no host, percent-decoded like
    ``Path.as_uri()`` encodes. At most 1024 characters, SageMaker's limit for ``S3Uri``.

Errors
    ``StorageError`` (a ``ValueError``) for a bad URI or a failed operation, with the subclasses
    ``NotFound`` (no such object, file, bucket or archive member), ``TooLarge`` (a read over its
    limit; ``PackLimitExceeded``: a directory too big for ``pack_dir``) and ``ChannelError``
    (``stage_prefix``: a message in SageMaker's words). Local ``OSError``\\ s from the caller's
    own paths (a missing file to upload, an unwritable destination) are not wrapped, except in
    ``stage_prefix``.

Channel layout (``stage_prefix``)
    An S3Prefix channel holds every object whose key starts with the prefix — a plain string
    prefix, so ``s3://b/data/train`` also matches ``data/training/x``. Each object lands under the
    channel directory below the prefix when its key continues the prefix past a "/": with prefix
    ``data/train/`` or ``data/train``, ``data/train/a/x.csv`` → ``a/x.csv`` (the SDKs' ``upload_data``
    returns slash-less prefixes and their scripts read the files at the channel's top: SDK v3's
    ``sm_drivers`` channel is one). A key that matches the prefix only partially lands *relative to
    the prefix's last "/"*: with prefix ``data/train``, ``data/train-2.csv`` → ``train-2.csv`` and
    ``data/training/x.csv`` → ``training/x.csv``; a prefix that is one object's full key gives that
    object's base name. That is what SageMaker itself does: files partially
    matched by a prefix keep their full base names in remote jobs (aws/sagemaker-python-sdk issue
    #3612, which reports the SDK's local mode cutting them to the suffix — ``-data.csv`` — instead;
    we do not copy that). A ``file://`` channel is a path, not a string prefix: a directory's
    contents are copied relative to it, a single file lands under its own name.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal
from urllib.parse import quote, unquote

from botocore.exceptions import ClientError

from jobs import aws
from jobs.backends.local import readback

if TYPE_CHECKING:
    from jobs.backends.local.roles import Credentials

MAX_URI_CHARS = 1024  # SageMaker's S3Uri limit; S3's key limit is 1024 bytes
CHUNK = 1024 * 1024
_BUCKET = re.compile(r"[a-zA-Z0-9._-]{1,255}")  # what botocore itself accepts before sending
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

#: ``pack_dir``'s default bounds: entries walked, bytes of file data (SageMaker's default
#: volume, 30 GB, the SDK's ``volume_size``; callers pass the job's own), directory depth.
PACK_MAX_MEMBERS = 100_000
PACK_MAX_BYTES = 30 * 1024**3
PACK_MAX_DEPTH = 128
#: An archive's manifest is stored beside it under its URI plus this suffix.
MANIFEST_SUFFIX = ".manifest.json"
#: Members a manifest lists (the rest are counted in ``total``); what a page shows at most.
MANIFEST_MAX_MEMBERS = 10_000
_MANIFEST_MAX_BYTES = 16 * 1024**2


class StorageError(ValueError):
    """A URI this module cannot use, or a storage operation that failed. ``detail`` is the
    failure without the URI (for S3, the service's words: ``AccessDenied (403): Access Denied``)."""

    detail: str = ""


class NotFound(StorageError):
    """The object, file, bucket or archive member does not exist."""


class TooLarge(StorageError):
    """A read would return more than its ``max_bytes``."""


class PackLimitExceeded(TooLarge):
    """``pack_dir``: the directory holds more entries or bytes than the archive may.
    ``detail`` is the message without the directory's path."""


class ChannelError(StorageError):
    """A channel could not be staged. ``str(exc)`` is the text SageMaker puts after
    ``"ClientError: "`` in ``FailureReason``; the caller adds that prefix."""


@dataclass(frozen=True)
class Location:
    """A parsed URI. ``key`` is the S3 key (``""``: the whole bucket) or, for ``file``, the
    absolute path; ``bucket`` is ``""`` for ``file``."""

    scheme: Literal["s3", "file"]
    bucket: str
    key: str

    @property
    def path(self) -> Path:
        if self.scheme != "file":
            raise StorageError(f"{self.uri} is not a file:// URI")
        return Path(self.key)

    @property
    def uri(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.key}"
        return "file://" + quote(self.key)


@dataclass(frozen=True)
class ObjectInfo:
    """One object under a prefix: its URI, where ``stage_prefix`` puts it (``relative``), size."""

    uri: str
    relative: str
    size: int


@dataclass(frozen=True)
class StageResult:
    files: int
    bytes: int


@dataclass(frozen=True)
class MemberInfo:
    """A tar member: name without a leading ``./``, size (0 unless a regular file), is_dir,
    and its ``kind``: ``file``, ``dir``, ``symlink`` or ``other`` (hard links, devices)."""

    name: str
    size: int
    is_dir: bool
    kind: str = "file"


@dataclass(frozen=True)
class Manifest:
    """What a ``.tar.gz`` holds, known without reading it: the archive's ``size`` in bytes,
    its first ``MANIFEST_MAX_MEMBERS`` members in archive order, and ``total`` members in all."""

    size: int
    members: list[MemberInfo]
    total: int

    @property
    def truncated(self) -> bool:
        return self.total > len(self.members)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "size": self.size,
            "total": self.total,
            "members": [{"name": m.name, "size": m.size, "type": m.kind} for m in self.members],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """The manifest ``as_dict`` wrote; ``StorageError`` for anything else."""
        try:
            members = [
                MemberInfo(str(m["name"]), int(m["size"]), m["type"] == "dir", str(m["type"]))
                for m in data["members"]
            ]
            if data.get("format") != 1:
                raise ValueError(f"format {data.get('format')!r}")
            return cls(int(data["size"]), members, int(data["total"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise StorageError(f"not an anyjob archive manifest: {exc}") from None


def parse(uri: str, *, prefix: bool = False) -> Location:
    """Parse an ``s3://`` or ``file://`` URI. ``prefix=True`` allows ``s3://bucket`` (a whole
    bucket), which names no single object."""
    if not isinstance(uri, str):
        raise StorageError(f"a storage URI must be a string, not {type(uri).__name__}")
    shown = uri if len(uri) <= 100 else uri[:100] + "…"
    if len(uri) > MAX_URI_CHARS:
        raise StorageError(f"{shown!r} is longer than {MAX_URI_CHARS} characters")
    if "\x00" in uri:
        raise StorageError(f"{shown!r} contains a NUL character")
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not _BUCKET.fullmatch(bucket):
            raise StorageError(f"{shown!r} has no valid bucket name (like s3://bucket/key)")
        if not key and not prefix:
            raise StorageError(f"{shown!r} names a bucket but no object key")
        return Location("s3", bucket, key)
    if uri.startswith("file://"):
        rest = uri[len("file://") :]
        if not rest.startswith("/"):
            raise StorageError(
                f"{shown!r}: a file:// URI takes an absolute path and no host, like file:///data"
            )
        return Location("file", "", unquote(rest))
    raise StorageError(f"{shown!r} is not an s3:// or file:// URI")


# --- single objects ---------------------------------------------------------------------------


def upload_file(path: Path, uri: str, *, credentials: Credentials | None = None) -> None:
    """Store the local file ``path`` at ``uri`` (S3: managed transfer, multipart when large;
    file: written to a temporary name beside the target, then renamed; parents are created).
    ``credentials``: a role's for S3 (default: boto3's chain)."""
    loc = parse(uri)
    if loc.scheme == "s3":
        with _s3_errors(uri):
            _s3(credentials).upload_file(str(path), loc.bucket, loc.key)
    else:
        with open(path, "rb") as src:
            _write_atomically(loc.path, src)


def put_bytes(data: bytes, uri: str, *, sha256: str | None = None) -> None:
    """Store ``data`` at ``uri`` (file: atomically, as ``upload_file``). S3: a managed transfer,
    multipart above 8 MiB; ``sha256`` is kept as the object's ``x-amz-meta-sha256``."""
    loc = parse(uri)
    if loc.scheme == "s3":
        extra = {"Metadata": {"sha256": sha256}} if sha256 else None
        with _s3_errors(uri):
            _s3().upload_fileobj(io.BytesIO(data), loc.bucket, loc.key, ExtraArgs=extra)
    else:
        _write_atomically(loc.path, io.BytesIO(data))


def stored_sha256(uri: str) -> str | None:
    """The sha256 an object was stored with (``put_bytes(sha256=)``/``copy``): S3 metadata, or
    for a file its actual digest; None when there is no object (or no recorded digest)."""
    loc = parse(uri)
    if loc.scheme == "s3":
        try:
            with _s3_errors(uri):
                head = _s3().head_object(Bucket=loc.bucket, Key=loc.key)
        except NotFound:
            return None
        return (head.get("Metadata") or {}).get("sha256")
    if not loc.path.is_file():
        return None
    digest = hashlib.sha256()
    with _file_errors(uri), open(loc.path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def copy(src: str, dst: str, *, sha256: str | None = None) -> None:
    """Copy the object at ``src`` to ``dst`` (S3 to S3: server-side, multipart when large,
    with ``sha256`` as metadata; otherwise through this process)."""
    s, d = parse(src), parse(dst)
    if s.scheme == d.scheme == "s3":
        extra = {"Metadata": {"sha256": sha256}, "MetadataDirective": "REPLACE"} if sha256 else None
        with _s3_errors(f"{src} → {dst}"):
            _s3().copy({"Bucket": s.bucket, "Key": s.key}, d.bucket, d.key, ExtraArgs=extra)
        return
    if d.scheme == "s3":
        with open_read(src) as stream, _s3_errors(dst):
            extra = {"Metadata": {"sha256": sha256}} if sha256 else None
            _s3().upload_fileobj(stream, d.bucket, d.key, ExtraArgs=extra)
        return
    with open_read(src) as stream:
        _write_atomically(d.path, stream)


def download_url(uri: str, *, expires: int = 300, filename: str | None = None) -> str | None:
    """A presigned S3 GET URL valid for ``expires`` seconds (the browser downloads straight from
    S3, the bytes never pass through the web process); None for ``file://``."""
    loc = parse(uri)
    if loc.scheme != "s3" or s3_embedded():  # the embedded S3 streams through the web process
        return None
    params: dict[str, str] = {"Bucket": loc.bucket, "Key": loc.key}
    if filename:
        params["ResponseContentDisposition"] = f'attachment; filename="{quote(filename)}"'
    with _s3_errors(uri):
        return _s3().generate_presigned_url("get_object", Params=params, ExpiresIn=expires)


def exists(uri: str) -> bool:
    """Whether an object (or a regular file) exists at ``uri``."""
    loc = parse(uri)
    if loc.scheme == "file":
        return loc.path.is_file()
    try:
        with _s3_errors(uri):
            _s3().head_object(Bucket=loc.bucket, Key=loc.key)
    except NotFound:
        return False
    return True


def size(uri: str) -> int:
    """The size in bytes of the object at ``uri``; ``NotFound`` if there is none."""
    loc = parse(uri)
    if loc.scheme == "s3":
        with _s3_errors(uri):
            return int(_s3().head_object(Bucket=loc.bucket, Key=loc.key)["ContentLength"])
    with _file_errors(uri):
        st = os.stat(loc.path)
    if not stat.S_ISREG(st.st_mode):
        raise StorageError(f"{uri} is not a regular file")
    return st.st_size


def open_read(uri: str) -> IO[bytes]:
    """A binary stream over the object at ``uri`` (S3: streamed, never written to disk). Use it
    as a context manager; read errors surface as ``StorageError``."""
    stream, _ = _open(uri)
    return stream


def read_bytes(uri: str, max_bytes: int) -> bytes:
    """The whole object at ``uri``; ``TooLarge`` if it holds more than ``max_bytes``."""
    stream, length = _open(uri)
    with stream:
        if length is not None and length > max_bytes:
            raise TooLarge(f"{uri} is more than {max_bytes} bytes")
        data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TooLarge(f"{uri} is more than {max_bytes} bytes")
    return data


def download_file(uri: str, path: Path, *, credentials: Credentials | None = None) -> None:
    """Copy the object at ``uri`` to the local ``path`` (parents created; the file appears
    complete or not at all). ``credentials``: a role's for S3 (default: boto3's chain)."""
    loc = parse(uri)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if loc.scheme == "s3":
        with _s3_errors(uri):
            _s3(credentials).download_file(loc.bucket, loc.key, str(path))  # temp name + rename inside
    else:
        with _file_errors(uri), open(loc.path, "rb") as src:
            _write_atomically(path, src)


def delete(uri: str) -> None:
    """Delete the object at ``uri``; deleting what is not there is not an error."""
    loc = parse(uri)
    if loc.scheme == "s3":
        with contextlib.suppress(NotFound), _s3_errors(uri):
            _s3().delete_object(Bucket=loc.bucket, Key=loc.key)
    else:
        with _file_errors(uri):
            loc.path.unlink(missing_ok=True)


# --- prefixes and channels --------------------------------------------------------------------


def list_prefix(uri: str, max_keys: int | None = None) -> list[ObjectInfo]:
    """The objects under a prefix (S3: key order) or the regular files under a directory (file:
    sorted by name, directory by directory; a single file lists itself), at most ``max_keys`` of
    them. S3 "folder" markers (keys ending in "/") are left out. ``NotFound`` for a missing
    bucket or path."""
    loc = parse(uri, prefix=True)
    found: list[ObjectInfo] = []
    if loc.scheme == "s3":
        for key, length in _s3_objects(loc, uri):
            if max_keys is not None and len(found) >= max_keys:
                break
            if not key.endswith("/"):
                found.append(ObjectInfo(f"s3://{loc.bucket}/{key}", _s3_relative(loc.key, key), length))
        return found
    with _file_errors(uri):
        for path, relative, length in _local_files(loc.path):
            if max_keys is not None and len(found) >= max_keys:
                break
            found.append(ObjectInfo("file://" + quote(str(path)), relative, length))
    return found


def stage_prefix(
    uri: str,
    dest: Path,
    *,
    max_bytes: int | None = None,
    link: bool = True,
    role_arn: str | None = None,
    credentials: Credentials | None = None,
) -> StageResult:
    """Copy a channel's data into ``dest`` as SageMaker does for an S3Prefix channel in File mode
    (layout in the module docstring); return how many files and bytes landed.

    Every failure that is the data's fault is a ``ChannelError`` worded as SageMaker words it
    after ``"ClientError: "``: no objects under the prefix, a missing bucket or a refused listing
    (one message, as AWS gives — AWS checks this when CreateTrainingJob is called and answers
    ``ValidationException``; ``role_arn`` fills in the role it names), a refused download, a
    missing ``file://`` path, a key that cannot be a path under ``dest`` (``..``, ``.`` or empty
    segments, NUL: refused, never written outside ``dest``), more than ``max_bytes`` in all, or a
    full disk while writing. S3 "folder" markers (keys ending in "/") become empty directories.

    ``file://`` directories are copied with hard links where the filesystem allows (``link``),
    else byte for byte; symlinks to files are copied as files, symlinked directories and special
    files (FIFOs, sockets, devices) are skipped; an empty directory is an empty channel. A hard
    link shares the source's inode: a script that rewrites a channel file in place would change
    the source, so mount the channel read-only or pass ``link=False``.

    ``credentials``: the role's, for an ``s3://`` channel (default: boto3's chain).
    """
    loc = parse(uri, prefix=True)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    budget = _Budget(uri, max_bytes)
    try:
        if loc.scheme == "s3":
            files = _stage_s3(loc, uri, dest, budget, role_arn, _s3(credentials))
        else:
            files = _stage_file(loc, uri, dest, budget, link)
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise ChannelError("Data download failed:Insufficient disk space") from exc
        raise ChannelError(
            f"Data download failed:Failed to download data. {uri}: {exc.strerror or exc}"
        ) from exc
    return StageResult(files=files, bytes=budget.used)


class _Budget:
    """The bytes a channel may still take (``max_bytes``), charged as they are promised."""

    def __init__(self, uri: str, max_bytes: int | None) -> None:
        self.uri, self.max_bytes, self.used = uri, max_bytes, 0

    def charge(self, length: int) -> None:
        if self.max_bytes is not None and self.used + length > self.max_bytes:
            raise ChannelError(
                f"Data download failed:Insufficient disk space. The data under {self.uri} is more "
                f"than {self.max_bytes} bytes"
            )
        self.used += length


def _stage_s3(loc: Location, uri: str, dest: Path, budget: _Budget, role_arn: str | None, client: Any) -> int:
    files = seen = 0
    try:
        for key, length in _s3_objects(loc, uri, client):
            seen += 1
            object_uri = f"s3://{loc.bucket}/{key}"
            target = dest / _safe_relative(_s3_relative(loc.key, key), object_uri)
            if key.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
                continue
            budget.charge(length)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with _s3_errors(object_uri):
                    body = client.get_object(Bucket=loc.bucket, Key=key)["Body"]
                with _Body(body, object_uri) as stream:
                    _copy_new_file(stream, target, budget, prepaid=length)
            except ChannelError:
                raise
            except StorageError as exc:
                raise ChannelError(
                    f"Data download failed:Failed to download data. S3 key: {object_uri}: {exc.detail}"
                ) from exc
            files += 1
    except ChannelError:
        raise
    except StorageError as exc:  # the listing failed: AWS words a refusal as "no objects"
        if seen or not isinstance(exc.__cause__, ClientError):  # e.g. no endpoint, no credentials
            raise ChannelError(f"Data download failed:Failed to download data. {uri}: {exc.detail}") from exc
        raise ChannelError(_no_objects(uri, loc.bucket, client.meta.region_name, role_arn)) from exc
    if not seen:
        raise ChannelError(_no_objects(uri, loc.bucket, client.meta.region_name, role_arn))
    return files


def _no_objects(uri: str, bucket: str, region: str, role_arn: str | None) -> str:
    role = f'the role "{role_arn}"' if role_arn else "the role"
    return (
        f'No S3 objects found under S3 URL "{uri}" given in input data source. Please ensure that '
        f"the bucket exists in the selected region ({region}), that objects exist under that S3 "
        f'prefix, and that {role} has "s3:ListBucket" permissions on bucket "{bucket}".'
    )


def _stage_file(loc: Location, uri: str, dest: Path, budget: _Budget, link: bool) -> int:
    if not os.path.exists(loc.path):
        raise ChannelError(
            f'No files found at "{uri}" given in input data source. Please ensure that the path '
            "exists on this machine and that it is readable."
        )
    source = loc.path.resolve()
    if dest.resolve().is_relative_to(source) or source.is_relative_to(dest.resolve()):
        raise ChannelError(f"Data download failed:Failed to download data. {uri} overlaps {dest}")
    files = 0
    for src, relative, length in _local_files(loc.path, dirs=True):
        target = dest / relative
        if length < 0:  # a directory
            target.mkdir(parents=True, exist_ok=True)
            continue
        budget.charge(length)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not (link and _try_link(src, target)):
            with open(src, "rb") as stream:
                _copy_new_file(stream, target, budget, prepaid=length)
        files += 1
    return files


def _try_link(src: Path, target: Path) -> bool:
    try:
        os.link(src, target)
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES, errno.ENOTSUP):
            return False
        raise
    return True


def _copy_new_file(stream: IO[bytes], target: Path, budget: _Budget, *, prepaid: int) -> int:
    """Write ``stream`` to a new file ``target`` (never through a symlink, never over an existing
    file), charging the bytes beyond ``prepaid`` to ``budget``."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    written = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := stream.read(CHUNK):
            written += len(chunk)
            if written > prepaid:
                budget.charge(min(len(chunk), written - prepaid))
            out.write(chunk)
    return written


def _safe_relative(relative: str, object_uri: str) -> str:
    """``relative`` if it is a path strictly below the channel directory, else ``ChannelError``
    (in SageMaker's wording for keys it refuses, e.g. those containing ``//``)."""
    parts = relative.rstrip("/").split("/") if relative.rstrip("/") else []
    for part in parts:
        bad = {"": "//", ".": "/./", "..": "/../"}.get(part)
        if bad is None and "\x00" in part:
            bad = "\\0"
        if bad is not None:
            raise ChannelError(
                f"Data download failed:Failed to download data. S3 key: {object_uri} has an "
                f"illegal char sub-sequence '{bad}' in it"
            )
    return "/".join(parts)


def _local_files(root: Path, *, dirs: bool = False) -> Iterator[tuple[Path, str, int]]:
    """(path, relative, size) for the regular files under ``root`` (``_walk`` order), or ``root``
    itself if it is a file. With ``dirs``, directories come too, with size -1. Symlinks to files
    count as files; symlinked directories and special files are skipped."""
    st = os.stat(root)
    if stat.S_ISREG(st.st_mode):
        yield root, root.name, st.st_size
        return
    if not stat.S_ISDIR(st.st_mode):
        raise StorageError(f"{root} is neither a file nor a directory")
    for path, relative, lst in _walk(root):
        if stat.S_ISDIR(lst.st_mode):
            if dirs:
                yield path, relative, -1
            continue
        try:
            st = os.stat(path)  # follows a symlink to what it names
        except FileNotFoundError:  # a dangling symlink
            continue
        if stat.S_ISREG(st.st_mode):
            yield path, relative, st.st_size


def _walk(root: Path) -> Iterator[tuple[Path, str, os.stat_result]]:
    """(path, relative, lstat) for everything under ``root``, sorted by name, each directory
    just before its contents; never follows a symlink, never recurses (depth is the user's)."""

    def listing(directory: Path, prefix: str) -> Iterator[tuple[Path, str]]:
        with os.scandir(directory) as it:
            names = sorted(entry.name for entry in it)
        return iter([(directory / name, prefix + name) for name in names])

    stack = [listing(root, "")]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        path, relative = item
        st = os.lstat(path)
        yield path, relative, st
        if stat.S_ISDIR(st.st_mode):
            stack.append(listing(path, relative + "/"))


# --- archives ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """A member ``pack_dir`` left out: its name relative to the packed directory, and why
    (``"a symbolic link to outside the directory"``). ``str()`` gives ``name: reason`` with
    the name escaped for a log line."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{readback.shown(self.name)}: {self.reason}"


@dataclass
class _PackLimits:
    shown_as: str
    max_members: int
    max_bytes: int
    members: int = 0
    bytes: int = 0

    def fail(self, detail: str) -> PackLimitExceeded:
        exc = PackLimitExceeded(f"{self.shown_as} {detail}")
        exc.detail = detail
        return exc

    def count_member(self) -> None:
        if self.members >= self.max_members:
            raise self.too_many()
        self.members += 1

    def too_many(self) -> PackLimitExceeded:
        return self.fail(f"holds more than {self.max_members} files, directories and other entries")

    def charge(self, size: int) -> None:
        if self.bytes + size > self.max_bytes:
            raise self.fail(f"holds more than {_bytes_shown(self.max_bytes)} of files")
        self.bytes += size


def pack_dir(
    src: Path,
    dest: Path,
    *,
    inside: Path | None = None,
    max_members: int = PACK_MAX_MEMBERS,
    max_bytes: int = PACK_MAX_BYTES,
    skipped: list[Skipped] | None = None,
) -> Path:
    """Write ``src``'s contents to the gzipped tar ``dest`` as SageMaker packs ``model.tar.gz``:
    members named relative to ``src`` at the top level, in sorted order, owner 0, permission
    bits only; a missing ``src`` gives an empty archive. The same tree always gives the same
    bytes. The archive appears at ``dest`` complete or not at all. Returns ``dest``.

    ``src`` is read as hostile data (a job's ``model/`` or ``output/data/``; see
    ``jobs.backends.local.readback``): walked by directory descriptors with ``lstat``, never
    following a link. Left out, each with a ``Skipped`` appended to ``skipped``: symbolic
    links that do not resolve to something inside ``src`` (those that do are kept, as relative
    links), FIFOs, sockets and devices (never opened), regular files with more than one name
    (a hard link may be a file outside ``src``), anything on another filesystem than ``src``
    (a mount point), directories nested more than ``PACK_MAX_DEPTH`` deep, and anything that
    cannot be opened or changed while it was read. Each file is opened with ``O_NOFOLLOW`` and
    must be the very file looked at (device and inode). More than ``max_members`` entries
    (skipped ones count: they cost the walk too) or more than ``max_bytes`` of file data
    (apparent sizes: a sparse file counts at its full size) raise ``PackLimitExceeded``
    before that much is read.

    ``inside`` is the directory ``src`` must be in without going through a symbolic link
    (pass the job directory: the user's script could have replaced ``model/`` or ``output/``
    with a link to a directory of this machine, which would otherwise be packed and uploaded).
    Without it ``src`` is the caller's own path, opened as written."""
    src, dest = Path(src), Path(dest)
    root_fd = _open_pack_root(src, inside)
    try:
        if root_fd is not None and not stat.S_ISDIR(os.fstat(root_fd).st_mode):
            raise StorageError(f"{src} is not a directory")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if root_fd is not None and dest.resolve().is_relative_to(src.resolve()):
            raise StorageError(f"{dest} is inside the directory it packs ({src})")
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with (
                os.fdopen(fd, "wb") as raw,
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz,
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                if root_fd is not None:
                    _add_tree(
                        tar,
                        root_fd,
                        Path(os.path.realpath(src)),
                        _PackLimits(str(src), max_members, max_bytes),
                        skipped if skipped is not None else [],
                    )
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    finally:
        if root_fd is not None:
            os.close(root_fd)
    return dest


def _bytes_shown(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def _open_pack_root(src: Path, inside: Path | None) -> int | None:
    """A descriptor of the directory ``pack_dir`` packs, or None when it does not exist."""
    if inside is None:
        try:
            return os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            raise StorageError(f"{src} is not a directory") from None
    base = Path(os.path.abspath(inside))
    try:
        relative = Path(os.path.abspath(src)).relative_to(base)
    except ValueError:
        raise StorageError(f"{src} is not inside {inside}") from None
    if os.path.lexists(src) and not Path(os.path.realpath(src)).is_relative_to(os.path.realpath(base)):
        raise StorageError(f"{src} leads outside {inside} through a symlink")
    try:
        return readback.open_dir(base, relative)
    except readback.Refused as refused:
        if refused.missing:
            return None
        raise StorageError(f"{src} is not packed: {refused.reason} (links are not followed)") from None


def _add_tree(
    tar: tarfile.TarFile, root_fd: int, root: Path, limits: _PackLimits, skipped: list[Skipped]
) -> None:
    """Add everything below the directory ``root_fd`` (whose real path is ``root``, used only
    to judge where a symbolic link leads) to ``tar``; see ``pack_dir``."""
    device = os.fstat(root_fd).st_dev
    stack: list[tuple[Iterator[str], int, str]] = [(_names(root_fd, limits), root_fd, "")]
    try:
        while stack:
            names, dir_fd, prefix = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                if dir_fd != root_fd:
                    os.close(dir_fd)
                continue
            relative = prefix + name
            limits.count_member()
            try:
                st = readback.lstat_at(dir_fd, name)
            except FileNotFoundError:
                continue
            info = tarfile.TarInfo(relative)
            info.mtime, info.mode = int(st.st_mtime), st.st_mode & 0o777
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            why = _why_not_packed(st, device, depth=len(stack))
            if why:
                skipped.append(Skipped(relative, why))
            elif stat.S_ISDIR(st.st_mode):
                try:
                    child = readback.open_dir_at(dir_fd, name, shown_as=relative, device=device)
                except readback.Refused as refused:
                    if not refused.missing:
                        skipped.append(Skipped(relative, refused.what))
                    continue
                opened = os.fstat(child)
                if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                    os.close(child)
                    skipped.append(Skipped(relative, "changed while anyjob was reading it"))
                    continue
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                stack.append((_names(child, limits), child, relative + "/"))
            elif stat.S_ISREG(st.st_mode):
                try:
                    fd = readback.open_regular_at(dir_fd, name, shown_as=relative, device=device, expect=st)
                except readback.Refused as refused:
                    if not refused.missing:
                        skipped.append(Skipped(relative, refused.what))
                    continue
                with os.fdopen(fd, "rb") as f:
                    opened = os.fstat(fd)
                    if opened.st_nlink > 1:
                        skipped.append(Skipped(relative, _hard_link(opened.st_nlink)))
                        continue
                    limits.charge(opened.st_size)
                    info.size = opened.st_size
                    tar.addfile(info, f)
            else:  # a symbolic link
                target = _link_inside(dir_fd, name, root, root / relative)
                if target is None:
                    skipped.append(Skipped(relative, "a symbolic link to outside the directory"))
                    continue
                info.type = tarfile.SYMTYPE
                info.linkname = os.path.relpath(target, (root / relative).parent)
                tar.addfile(info)
    finally:
        for _, dir_fd, _ in stack:
            if dir_fd != root_fd:
                os.close(dir_fd)


def _why_not_packed(st: os.stat_result, device: int, *, depth: int) -> str:
    """Why the entry ``st`` (an ``lstat``) is left out of an archive, or "" to pack it."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return ""  # judged by where it leads
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        return readback.describe(mode)  # a FIFO, socket or device: never opened
    if st.st_dev != device:
        return "on another filesystem (a mount point)"
    if stat.S_ISDIR(mode) and depth > PACK_MAX_DEPTH:
        return f"a directory nested more than {PACK_MAX_DEPTH} levels deep"
    if stat.S_ISREG(mode) and st.st_nlink > 1:
        return _hard_link(st.st_nlink)
    return ""


def _hard_link(nlink: int) -> str:
    return readback.hard_link(nlink)


def _names(dir_fd: int, limits: _PackLimits) -> Iterator[str]:
    """The names in the directory ``dir_fd``, sorted; listing stops (``PackLimitExceeded``)
    as soon as there are more than the member bound leaves room for."""
    room = limits.max_members - limits.members
    names = []
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            names.append(entry.name)
            if len(names) > room:
                raise limits.too_many()
    return iter(sorted(names))


def _link_inside(dir_fd: int, name: str, root: Path, path: Path) -> Path | None:
    """Where the symbolic link ``name`` in ``dir_fd`` (at ``path``) leads, when that is
    something strictly inside ``root``; else None. A target that is plainly outside is
    judged from the link's text alone, without looking anything up on this machine."""
    try:
        text = os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return None
    lexical = Path(os.path.normpath(os.path.join(path.parent, text)))
    if lexical == root or not lexical.is_relative_to(root):
        return None
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # dangling, or a loop
        return None
    if target == root or not target.is_relative_to(root):
        return None
    return target


def list_tar_members(uri: str, *, max_members: int = 10_000) -> list[MemberInfo]:
    """The members of the ``.tar.gz`` at ``uri``, in archive order, at most ``max_members``
    (a list that long may be cut). Reads the archive from its start without storing it (a
    gzipped tar has no index), so the time grows with the archive's size: pages use the
    archive's manifest instead (``read_manifest``, ``jobs.artifacts``)."""
    return compute_manifest(uri, max_members=max_members, count_all=False).members


def compute_manifest(
    uri: str, *, max_members: int = MANIFEST_MAX_MEMBERS, count_all: bool = True
) -> Manifest:
    """The manifest of the ``.tar.gz`` at ``uri``, read from the archive itself (all of it when
    ``count_all``: the members past ``max_members`` are counted, not listed)."""
    members: list[MemberInfo] = []
    total = 0
    stream, length = _open(uri)
    with stream, _tar_errors(uri), tarfile.open(fileobj=stream, mode="r|gz") as tar:
        for info in tar:
            total += 1
            if len(members) < max_members:
                members.append(_member_info(info))
            elif not count_all:
                break
        size = length if length is not None else stream.tell()
    return Manifest(size, members, total)


def _member_info(info: tarfile.TarInfo) -> MemberInfo:
    kind = "file" if info.isreg() else "dir" if info.isdir() else "symlink" if info.issym() else "other"
    return MemberInfo(_member_name(info.name), info.size if info.isreg() else 0, info.isdir(), kind)


def write_manifest(archive: Path) -> Path:
    """Write the manifest of the local ``.tar.gz`` at ``archive`` beside it (``archive`` plus
    ``MANIFEST_SUFFIX``), read once, now, so no page has to read the archive; returns its path."""
    archive = Path(archive)
    manifest = compute_manifest(archive.resolve().as_uri())
    target = archive.with_name(archive.name + MANIFEST_SUFFIX)
    _write_atomically(target, io.BytesIO(json.dumps(manifest.as_dict()).encode()))
    return target


def upload_archive(archive: Path, uri: str, *, credentials: Credentials | None = None) -> None:
    """``upload_file`` for a packed ``.tar.gz``, with its manifest (``write_manifest``) stored
    beside it at ``uri`` plus ``MANIFEST_SUFFIX``, after the archive."""
    manifest = write_manifest(archive)
    upload_file(archive, uri, credentials=credentials)
    upload_file(manifest, uri + MANIFEST_SUFFIX, credentials=credentials)


def read_manifest(uri: str) -> Manifest | None:
    """The manifest stored beside the archive at ``uri``, or None when there is none (an
    older job, an AWS job) or it does not describe an archive of the archive's ``size`` —
    the caller checks that against ``head(uri)``."""
    try:
        data = read_bytes(uri + MANIFEST_SUFFIX, _MANIFEST_MAX_BYTES)
        return Manifest.from_dict(json.loads(data))
    except (StorageError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def head(uri: str) -> tuple[int, str]:
    """The size of the object at ``uri`` and a tag that changes whenever its content does (S3:
    the ETag; file: size, modification time and inode), without reading it."""
    loc = parse(uri)
    if loc.scheme == "s3":
        with _s3_errors(uri):
            answer = _s3().head_object(Bucket=loc.bucket, Key=loc.key)
        return int(answer["ContentLength"]), str(answer.get("ETag", "")).strip('"')
    with _file_errors(uri):
        st = os.stat(loc.path)
    if not stat.S_ISREG(st.st_mode):
        raise StorageError(f"{uri} is not a regular file")
    return st.st_size, f"{st.st_size}-{st.st_mtime_ns}-{st.st_ino}"


def read_tar_member(uri: str, name: str, max_bytes: int) -> bytes:
    """The content of the regular file ``name`` (``./name`` matches too) inside the ``.tar.gz``
    at ``uri``; ``NotFound`` if there is none, ``TooLarge`` over ``max_bytes``. The first member
    of that name wins."""
    with open_tar_member(uri, name, max_bytes) as member:
        return member.read()


def open_tar_member(uri: str, name: str, max_bytes: int) -> IO[bytes]:
    """A stream over the regular file ``name`` inside the ``.tar.gz`` at ``uri`` (as
    ``read_tar_member``, which raises the same errors before anything is returned): the archive
    is read from its start up to that member, then the member itself piece by piece as the
    caller reads, never held whole. ``.size`` is the member's size. Close it (a context manager)."""
    wanted = _member_name(name)
    stack = contextlib.ExitStack()
    try:
        stream, _ = _open(uri)
        stack.enter_context(stream)
        with _tar_errors(uri):
            tar = stack.enter_context(tarfile.open(fileobj=stream, mode="r|gz"))  # noqa: SIM115
            for info in tar:
                if _member_name(info.name) != wanted:
                    continue
                if not info.isreg():
                    raise StorageError(f"{name!r} in {uri} is not a regular file")
                if info.size > max_bytes:
                    raise TooLarge(f"{name!r} in {uri} is more than {max_bytes} bytes")
                member = tar.extractfile(info)
                assert member is not None  # a regular file always has a stream
                reader = io.BufferedReader(_Member(member, stack, uri), CHUNK)
                reader.size = info.size  # type: ignore[attr-defined]
                return reader
        raise NotFound(f"{uri} has no member {name!r}")
    except BaseException:
        stack.close()
        raise


class _Member(io.RawIOBase):
    """One member's bytes, read straight from the archive's stream; closing closes the archive."""

    def __init__(self, member: IO[bytes], stack: contextlib.ExitStack, uri: str) -> None:
        self._member, self._stack, self._uri = member, stack, uri

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        with _tar_errors(self._uri):
            data = self._member.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._stack.close()
        super().close()


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


@contextlib.contextmanager
def _tar_errors(uri: str) -> Iterator[None]:
    try:
        yield
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise StorageError(f"{uri} is not a readable .tar.gz archive: {exc}") from exc


# --- plumbing ---------------------------------------------------------------------------------


def s3_embedded() -> bool:
    """Whether ``s3://`` URIs are anyjob's embedded S3 (``jobs.awsapi.s3_store``, the store
    ``/aws`` serves) rather than an S3 reached through boto3: ``ANYJOB_S3``, by default
    embedded unless an S3 endpoint, the sagemaker backend or mapped roles are configured."""
    from jobs.awsapi import s3_store

    return s3_store.mode() == "embedded"


def _s3(credentials: Credentials | None = None) -> Any:
    """The S3 client: boto3's (``jobs.aws``), or with the embedded S3 an in-process one with
    the same methods and errors (``jobs.awsapi.s3_client``; no credentials are needed)."""
    if s3_embedded():
        from jobs.awsapi import s3_client

        return s3_client.client()
    return aws.client("s3", credentials=credentials)


def _s3_relative(prefix: str, key: str) -> str:
    """Where an object under ``prefix`` lands in its channel (module docstring): below the prefix
    when the key continues it past a "/" (``data/train`` + ``data/train/a/x.csv`` → ``a/x.csv``,
    what ``upload_data``'s slash-less URIs rely on), else relative to the prefix's last "/"
    (a partial match keeps its base name; a prefix naming one object gives that object's)."""
    if not prefix or prefix.endswith("/"):
        return key[len(prefix) :]
    if key[len(prefix) : len(prefix) + 1] == "/":
        return key[len(prefix) + 1 :]  # one "/" only: "data//x" keeps its empty segment (refused)
    return key[prefix.rfind("/") + 1 :]


def _s3_objects(loc: Location, uri: str, client: Any = None) -> Iterator[tuple[str, int]]:
    """(key, size) of every object under ``loc``'s prefix, in key order."""
    paginator = (client or _s3()).get_paginator("list_objects_v2")
    with _s3_errors(uri):
        for page in paginator.paginate(Bucket=loc.bucket, Prefix=loc.key):
            for item in page.get("Contents", ()):
                yield item["Key"], int(item["Size"])


@contextlib.contextmanager
def _s3_errors(uri: str) -> Iterator[None]:
    """Turn boto3's exceptions into ``NotFound``/``StorageError`` naming ``uri``; the exception's
    ``detail`` attribute holds the service's own words (``AccessDenied (403): Access Denied``)."""
    try:
        yield
    except aws.ERRORS as exc:
        client_error = exc if isinstance(exc, ClientError) else exc.__context__
        if isinstance(client_error, ClientError):
            error = client_error.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = client_error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
            detail = f"{code} ({status}): {error.get('Message') or code}"
            kind = NotFound if code in _NOT_FOUND_CODES else StorageError
        else:
            detail, kind = str(exc), StorageError
        failure = kind(f"{uri}: {detail}")
        failure.detail = detail
        raise failure from exc


@contextlib.contextmanager
def _file_errors(uri: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError as exc:
        failure = NotFound(f"{uri}: no such file")
        failure.detail = "no such file"
        raise failure from exc
    except (IsADirectoryError, NotADirectoryError) as exc:
        raise StorageError(f"{uri}: {exc.strerror}") from exc


class _Body(io.RawIOBase):
    """An S3 response body as a raw stream whose read errors are ``StorageError``\\ s."""

    def __init__(self, body, uri: str) -> None:
        self._body, self._uri = body, uri

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        with _s3_errors(self._uri):
            data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()
        super().close()


def _open(uri: str) -> tuple[IO[bytes], int | None]:
    """A buffered stream over ``uri`` and its length when known up front."""
    loc = parse(uri)
    if loc.scheme == "s3":
        with _s3_errors(uri):
            response = _s3().get_object(Bucket=loc.bucket, Key=loc.key)
        return io.BufferedReader(_Body(response["Body"], uri), CHUNK), response.get("ContentLength")
    with _file_errors(uri):
        f = open(loc.path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    return f, os.fstat(f.fileno()).st_size


def _write_atomically(target: Path, source: IO[bytes]) -> None:
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
