"""The Python environment that stands in for the generic container image on this machine.

The local backend runs ``python -m anyjob_container train`` with an interpreter that has
what the image has: ``container/requirements.txt`` installed, the ``anyjob_container``
package importable (a ``.pth`` file pointing at the repository's ``container/``, so edits
to the container need no rebuild) and nothing of the dashboard's own virtualenv.

It lives at ``<root>/image-env-<key>/`` where the key hashes the requirements, the base
interpreter and the ``container/`` path, so a changed pin builds a new environment beside
the old one. Several worker processes may ask at once: one builds, under an ``fcntl`` lock,
into a temporary folder that is renamed into place only when complete (with a ``.ready``
marker); the others wait on the lock and then use it. No Django imports here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("anyjob.local.image")

REPO = Path(__file__).resolve().parents[3]
CONTAINER_DIR = REPO / "container"
REQUIREMENTS = CONTAINER_DIR / "requirements.txt"
READY = ".ready"

#: The ``ENV`` of ``container/Dockerfile``: what every process in the image sees.
#: Merge it under a job's environment (``{**IMAGE_ENV, **env}``) when running the image env.
IMAGE_ENV = {
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "PIP_NO_CACHE_DIR": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}


class ImageEnvError(Exception):
    """The image environment could not be built; ``details`` holds the tool's output."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


def base_interpreter() -> str:
    """The interpreter the environment is made from (the real one, not a venv's link)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def env_key(requirements: Path = REQUIREMENTS) -> str:
    """12 hex digits naming one build: requirements, interpreter version and path, container/."""
    digest = hashlib.sha256()
    for part in (
        requirements.read_bytes(),
        sys.version.encode(),
        os.path.realpath(base_interpreter()).encode(),
        str(CONTAINER_DIR).encode(),
    ):
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def env_dir(root: Path, requirements: Path = REQUIREMENTS) -> Path:
    """Where ``ensure_image_env(root)`` puts (or has put) the environment."""
    return Path(root).resolve() / f"image-env-{env_key(requirements)}"


def python_of(env: Path) -> Path:
    return env / "bin" / "python"


def runtime_paths(python: Path) -> list[Path]:
    """What running ``python`` reads outside the machine's usual places: the environment,
    its base interpreter's installation and the repository's ``container/`` (the ``.pth``
    target). Pass them as the sandbox's ``expose_ro`` so hiding ``var/`` or a home
    directory does not hide the interpreter."""
    env = Path(python).parent.parent
    paths = [env, CONTAINER_DIR]
    with contextlib.suppress(OSError):
        for line in (env / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                paths.append(Path(os.path.realpath(value.strip())).parent)
    return paths


def ensure_image_env(root: Path, *, requirements: Path = REQUIREMENTS) -> Path:
    """Return the ``python`` of the image environment under ``root``, building it if needed.

    Safe to call from several processes at once: exactly one builds, nobody ever sees a
    half-built environment. Raises ``ImageEnvError`` (with pip's output in ``details``)
    when the build fails; a later call tries again. ``requirements`` is for tests.
    """
    final = env_dir(root, requirements)
    if (final / READY).is_file():
        return python_of(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or if we die
        if (final / READY).is_file():
            return python_of(final)  # another process built it while we waited
        _remove_leftovers(final)
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            tmp.chmod(0o755)  # mkdtemp's 0700 is for secrets; this is an interpreter
            _build(tmp, requirements)
            _relocate(tmp, final)
            (tmp / READY).write_text(f"built from {requirements}\n")
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("built the image environment %s in %.1f s", final, time.monotonic() - started)
    return python_of(final)


def _remove_leftovers(final: Path) -> None:
    """Clear what a build that died half-way left behind (we hold the lock: nobody builds)."""
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if final.exists():  # renamed but never marked ready: cannot happen, but never trust it
        shutil.rmtree(final, ignore_errors=True)


#: Variables that would point the build at another environment's packages or install
#: somewhere else; the rest of the caller's environment (PIP_INDEX_URL, proxies, certificates)
#: applies as it does to a plain ``pip install`` on this machine.
_FOREIGN = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONNOUSERSITE", "VIRTUAL_ENV")
_FOREIGN_PIP = ("PIP_TARGET", "PIP_PREFIX", "PIP_ROOT", "PIP_USER", "PIP_REQUIRE_VIRTUALENV")


def _build_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _FOREIGN + _FOREIGN_PIP}


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(
        cmd,
        env=_build_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    out = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "ERROR" in line), lines[-1] if lines else "")
        raise ImageEnvError(
            f"could not build the image environment: {what} failed with exit code "
            f"{proc.returncode}: {reason}",
            details=out[-16384:],
        )


def _build(env: Path, requirements: Path) -> None:
    _run([base_interpreter(), "-m", "venv", str(env)], "python -m venv")
    python = str(python_of(env))
    # The machine's own pip configuration (index, find-links, certificates) applies.
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "-r", str(requirements)], f"pip install -r {requirements.name}")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        env=_build_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "anyjob-container.pth").write_text(f"{CONTAINER_DIR}\n")
    _run([python, "-c", "import anyjob_container.train"], "the import check (anyjob_container)")


def _relocate(tmp: Path, final: Path) -> None:
    """Point the scripts venv and pip wrote (shebangs, activate) at the final folder.

    A venv is not relocatable by itself; everything else in it (pyvenv.cfg's ``home``,
    site-packages) holds no path of its own folder.
    """
    old, new = str(tmp).encode(), str(final).encode()
    for path in [tmp / "pyvenv.cfg", *(tmp / "bin").iterdir()]:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old in data and b"\0" not in data:
            path.write_bytes(data.replace(old, new))
