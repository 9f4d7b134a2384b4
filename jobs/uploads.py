"""Uploaded code: a ``.py``, several files, or a ``.zip``/``.tar.gz`` of a source folder.

Everything here works on bytes in memory and refuses hostile input with a message a person
understands (``UploadError``): archives are read member by member against size and count
budgets, links, devices and names that would leave the code folder are refused, and nothing is
written to disk. ``bundles.build`` then makes the normalised ``sourcedir.tar.gz``.
"""

from __future__ import annotations

import io
import posixpath
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from anyjob_container.environment import validate_entry_point
from anyjob_container.errors import InvalidEntryPointError
from jobs.bundles import BundleError, clean_name

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
RUNNABLE_SUFFIXES = (".py", ".sh")
#: Files an archiver or an editor leaves behind; dropped without a word.
_JUNK_PARTS = {"__MACOSX", "__pycache__", ".git", ".DS_Store", ".ipynb_checkpoints"}
_JUNK_SUFFIXES = (".pyc", ".pyo")


class UploadError(ValueError):
    """The upload cannot be used as code; the message says which file and why."""


class Upload(Protocol):
    """What Django's ``UploadedFile`` offers that we use."""

    name: str | None
    size: int | None

    def read(self, size: int = -1) -> bytes: ...


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int  # what the browser sends, compressed, all files together
    max_code_bytes: int  # the code once unpacked
    max_files: int


def _human(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _junk(name: str) -> bool:
    parts = name.split("/")
    return any(part in _JUNK_PARTS for part in parts) or name.endswith(_JUNK_SUFFIXES)


def read_uploads(uploads: Iterable[Upload], limits: Limits) -> dict[str, bytes]:
    """The code as ``{relative path: bytes}`` from the uploaded files.

    One archive is unpacked; plain files keep their names (browsers send only the base name).
    """
    uploads = list(uploads)
    if not uploads:
        raise UploadError("Choose the code to upload: a .py file, several files, or a .zip/.tar.gz.")
    total = sum(u.size or 0 for u in uploads)
    if total > limits.max_upload_bytes:
        raise UploadError(
            f"The upload is {_human(total)}; the limit is {_human(limits.max_upload_bytes)}. "
            "Keep data out of the code: put it in S3 and add it as a channel."
        )
    names = [posixpath.basename((u.name or "").replace("\\", "/")) for u in uploads]
    archives = [n for n in names if is_archive(n)]
    if archives and len(uploads) > 1:
        raise UploadError(f"Upload the archive {archives[0]!r} on its own, not together with other files.")
    if len(uploads) > limits.max_files:
        raise UploadError(f"{len(uploads)} files were uploaded; the limit is {limits.max_files}.")
    if archives:
        return read_archive(names[0], uploads[0].read(limits.max_upload_bytes + 1), limits)
    files: dict[str, bytes] = {}
    for name, upload in zip(names, uploads, strict=True):
        name = _checked_name(name, name)
        if name in files:
            raise UploadError(f"Two uploaded files are both called {name!r}.")
        files[name] = upload.read(limits.max_upload_bytes + 1)
    if not any(files.values()):
        raise UploadError(f"{', '.join(repr(n) for n in files)} {'is' if len(files) == 1 else 'are'} empty.")
    return files


def _checked_name(name: str, shown: str) -> str:
    try:
        return clean_name(name)
    except BundleError as exc:
        raise UploadError(f"{shown}: {exc}") from None


def read_archive(name: str, data: bytes, limits: Limits) -> dict[str, bytes]:
    """The files of a ``.zip``/``.tar.gz``/``.tar`` archive, checked before anything is kept."""
    if not data:
        raise UploadError(f"{name!r} is empty.")
    reader = _read_zip if name.lower().endswith(".zip") else _read_tar
    files = reader(name, data, limits)
    files = {path: body for path, body in files.items() if not _junk(path)}
    if not files:
        raise UploadError(f"{name!r} contains no files.")
    return _strip_common_folder(files)


class _Budget:
    def __init__(self, archive: str, limits: Limits) -> None:
        self.archive, self.limits = archive, limits
        self.bytes = self.files = 0

    def charge(self, member: str, size: int) -> None:
        self.files += 1
        self.bytes += size
        if self.files > self.limits.max_files:
            raise UploadError(f"{self.archive!r} has more than {self.limits.max_files} files.")
        if self.bytes > self.limits.max_code_bytes:
            raise UploadError(
                f"{self.archive!r} unpacks to more than {_human(self.limits.max_code_bytes)} "
                f"(at {member!r}). Keep data out of the code: put it in S3 and add it as a channel."
            )


def _read_zip(name: str, data: bytes, limits: Limits) -> dict[str, bytes]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError):
        raise UploadError(f"{name!r} is not a valid .zip archive.") from None
    budget = _Budget(name, limits)
    files: dict[str, bytes] = {}
    with archive:
        for info in archive.infolist():
            member = info.filename
            mode = info.external_attr >> 16
            if info.is_dir():
                continue
            if stat.S_ISLNK(mode):
                raise UploadError(f"{name!r}: {member!r} is a symbolic link; links are not allowed.")
            if stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # zips from Windows carry no type
                raise UploadError(f"{name!r}: {member!r} is not a regular file.")
            if info.flag_bits & 0x1:
                raise UploadError(f"{name!r}: {member!r} is encrypted; upload an archive without a password.")
            clean = _checked_name(member, f"{name!r}")
            budget.charge(member, info.file_size)
            try:
                with archive.open(info) as stream:
                    body = stream.read(info.file_size + 1)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
                raise UploadError(f"{name!r}: {member!r} cannot be read ({exc}).") from None
            if len(body) != info.file_size:
                raise UploadError(f"{name!r}: {member!r} is not the size its header says.")
            _add(files, clean, body, name)
    return files


def _read_tar(name: str, data: bytes, limits: Limits) -> dict[str, bytes]:
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115 - closed below
    except (tarfile.TarError, OSError, EOFError):
        raise UploadError(f"{name!r} is not a valid .tar.gz or .tar archive.") from None
    budget = _Budget(name, limits)
    files: dict[str, bytes] = {}
    try:
        with archive:
            for info in archive:
                member = info.name
                if info.isdir():
                    continue
                if info.issym() or info.islnk():
                    raise UploadError(f"{name!r}: {member!r} is a link; links are not allowed.")
                if not info.isreg():
                    raise UploadError(f"{name!r}: {member!r} is not a regular file.")
                clean = _checked_name(member.removeprefix("./"), f"{name!r}")
                budget.charge(member, info.size)
                stream = archive.extractfile(info)
                body = stream.read() if stream is not None else b""
                _add(files, clean, body, name)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise UploadError(f"{name!r} is damaged and cannot be read ({exc}).") from None
    return files


def _add(files: dict[str, bytes], clean: str, body: bytes, archive: str) -> None:
    if clean in files:
        raise UploadError(f"{archive!r} contains {clean!r} twice.")
    files[clean] = body


def _strip_common_folder(files: dict[str, bytes]) -> dict[str, bytes]:
    """``project/train.py, project/lib.py`` → ``train.py, lib.py`` (an archive of a folder)."""
    while True:
        tops = {path.split("/", 1)[0] for path in files}
        if len(tops) != 1 or not all("/" in path for path in files):
            return files
        files = {path.split("/", 1)[1]: body for path, body in files.items()}


def entry_points(names: Iterable[str]) -> list[str]:
    """The files that can be the entry point: ``.py`` (not ``setup.py``) and ``.sh``, top-level
    files first. A name the container would refuse is not offered."""
    found = []
    for name in names:
        if not name.endswith(RUNNABLE_SUFFIXES) or posixpath.basename(name) == "setup.py":
            continue
        if posixpath.basename(name) == "__init__.py":
            continue
        try:
            validate_entry_point(name)
        except InvalidEntryPointError:
            continue
        found.append(name)
    return sorted(found, key=lambda n: (n.count("/"), n))


def default_entry_point(candidates: list[str]) -> str:
    """The one to pre-select: the only candidate, else ``train.py``, else none ("")."""
    if len(candidates) == 1:
        return candidates[0]
    for usual in ("train.py", "main.py", "train.sh"):
        if usual in candidates:
            return usual
    return ""


def text_preview(files: Mapping[str, bytes], name: str, max_bytes: int = 200_000) -> str | None:
    """A file's text for display, or None when it is binary."""
    body = files[name][:max_bytes]
    if b"\x00" in body:
        return None
    return body.decode("utf-8", errors="replace")
