"""A SQLite database configured outside var/ is hidden from jobs too (its file is world-readable
by default, and the job's uid could otherwise read every session and job of the team)."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from jobs.backends.local import sandbox
from jobs.backends.local.launch import hidden_paths

pytestmark = pytest.mark.skipif(
    not sandbox.bwrap_available(), reason=f"no sandbox here: {sandbox.isolation_problem()}"
)


def test_a_database_outside_var_is_hidden_from_the_job(tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="anyjob-db-", dir="/var/tmp"))  # visible inside
    try:
        folder.chmod(0o755)
        database = folder / "team.sqlite3"
        database.write_bytes(b"SQLite format 3\0 every session of the team")
        database.chmod(0o644)
        databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(database)}}
        hide = hidden_paths(databases)
        assert str(database) in hide and f"{database}-wal" in hide
        job = tmp_path / "ml"
        job.mkdir()
        script = (
            "import json\n"
            "try:\n"
            f"    out = open({str(database)!r}, 'rb').read().decode(errors='replace')\n"
            "except OSError as exc:\n"
            "    out = type(exc).__name__\n"
            "print(json.dumps(out))\n"
        )
        spec = sandbox.Sandbox(
            job_dir=job, argv=["/usr/bin/python3", "-c", script], hide=[Path(p) for p in hide]
        )
        proc = sandbox.SandboxedProcess.start(spec, stdout=subprocess.PIPE)
        out = proc.stdout.read().decode()
        assert proc.wait(timeout=30) == 0, out
        assert "every session" not in out and json.loads(out) in ("", "PermissionError")
        # The control: the same file under another name, not hidden, is readable by the job.
        (folder / "copy").write_bytes(database.read_bytes())
        (folder / "copy").chmod(0o644)
        spec = sandbox.Sandbox(
            job_dir=job, argv=["/usr/bin/python3", "-c", script.replace(str(database), str(folder / "copy"))]
        )
        proc = sandbox.SandboxedProcess.start(spec, stdout=subprocess.PIPE)
        assert "every session" in proc.stdout.read().decode() and proc.wait(timeout=30) == 0
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)
