"""``make run`` for real: the launcher, its embedded Redis, Celery worker and beat, the web server."""

from __future__ import annotations

import contextlib
import http.client
import http.cookiejar
import json
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


def health(port: int) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def child_pid(launcher: int, part: bytes) -> int | None:
    """The launcher's own (live) child whose command line holds ``part``."""
    for pid in descendants(launcher):
        with contextlib.suppress(OSError):
            stat_line = Path(f"/proc/{pid}/stat").read_text()
            ppid = int(stat_line.rsplit(")", 1)[1].split()[1])
            if (
                ppid == launcher
                and alive(pid)
                and part in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            ):
                return pid
    return None


def wait_for_health(port: int, down: list[str], timeout: float = 15) -> dict:
    def matches():
        status, body = health(port)
        if (status == 200 and not down) or (status == 503 and body.get("down") == down):
            return body
        return None

    return wait_for(matches, timeout, f"/healthz to say {down or 'ok'}")


def probe_ping(url: str) -> str:
    probe = Celery("probe", broker=url, backend=url)
    probe.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    try:
        return probe.send_task("jobs.tasks.ping").get(timeout=20)
    finally:
        probe.close()


@pytest.mark.slow
def test_make_run(tmp_path: Path) -> None:
    var, port = tmp_path / "var", free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "ANYJOB_ADMIN_PASSWORD"}
    }
    env.update(
        ANYJOB_VAR_DIR=str(var),
        ANYJOB_PORT=str(port),
        DJANGO_SETTINGS_MODULE="webapp.settings",
        ANYJOB_HEALTH_STALE_SECONDS="3",
    )
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
        assert probe_ping(url) == "pong"

        children = descendants(launcher.pid)
        names = {Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ") for pid in children}
        for part in (b"redis-server", b"worker", b"beat", b"gunicorn"):
            assert any(part in name for name in names), names

        # /healthz answers without sign-in: every part is up, and the launcher said so.
        body = wait_for_health(port, [])
        assert body == {"status": "ok", "parts": dict.fromkeys(["database", "redis", "worker", "beat"], "ok")}
        wait_for(lambda: "anyjob is up on" in log.read_text(), 10, "the launcher to say anyjob is up")

        # Each part stopped in turn is named, and the health comes back when it resumes.
        for part, down in (
            (b"beat", ["beat"]),
            (b" worker ", ["worker"]),
            (b"redis-server", ["redis", "worker", "beat"]),
        ):
            pid = child_pid(launcher.pid, part)
            os.kill(pid, signal.SIGSTOP)
            try:
                body = wait_for_health(port, down)
                assert all(body["parts"][p].startswith("down: ") for p in down), body
            finally:
                os.kill(pid, signal.SIGCONT)
            wait_for_health(port, [])

        # A child that dies is started again (and says so); the others carry on.
        worker = child_pid(launcher.pid, b" worker ")
        os.kill(worker, signal.SIGKILL)
        wait_for(
            lambda: "worker exited unexpectedly with code -9; restarting it in 1 s" in log.read_text(),
            10,
            "the launcher to restart the worker",
        )
        wait_for(lambda: child_pid(launcher.pid, b" worker ") not in {None, worker}, 10, "a new worker")
        assert probe_ping(url) == "pong"
        wait_for_health(port, [])
        children = descendants(launcher.pid)

        # Ctrl-C stops everything and exits 0; nothing it started survives.
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=15) == 0, log.read_text()[-3000:]
        wait_for(lambda: not any(alive(pid) for pid in children), 3, "the launcher's children to go")
        assert "anyjob | stopped" in log.read_text()
        assert not socket.exists()
    finally:
        stop(launcher)
