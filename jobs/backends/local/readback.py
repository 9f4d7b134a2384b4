"""Reading back what a job left in its directory, as hostile data.

Everything under a job's directory (``/opt/ml`` inside the sandbox) was last touched by the
user's code, and anyjob reads it outside the sandbox, with more rights than the job had. So a
path there is opened the way a hostile tree must be:

* below a directory descriptor, one component at a time, each with ``O_NOFOLLOW``: a symbolic
  link anywhere on the way (``output`` → ``/``, ``output/failure`` → ``var/secret_key``) is
  refused, never followed — it would be resolved in anyjob's view of the machine, not the
  job's, and could name any file anyjob may read;
* parents with ``O_DIRECTORY``, so nothing but a directory is ever opened on the way;
* the leaf only when ``lstat`` says it is a regular file, then opened with
  ``O_NOFOLLOW | O_NONBLOCK | O_NOCTTY`` and checked again with ``fstat`` (same device and
  inode as looked at, still regular): a FIFO, socket or device is never opened by the check
  itself, and if the name were swapped between the two calls, ``O_NONBLOCK`` keeps the open of
  a FIFO from waiting for a writer and ``O_NOCTTY`` keeps a terminal from becoming ours;
* everything on the same filesystem as the root (``st_dev``): a mount point inside the job's
  directory is not the job's;
* at most ``max_bytes`` read.

Why this is also a bound in *time*: the only things that block a reader for ever are FIFOs,
sockets, terminals and other devices (or a network or FUSE filesystem that stops answering),
and none of them is ever read. A regular file on the local disk answers every ``read`` at once
— at worst at the disk's speed — and the number of bytes read is bounded, so the whole read is
bounded. Mounts the job makes inside its sandbox live in the sandbox's own mount namespace and
are not seen here (anyjob sees the plain directory under them); the ``st_dev`` check refuses any
mount that is visible here.

No Django here: the executor, the endpoint host and ``jobs.storage`` use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

#: Flags of every directory opened on the way down.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
#: Flags of the leaf: a regular file (checked before and after the open).
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
CHUNK = 1024 * 1024


class Refused(Exception):
    """A path (or a component of it) that is not what may be read. ``name`` is the path as
    given (relative to the root), ``what`` what is wrong with it ("is a FIFO", "does not
    exist", "is a symbolic link", ...), ``reason`` both, for the job's log (``output/failure is
    a FIFO``); ``missing`` is True when the name does not exist (usually not worth a note)."""

    def __init__(self, name: str, what: str, *, missing: bool = False) -> None:
        self.name, self.what, self.missing = name, what, missing
        self.reason = f"{shown(name)} {what}"
        super().__init__(self.reason)


@dataclass(frozen=True)
class Result:
    """What ``read_file`` read: ``data`` (None when refused: ``reason`` says why, ``missing``
    when there was nothing there), and ``truncated`` when the file held more than was read."""

    data: bytes | None
    reason: str = ""
    missing: bool = False
    truncated: bool = False


_KINDS = (
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def describe(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words: "a symbolic link", "a FIFO", ..."""
    return next((words for test, words in _KINDS if test(mode)), "not a regular file")


def shown(name: str, limit: int = 300) -> str:
    """``name`` safe to put in a log line or a message: control characters, non-UTF-8 bytes
    (surrogate-escaped by ``os``) and other unprintable characters as escapes, so a file named
    ``"x\\nanyjob: ..."`` cannot forge a line; cut in the middle past ``limit`` characters."""
    out = []
    for ch in name:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
    text = "".join(out)
    if len(text) > limit:
        keep = (limit - 1) // 2
        text = text[:keep] + "…" + text[-keep:]
    return text


def parts_of(relative: str | os.PathLike[str]) -> list[str]:
    """The components of a relative path, refusing what could leave the root (``..``, an
    absolute path) rather than normalising it."""
    text = os.fspath(relative)
    if text.startswith("/"):
        raise ValueError(f"{text!r} is not a relative path")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts or "\x00" in text:
        raise ValueError(f"{text!r} leaves its root")
    return parts


@contextlib.contextmanager
def opened_root(root: int | str | os.PathLike[str]) -> Iterator[int]:
    """A directory descriptor for ``root``: an fd given by the caller is used as it is (and not
    closed); a path is anyjob's own (trusted, so followed as the caller wrote it) and opened."""
    if isinstance(root, int):
        yield root
        return
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def lstat_at(dir_fd: int, name: str) -> os.stat_result:
    """``lstat`` of ``name`` in ``dir_fd`` (never follows a link)."""
    return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)


def open_dir_at(dir_fd: int, name: str, *, shown_as: str, device: int | None = None) -> int:
    """Open the directory ``name`` in ``dir_fd`` without following a link; ``Refused`` when it
    is anything else (or on another filesystem than ``device``). The caller closes the fd."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise _refusal(dir_fd, name, shown_as, exc, wanted="a directory") from None
    try:
        st = os.fstat(fd)
        if device is not None and st.st_dev != device:
            raise Refused(shown_as, "is on another filesystem (a mount point)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular_at(
    dir_fd: int,
    name: str,
    *,
    shown_as: str,
    device: int | None = None,
    expect: os.stat_result | None = None,
) -> int:
    """Open the regular file ``name`` in ``dir_fd`` for reading; ``Refused`` when it is a
    link, a FIFO, a socket, a device, a directory, missing, or on another filesystem than
    ``device``. ``expect`` is an ``lstat`` the caller already made (else it is made here): the
    file opened must be that same file (device and inode), so a name swapped in between is
    refused too. The caller closes the fd."""
    if expect is None:
        try:
            expect = lstat_at(dir_fd, name)
        except OSError as exc:
            raise _refusal(dir_fd, name, shown_as, exc, wanted="a regular file") from None
    if not stat.S_ISREG(expect.st_mode):
        raise Refused(shown_as, f"is {describe(expect.st_mode)}")
    if device is not None and expect.st_dev != device:
        raise Refused(shown_as, "is on another filesystem (a mount point)")
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise _refusal(dir_fd, name, shown_as, exc, wanted="a regular file") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):
            raise Refused(shown_as, "changed while anyjob was reading it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dir(root: int | str | os.PathLike[str], relative: str | os.PathLike[str]) -> int:
    """Open the directory ``relative`` below ``root`` component by component (see the module
    docstring); ``Refused`` if any component is not a plain directory on root's filesystem.
    The caller closes the returned fd."""
    parts = parts_of(relative)
    with opened_root(root) as root_fd:
        device = os.fstat(root_fd).st_dev
        fd = os.dup(root_fd)
        try:
            for i, part in enumerate(parts):
                child = open_dir_at(fd, part, shown_as="/".join(parts[: i + 1]), device=device)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd


def open_file(
    root: int | str | os.PathLike[str], relative: str | os.PathLike[str], *, hard_links: bool = False
) -> int:
    """Open the regular file ``relative`` below ``root`` (see the module docstring); ``Refused``
    otherwise — also, unless ``hard_links``, when the file has more than one name: a hard link
    may be a file outside the root (made where the job could reach both). The caller closes
    the returned fd."""
    parts = parts_of(relative)
    if not parts:
        raise ValueError("a file's relative path is empty")
    shown_as = "/".join(parts)
    with opened_root(root) as root_fd:
        device = os.fstat(root_fd).st_dev
        parent = open_dir(root_fd, "/".join(parts[:-1]))
        try:
            fd = open_regular_at(parent, parts[-1], shown_as=shown_as, device=device)
        finally:
            os.close(parent)
        links = os.fstat(fd).st_nlink
        if links > 1 and not hard_links:
            os.close(fd)
            raise Refused(shown_as, f"is {hard_link(links)}")
        return fd


def hard_link(names: int) -> str:
    """A file with ``names`` names, in words for a note."""
    return f"a hard link (one of {names} names of a file that may be outside the directory)"


def read_fd(fd: int, max_bytes: int) -> tuple[bytes, bool]:
    """At most ``max_bytes`` from ``fd``; and whether there was more."""
    chunks, left = [], max_bytes
    while left > 0:
        chunk = os.read(fd, min(CHUNK, left))
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks), bool(os.read(fd, 1))


def read_file(root: int | str | os.PathLike[str], relative: str | os.PathLike[str], max_bytes: int) -> Result:
    """The first ``max_bytes`` of the regular file ``relative`` below ``root`` — the job
    directory — read as hostile data (module docstring). Never raises for what the job left
    there: a link, FIFO, socket, device, directory, hard link or a missing file gives
    ``data=None`` with the reason; a larger file is cut (``truncated``). An ``OSError`` of
    ``root`` itself (anyjob's own path) still raises."""
    with opened_root(root) as root_fd:
        try:
            fd = open_file(root_fd, relative)
        except Refused as refused:
            return Result(None, refused.reason, missing=refused.missing)
        try:
            data, more = read_fd(fd, max_bytes)
        except OSError as exc:  # e.g. EIO: the job's problem, not ours
            return Result(None, Refused(os.fspath(relative), f"could not be read ({exc.strerror})").reason)
        finally:
            os.close(fd)
    return Result(data, truncated=more)


def _refusal(dir_fd: int, name: str, shown_as: str, exc: OSError, *, wanted: str) -> Refused:
    """The ``Refused`` for an ``open`` (or ``lstat``) of ``name`` that failed with ``exc``."""
    if exc.errno == errno.ENOENT:
        return Refused(shown_as, "does not exist", missing=True)
    try:
        st = lstat_at(dir_fd, name)
    except OSError:
        return Refused(shown_as, f"could not be opened ({exc.strerror})")
    what = describe(st.st_mode)
    if what == wanted:  # it is what we wanted, but could not be opened (permissions, ...)
        return Refused(shown_as, f"could not be opened ({exc.strerror})")
    return Refused(shown_as, f"is {what}")
