"""The real clients' virtualenvs, built once per pin set and kept outside the checkout.

Each client runs from its own venv (the SageMaker SDK's v2 and v3 cannot share one, and none of
them belongs in anyjob's own ``.venv``): ``aws`` (boto3 + the AWS CLI v1), ``sdk-v2`` and
``sdk-v3``, each pinned whole by ``requirements-<name>.txt`` beside this file. A venv lives at
``<cache>/<name>-<12 hex digits>``, the digits hashing the pins and the interpreter, so a changed
pin builds a new one beside the old. ``<cache>`` is ``ANYJOB_CLIENT_VENVS`` if set, else
``$XDG_CACHE_HOME/anyjob/client-venvs`` (``~/.cache/…``): outside the checkout, so a clean clone
on the same machine (CI) finds them built; a fresh machine builds them from PyPI.

Concurrent pytest processes: one builds under an ``fcntl`` lock on ``.<name>-<key>.lock``, the
others wait on it and then use the result. A venv is not relocatable (its scripts name their
own folder), so it is built in place and marked ``.ready`` only once complete; a folder without
the mark is what a build that died left, and is removed and built again.

``python -m tests.clients.venvs`` builds all three at once (in parallel) and prints the times.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAMES = ("aws", "sdk-v2", "sdk-v3")
READY = ".ready"
#: pip's variables that would install somewhere else or into another environment.
FOREIGN = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONUSERBASE",
    "VIRTUAL_ENV",
    "PIP_TARGET",
    "PIP_PREFIX",
    "PIP_USER",
)


class VenvError(Exception):
    """A client venv could not be built; the message ends with pip's last lines."""


@dataclass(frozen=True)
class Venv:
    name: str
    root: Path
    built_in: float | None  # seconds, None when it was already there

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def bin(self, tool: str) -> Path:
        return self.root / "bin" / tool


def requirements(name: str) -> Path:
    if name not in NAMES:
        raise ValueError(f"unknown client venv {name!r} (one of {', '.join(NAMES)})")
    return HERE / f"requirements-{name}.txt"


def base_interpreter() -> str:
    """The interpreter the venvs are made from: the real one, not anyjob's venv's link."""
    return getattr(sys, "_base_executable", None) or sys.executable


def cache_root() -> Path:
    if os.environ.get("ANYJOB_CLIENT_VENVS"):
        return Path(os.environ["ANYJOB_CLIENT_VENVS"]).resolve()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).resolve() / "anyjob" / "client-venvs"


def key(name: str) -> str:
    digest = hashlib.sha256()
    for part in (
        requirements(name).read_bytes(),
        sys.version.encode(),
        os.path.realpath(base_interpreter()).encode(),
    ):
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def location(name: str) -> Path:
    return cache_root() / f"{name}-{key(name)}"


def ensure(name: str) -> Venv:
    """The venv ``name``, built first if it is not there yet (see the module docstring)."""
    root = location(name)
    if (root / READY).is_file():
        return Venv(name, root, None)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or if we die
        if (root / READY).is_file():
            return Venv(name, root, None)  # another process built it while we waited
        shutil.rmtree(root, ignore_errors=True)  # what a build that died left
        started = time.monotonic()
        try:
            _build(root, requirements(name))
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        took = time.monotonic() - started
        (root / READY).write_text(f"built from {requirements(name).name} in {took:.1f} s\n")
    return Venv(name, root, took)


def _run(cmd: list[str], what: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
    done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise VenvError(f"{what} failed with exit code {done.returncode}:\n{tail}")


def _build(root: Path, pins: Path) -> None:
    _run([base_interpreter(), "-m", "venv", str(root)], f"python -m venv {root}")
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # The pins are the whole environment: nothing to resolve, nothing unpinned fetched.
    _run([*pip, "--no-deps", "-r", str(pins)], f"pip install -r {pins.name}")
    _run([str(root / "bin" / "python"), "-m", "pip", "check"], f"pip check ({pins.name})")


def ensure_all() -> dict[str, Venv]:
    """All three, built in parallel when missing (cold: about as long as the slowest)."""
    with ThreadPoolExecutor(len(NAMES)) as pool:
        return dict(zip(NAMES, pool.map(ensure, NAMES), strict=True))


def describe(venv: Venv) -> str:
    if venv.built_in is None:
        return f"client venv {venv.name}: cached at {venv.root}"
    return f"client venv {venv.name}: built in {venv.built_in:.1f} s at {venv.root}"


if __name__ == "__main__":
    started = time.monotonic()
    for venv in ensure_all().values():
        print(describe(venv))
    print(f"client venvs ready in {time.monotonic() - started:.1f} s")
