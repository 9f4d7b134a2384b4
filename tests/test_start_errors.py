"""Bad input at start: one line naming the problem, exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def start(tmp_path: Path, *args: str, **variables: str) -> tuple[int, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "ANYJOB_PUBLIC_URL", "DJANGO_SECRET_KEY", "ANYJOB_PORT"}
    }
    env.update(ANYJOB_VAR_DIR=str(tmp_path / "var"), DJANGO_SETTINGS_MODULE="webapp.settings", **variables)
    done = subprocess.run(
        [sys.executable, "-m", "webapp.run", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode, done.stdout + done.stderr


def one_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


@pytest.mark.parametrize("role", [[], ["web"], ["worker"]], ids=["make run", "web", "worker"])
def test_a_database_that_does_not_answer(tmp_path: Path, role: list[str]) -> None:
    port = free_port()
    code, out = start(tmp_path, *role, DATABASE_URL=f"postgres://anyjob:s3cret@127.0.0.1:{port}/anyjob")
    line = one_line(out)
    assert code == 2
    shown = f"postgres://anyjob:***@127.0.0.1:{port}/anyjob"
    assert line.startswith(f"anyjob | cannot start: cannot connect to the database ({shown}): ")
    assert "s3cret" not in line


def test_a_database_url_it_cannot_read(tmp_path: Path) -> None:
    code, out = start(tmp_path, DATABASE_URL="mongodb://somewhere/anyjob")
    assert code == 2
    assert one_line(out).startswith("anyjob | cannot start: DATABASE_URL: ")


@pytest.mark.parametrize(
    "url",
    ["anyjob.example.com", "https://anyjob.example.com/anyjob/", "ftp://anyjob.example.com", "https://:443"],
)
def test_a_wrong_public_url(tmp_path: Path, url: str) -> None:
    code, out = start(tmp_path, ANYJOB_PUBLIC_URL=url, DJANGO_SECRET_KEY="x" * 50)
    assert code == 2
    assert one_line(out) == (
        "anyjob | cannot start: ANYJOB_PUBLIC_URL must be the address people open, "
        f"such as https://anyjob.example.com, not {url!r}"
    )


def test_a_missing_secret_key_at_team_scale(tmp_path: Path) -> None:
    code, out = start(tmp_path, "web", ANYJOB_PUBLIC_URL="https://anyjob.example.com")
    assert code == 2
    assert one_line(out) == (
        "anyjob | cannot start: DJANGO_SECRET_KEY must be set when ANYJOB_PUBLIC_URL is "
        "(the same value for every web server and worker)"
    )


@pytest.mark.parametrize("role", [[], ["beat"]], ids=["make run", "beat"])
def test_redis_down(tmp_path: Path, role: list[str]) -> None:
    port = free_port()
    code, out = start(tmp_path, *role, REDIS_URL=f"redis://127.0.0.1:{port}/0")
    assert code == 2
    assert one_line(out).startswith(
        f"anyjob | cannot start: cannot reach Redis at REDIS_URL=redis://127.0.0.1:{port}/0: "
    )


def test_a_bad_number(tmp_path: Path) -> None:
    code, out = start(tmp_path, ANYJOB_PORT="eighty")
    assert code == 2
    assert one_line(out) == "anyjob | cannot start: ANYJOB_PORT must be a number, not 'eighty'"
