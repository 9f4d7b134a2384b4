"""Real servers for the tests: started on 127.0.0.1, on free ports, and stopped by themselves.

Every child gets ``PR_SET_PDEATHSIG`` so it dies with the test run even when pytest is
killed, and every fixture terminates its server on teardown.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def start(cmd: list[str], **kwargs) -> subprocess.Popen:
    """Start a child that dies with us (and in its own session, so it can be group-killed)."""
    return subprocess.Popen(cmd, preexec_fn=_die_with_parent, start_new_session=True, **kwargs)


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def moto_s3_server() -> Iterator[str]:
    """A real S3-protocol server (moto's server mode) on loopback; yields its endpoint URL."""
    port = free_port()
    proc = start(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def wait_for_file(path, timeout: float = 15) -> None:
    """Until ``path`` exists (a process under test signals progress by writing it)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """Running, that is: zombies waiting for a reaper count as dead."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@contextlib.contextmanager
def redis_server(folder) -> Iterator[str]:
    """The redis-server ``make run`` uses, on a unix socket in ``folder``; yields its REDIS_URL."""
    from webapp.run import redis_answers, redis_config, redis_server_binary

    sock = folder / "redis.sock"
    conf = folder / "redis.conf"
    conf.write_text(redis_config(folder, sock).replace("appendonly yes", "appendonly no"))
    proc = start([str(redis_server_binary()), str(conf)], cwd=folder, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not redis_answers(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis+socket://{sock}"
    finally:
        stop(proc)
