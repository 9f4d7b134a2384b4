"""``make run`` for real: the launcher, its embedded Redis, Celery worker and beat, the web server."""

from __future__ import annotations

import http.client
import http.cookiejar
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from celery import Celery

from tests.servers import free_port, start, stop, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
SIGN_IN = re.compile(r"Sign in at http://127\.0\.0\.1:(\d+)/admin/ as admin / (\S+) \(also in (.+)\)\.")


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc (children, grandchildren, ...)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat_line = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat_line.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def sign_in(port: int, username: str, password: str) -> tuple[str, bytes]:
    """Sign in through the login form (CSRF token and cookie included); the final URL and page."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    url = f"http://127.0.0.1:{port}/accounts/login/"
    page = opener.open(url, timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": username, "password": password})
    with opener.open(url, data=form.encode(), timeout=10) as response:
        return response.geturl(), response.read()


@pytest.mark.slow
def test_make_run(tmp_path: Path) -> None:
    var, port = tmp_path / "var", free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "ANYJOB_ADMIN_PASSWORD"}
    }
    env.update(ANYJOB_VAR_DIR=str(var), ANYJOB_PORT=str(port), DJANGO_SETTINGS_MODULE="webapp.settings")
    log = tmp_path / "launcher.log"
    with log.open("wb") as out:
        launcher = start(
            [sys.executable, "-m", "webapp.run"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, timeout=30, proc=launcher)

        # Anonymous visitors are sent to sign in.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 302
        assert response.getheader("Location") == "/accounts/login/?next=/"
        conn.close()

        # The first admin's password was shown once, and kept in a private file; it signs in.
        shown = SIGN_IN.search(log.read_text())
        assert shown, log.read_text()
        assert int(shown.group(1)) == port
        password_file = var / "admin-password.txt"
        assert Path(shown.group(3)) == password_file
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert password_file.read_text().strip() == shown.group(2)
        final_url, page = sign_in(port, "admin", shown.group(2))
        assert final_url == f"http://127.0.0.1:{port}/jobs/"
        assert b"<h2>Jobs</h2>" in page

        # A task goes through the embedded Redis (unix socket only) to the real worker and back.
        socket = var / "redis" / "redis.sock"
        assert stat.S_ISSOCK(socket.stat().st_mode)
        assert stat.S_IMODE(socket.stat().st_mode) == 0o700
        url = f"redis+socket://{socket}"
        probe = Celery("probe", broker=url, backend=url)
        probe.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
        assert probe.send_task("jobs.tasks.ping").get(timeout=20) == "pong"
        probe.close()

        children = descendants(launcher.pid)
        names = {Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ") for pid in children}
        for part in (b"redis-server", b"worker", b"beat", b"runserver"):
            assert any(part in name for name in names), names

        # Ctrl-C stops everything and exits 0; nothing it started survives.
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=15) == 0, log.read_text()[-3000:]
        wait_for(lambda: not any(alive(pid) for pid in children), 3, "the launcher's children to go")
        assert "anyjob | stopped" in log.read_text()
        assert not socket.exists()
    finally:
        stop(launcher)
