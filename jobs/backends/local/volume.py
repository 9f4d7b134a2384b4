"""A job's ML storage volume: ``/opt/ml`` and ``/tmp`` on disk, capped at ``VolumeSizeInGB``.

SageMaker gives each instance an EBS volume of ``VolumeSizeInGB`` that holds the input data,
``/opt/ml`` and scratch space; a script that writes past it gets "No space left on device".
Here each job (and endpoint) gets a sparse file of that size, formatted ext4 and mounted
through a loop device (``nosuid``, ``nodev``) below its folder. The file takes only the
blocks written; formatting and mounting cost a few milliseconds. Being a file system of its
own, nothing the job makes there can be a hard link to a file of this machine.

Mounting needs root (as the sandbox does). Where it cannot be done, the volume is a plain
folder and ``applied`` says that the size is not enforced. No Django imports here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger("anyjob.local.volume")

HELPER_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
IMAGE = "volume.img"
MOUNT = "volume"


class VolumeError(OSError):
    """The volume could not be made (a fault of the machine, not the job)."""


def _gib(n: int) -> str:
    return f"{n / 1024**3:g} GiB"


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, env=HELPER_ENV, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )


def problem() -> str | None:
    """Why volumes would be plain folders on this machine, or None."""
    if os.geteuid() != 0:
        return "anyjob does not run as root, so it cannot mount a volume per job"
    for tool in ("mkfs.ext4", "mount", "umount"):
        if shutil.which(tool, path=HELPER_ENV["PATH"]) is None:
            return f"{tool} is not installed"
    if not os.path.exists("/dev/loop-control"):
        return "this machine has no loop devices (/dev/loop-control)"
    return None


class Volume:
    """A mounted volume (or, where that cannot be, a plain folder) at ``path``."""

    def __init__(self, root: Path, path: Path, size: int, mounted: bool, applied: str) -> None:
        self.root = root
        self.path = path
        self.size = size
        self.mounted = mounted
        self.applied = applied

    @classmethod
    def create(cls, root: Path, size: int) -> Volume:
        """Make the volume of ``size`` bytes below ``root`` (a job's or endpoint's folder),
        clearing what a crashed run of the same folder left. Raises ``VolumeError`` when the
        machine can mount volumes but this one failed."""
        root = Path(root)
        release(root)
        path = root / MOUNT
        path.mkdir(parents=True, exist_ok=True)
        why = problem()
        if why is not None:
            return cls(root, path, size, False, f"volume: {_gib(size)} not enforced ({why})")
        image = root / IMAGE
        with open(image, "wb") as fh:
            fh.truncate(size)
        os.chmod(image, 0o600)
        made = _run(
            "mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
            "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", str(image),
        )  # fmt: skip
        if made.returncode != 0:
            image.unlink(missing_ok=True)
            raise VolumeError(f"could not format the job's volume: {made.stderr.strip()[-300:]}")
        mounted = _run("mount", "-o", "loop,nosuid,nodev,noatime", str(image), str(path))
        if mounted.returncode != 0:
            image.unlink(missing_ok=True)
            raise VolumeError(f"could not mount the job's volume: {mounted.stderr.strip()[-300:]}")
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(path / "lost+found")
        return cls(root, path, size, True, f"volume: {_gib(size)} ext4 on disk (loop device)")

    def release(self) -> None:
        """Unmount and delete the volume and everything on it."""
        release(self.root)


def release(root: Path) -> None:
    """Unmount ``root``'s volume if mounted (lazily if still busy) and delete its file."""
    root = Path(root)
    path = root / MOUNT
    if os.path.ismount(path) and _run("umount", str(path)).returncode != 0:
        done = _run("umount", "-l", str(path))
        if done.returncode != 0:
            log.warning("could not unmount %s: %s", path, done.stderr.strip())
    (root / IMAGE).unlink(missing_ok=True)
    if not os.path.ismount(path):
        shutil.rmtree(path, ignore_errors=True)
