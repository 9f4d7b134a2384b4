"""Artifact and data storage behind ``s3://`` and ``file://`` URIs.

The local emulator stages channels, stores ``model.tar.gz``/``output.tar.gz`` and reads them back
through this module; the dashboard stores code bundles and shows artifacts through it. No Django
here. S3 is reached only through ``jobs.aws`` (so ``AWS_ENDPOINT_URL_S3`` and friends apply).

URIs
    ``s3://bucket/key`` — the key is taken literally (``?`` and ``#`` are key characters, as in
    SageMaker's ``S3Uri``). ``file:///absolute/path`` — no host, percent-decoded like
    ``Path.as_uri()`` encodes. At most 1024 characters, SageMaker's limit for ``S3Uri``.

Errors
    ``StorageError`` (a ``ValueError``) for a bad URI or a failed operation, with the subclasses
    ``NotFound`` (no such object, file, bucket or archive member), ``TooLarge`` (a read over its
    limit) and ``ChannelError`` (``stage_prefix``: a message in SageMaker's words). Local
    ``OSError``\\ s from the caller's own paths (a missing file to upload, an unwritable
    destination) are not wrapped, except in ``stage_prefix``.

Channel layout (``stage_prefix``)
    An S3Prefix channel holds every object whose key starts with the prefix — a plain string
    prefix, so ``s3://b/data/train`` also matches ``data/training/x``. Each object lands under the
    channel directory at its key *relative to the prefix's last "/"*: with prefix ``data/train/``,
    ``data/train/a/x.csv`` → ``a/x.csv``; with prefix ``data/train``, ``data/train/a/x.csv`` →
    ``train/a/x.csv`` and ``data/train-2.csv`` → ``train-2.csv``; a prefix that is one object's
    full key gives that object's base name. That is what SageMaker itself does: files partially
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
from typing import IO, Literal
from urllib.parse import quote, unquote

from botocore.exceptions import ClientError

from jobs import aws

MAX_URI_CHARS = 1024  # SageMaker's S3Uri limit; S3's key limit is 1024 bytes
CHUNK = 1024 * 1024
_BUCKET = re.compile(r"[a-zA-Z0-9._-]{1,255}")  # what botocore itself accepts before sending
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class StorageError(ValueError):
    """A URI this module cannot use, or a storage operation that failed. ``detail`` is the
    failure without the URI (for S3, the service's words: ``AccessDenied (403): Access Denied``)."""

    detail: str = ""


class NotFound(StorageError):
    """The object, file, bucket or archive member does not exist."""


class TooLarge(StorageError):
    """A read would return more than its ``max_bytes``."""


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
    """A tar member: name without a leading ``./``, size (0 unless a regular file), is_dir."""

    name: str
    size: int
    is_dir: bool


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


def upload_file(path: Path, uri: str) -> None:
    """Store the local file ``path`` at ``uri`` (S3: managed transfer, multipart when large;
    file: written to a temporary name beside the target, then renamed; parents are created)."""
    loc = parse(uri)
    if loc.scheme == "s3":
        with _s3_errors(uri):
            _s3().upload_file(str(path), loc.bucket, loc.key)
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
    if loc.scheme != "s3":
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


def download_file(uri: str, path: Path) -> None:
    """Copy the object at ``uri`` to the local ``path`` (parents created; the file appears
    complete or not at all)."""
    loc = parse(uri)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if loc.scheme == "s3":
        with _s3_errors(uri):
            _s3().download_file(loc.bucket, loc.key, str(path))  # temp name + rename inside
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
        base = _s3_base(loc.key)
        for key, length in _s3_objects(loc, uri):
            if max_keys is not None and len(found) >= max_keys:
                break
            if not key.endswith("/"):
                found.append(ObjectInfo(f"s3://{loc.bucket}/{key}", key[len(base) :], length))
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
    """
    loc = parse(uri, prefix=True)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    budget = _Budget(uri, max_bytes)
    try:
        if loc.scheme == "s3":
            files = _stage_s3(loc, uri, dest, budget, role_arn)
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


def _stage_s3(loc: Location, uri: str, dest: Path, budget: _Budget, role_arn: str | None) -> int:
    client = _s3()
    base = _s3_base(loc.key)
    files = seen = 0
    try:
        for key, length in _s3_objects(loc, uri):
            seen += 1
            object_uri = f"s3://{loc.bucket}/{key}"
            target = dest / _safe_relative(key[len(base) :], object_uri)
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


def pack_dir(src: Path, dest: Path, *, inside: Path | None = None) -> Path:
    """Write ``src``'s contents to the gzipped tar ``dest`` as SageMaker packs ``model.tar.gz``:
    members named relative to ``src`` at the top level, in sorted order, owner 0, permission
    bits only; a missing ``src`` gives an empty archive. Symlinks are kept only when they resolve
    inside ``src`` (rewritten as relative links); FIFOs, sockets and devices are skipped. The
    archive appears at ``dest`` complete or not at all. Returns ``dest``.

    ``inside`` is the directory ``src`` must still be in once symlinks are resolved. Pass the job
    directory: the user's script could have replaced ``model/`` or ``output/`` with a link to a
    directory of this machine, which would otherwise be packed and uploaded."""
    src, dest = Path(src), Path(dest)
    root = src.resolve() if src.exists() else None
    if root is not None and inside is not None and not root.is_relative_to(Path(inside).resolve()):
        raise StorageError(f"{src} leads outside {inside} through a symlink")
    if root is not None and not root.is_dir():
        raise StorageError(f"{src} is not a directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if root is not None and dest.resolve().is_relative_to(root):
        raise StorageError(f"{dest} is inside the directory it packs ({src})")
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            if root is not None:
                _add_tree(tar, root)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return dest


def _add_tree(tar: tarfile.TarFile, root: Path) -> None:
    for path, relative, st in _walk(root):
        info = tarfile.TarInfo(relative)
        info.mtime, info.mode = int(st.st_mtime), st.st_mode & 0o777
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        elif stat.S_ISREG(st.st_mode):
            with contextlib.suppress(FileNotFoundError), _open_nofollow(path) as f:
                info.size = os.fstat(f.fileno()).st_size
                tar.addfile(info, f)
        elif stat.S_ISLNK(st.st_mode):
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError):  # dangling, or a loop
                continue
            if target != root and target.is_relative_to(root):
                info.type = tarfile.SYMTYPE
                info.linkname = os.path.relpath(target, path.parent)
                tar.addfile(info)


@contextlib.contextmanager
def _open_nofollow(path: Path) -> Iterator[IO[bytes]]:
    """Open a regular file for reading, or raise FileNotFoundError if it has been swapped for
    something else (a symlink, a FIFO) since it was looked at."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileNotFoundError(path) from exc
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileNotFoundError(path)
        yield f


def list_tar_members(uri: str, *, max_members: int = 10_000) -> list[MemberInfo]:
    """The members of the ``.tar.gz`` at ``uri``, in archive order, at most ``max_members``
    (a list that long may be cut). Reads the archive from its start without storing it (a
    gzipped tar has no index), so the time grows with the archive's size."""
    members: list[MemberInfo] = []
    with _open_tar(uri) as tar:
        for info in tar:
            size = info.size if info.isreg() else 0
            members.append(MemberInfo(_member_name(info.name), size, info.isdir()))
            if len(members) >= max_members:
                break
    return members


def read_tar_member(uri: str, name: str, max_bytes: int) -> bytes:
    """The content of the regular file ``name`` (``./name`` matches too) inside the ``.tar.gz``
    at ``uri``; ``NotFound`` if there is none, ``TooLarge`` over ``max_bytes``. The first member
    of that name wins."""
    wanted = _member_name(name)
    with _open_tar(uri) as tar:
        for info in tar:
            if _member_name(info.name) != wanted:
                continue
            if not info.isreg():
                raise StorageError(f"{name!r} in {uri} is not a regular file")
            if info.size > max_bytes:
                raise TooLarge(f"{name!r} in {uri} is more than {max_bytes} bytes")
            member = tar.extractfile(info)
            assert member is not None  # a regular file always has a stream
            return member.read()
    raise NotFound(f"{uri} has no member {name!r}")


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


@contextlib.contextmanager
def _open_tar(uri: str) -> Iterator[tarfile.TarFile]:
    stream, _ = _open(uri)
    with stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|gz") as tar:
                yield tar
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise StorageError(f"{uri} is not a readable .tar.gz archive: {exc}") from exc


# --- plumbing ---------------------------------------------------------------------------------


def _s3():
    return aws.client("s3")


def _s3_base(key: str) -> str:
    """The part of a prefix up to and including its last "/": what object keys are relative to."""
    return key[: key.rfind("/") + 1]


def _s3_objects(loc: Location, uri: str) -> Iterator[tuple[str, int]]:
    """(key, size) of every object under ``loc``'s prefix, in key order."""
    paginator = _s3().get_paginator("list_objects_v2")
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
