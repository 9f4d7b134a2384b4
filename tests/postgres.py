"""A real PostgreSQL server for the tests, started by the tests themselves and stopped by them.

Debian's ``postgresql`` package (installed by ``.ci/sysdeps.sh``) provides the binaries;
``initdb`` makes a throwaway cluster in a temporary folder, and ``postgres`` serves it on a unix
socket in that folder only (no TCP port), with durability switched off (a test database need
not survive a power cut). ``initdb`` refuses to run as root: as root, the server runs as the
``postgres`` user the package creates (``setpriv``, which also keeps the parent-death signal,
so the server never outlives the test run).

``ANYJOB_TEST_DB=postgres`` makes ``tests/settings.py`` start one for the whole run (or reuse
the one named by ``ANYJOB_TEST_POSTGRES_HOST`` that a parent test process started) and point
Django at it. ``python -m tests.postgres`` says whether a server can be started here.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

USER = "anyjob"
START_TIMEOUT = 30.0
INITDB = ["-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]
SETTINGS = [
    "listen_addresses=",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=200",
    "shared_buffers=128MB",
]


def bin_dir() -> Path | None:
    """The newest installed server's bin folder (``/usr/lib/postgresql/N/bin``)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def missing() -> str | None:
    """Why no server can be started here, or ``None``."""
    if bin_dir() is None:
        return "PostgreSQL's server is not installed (sudo apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no 'postgres' user to run the server as"
    return None


def _as_server_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--pdeathsig=INT"]


class Server:
    """One running cluster: ``host`` is its socket folder, the superuser is ``anyjob``."""

    def __init__(self) -> None:
        bindir = bin_dir()
        assert bindir is not None, missing()
        self.folder = Path(tempfile.mkdtemp(prefix="anyjob-postgres-"))
        self.host = str(self.folder)
        data = self.folder / "data"
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self.folder.chmod(0o755)
        init = subprocess.run(
            [*_as_server_user(), str(bindir / "initdb"), "-D", str(data), "-U", USER, "-A", "trust", *INITDB],
            capture_output=True,
            text=True,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stdout}{init.stderr}")
        argv = [*_as_server_user(), str(bindir / "postgres"), "-D", str(data), "-k", self.host]
        for setting in SETTINGS:
            argv += ["-c", setting]
        self.log = (self.folder / "server.log").open("wb")
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("postgres did not start: " + (self.folder / "server.log").read_text())
            time.sleep(0.05)

    def ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(host=self.host, user=USER, dbname="postgres", connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def url(self, dbname: str) -> str:
        """A ``DATABASE_URL`` for one database of this server (over the unix socket)."""
        return f"postgres://{USER}@{quote(self.host, safe='')}/{dbname}"

    def stop(self) -> None:
        """Fast shutdown (SIGINT: sessions are ended), then the folder goes."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


_server: Server | None = None


def server_for_the_run() -> str:
    """The socket folder of this test run's server: the parent's, or one started now."""
    global _server
    host = os.environ.get("ANYJOB_TEST_POSTGRES_HOST")
    if host:
        return host
    reason = missing()
    if reason:
        raise RuntimeError(f"ANYJOB_TEST_DB=postgres, but {reason}")
    _server = Server()
    atexit.register(_server.stop)
    os.environ["ANYJOB_TEST_POSTGRES_HOST"] = _server.host  # job processes, workers: the same one
    return _server.host


def new_database(dbname: str) -> str:
    """A fresh, empty database on this run's server; its ``DATABASE_URL``."""
    import psycopg

    host = os.environ["ANYJOB_TEST_POSTGRES_HOST"]
    with psycopg.connect(host=host, user=USER, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')
    return f"postgres://{USER}@{quote(host, safe='')}/{dbname}"


if __name__ == "__main__":
    reason = missing()
    if reason:
        print(f"PostgreSQL pass SKIPPED: {reason}")
    sys.exit(1 if reason else 0)
