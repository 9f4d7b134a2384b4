"""Install the ``requirements.txt`` that ships with the user's code."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import InstallRequirementsError

#: A runner takes (argv, cwd, env) and returns (exit code, tail of combined output).
Runner = Callable[[list[str], Path, dict[str, str]], tuple[int, str]]


def _default_runner(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out = proc.stdout.decode("utf-8", "replace")
    sys.stdout.write(out)
    sys.stdout.flush()
    return proc.returncode, out[-8192:]


def pip_target() -> str | None:
    """Where extra packages go when site-packages is read-only (``ANYJOB_PIP_TARGET``).

    In the image pip installs into site-packages as usual. The local backend runs the
    container on a read-only root and sets this to a writable folder instead; the folder
    is then put first on the user script's ``PYTHONPATH``.
    """
    return os.environ.get("ANYJOB_PIP_TARGET") or None


def python_path_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the pip target (if any) first on ``PYTHONPATH``."""
    target = pip_target()
    if not target:
        return env
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (target, env.get("PYTHONPATH", "")) if p)
    return env


def install_requirements(code_dir: Path, env: dict[str, str], run: Runner | None = None) -> bool:
    """``pip install -r requirements.txt`` in ``code_dir`` if the file exists.

    Returns whether anything was installed; raises ``InstallRequirementsError`` with the
    tail of pip's output when pip fails.
    """
    req = code_dir / "requirements.txt"
    if not req.is_file():
        return False
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    target = pip_target()
    if target:
        cmd += ["--target", target]
    cmd += ["-r", "requirements.txt"]
    print(f"anyjob: installing requirements: {' '.join(cmd[1:])}", flush=True)
    code, tail = (run or _default_runner)(cmd, code_dir, env)
    if code != 0:
        lines = [line for line in tail.splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "ERROR" in line), lines[-1] if lines else "")
        raise InstallRequirementsError(
            f"pip install -r requirements.txt failed with exit code {code}: {reason.strip()}",
            details=tail,
        )
    return True
