"""Run a child process as the job's foreground work, and stop it the way SageMaker stops jobs.

``StopTrainingJob`` and ``MaxRuntimeInSeconds`` send SIGTERM to the container, wait 120 s
and send SIGKILL. The official toolkit does not forward SIGTERM to the user's process
(toolkit issues #125/#173), so a script never gets to save its model. We forward it to the
child's whole process group, wait up to the grace period, then kill the group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

DEFAULT_GRACE_SECONDS = 120.0
STDERR_TAIL_BYTES = 64 * 1024


class Stopped(Exception):
    """SIGTERM arrived while no child was running."""


def grace_seconds() -> float:
    raw = os.environ.get("ANYJOB_STOP_GRACE_SECONDS")
    try:
        value = float(raw) if raw else DEFAULT_GRACE_SECONDS
    except ValueError:
        value = DEFAULT_GRACE_SECONDS
    return max(0.0, value)


class Foreground:
    """Holds the one child process that SIGTERM must reach."""

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.terminating = False
        self._starting = False
        self._killer: threading.Timer | None = None

    @contextlib.contextmanager
    def handling_sigterm(self) -> Iterator[None]:
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)
            if self._killer:
                self._killer.cancel()

    def _on_sigterm(self, signum: int, frame: object) -> None:
        if self.terminating:
            return
        self.terminating = True
        if self._starting:
            return  # run() forwards it as soon as the child exists
        child = self.child
        if child is None or child.poll() is not None:
            raise Stopped
        self._forward(child)

    def _forward(self, child: subprocess.Popen) -> None:
        print(
            f"anyjob: SIGTERM received; forwarding it to the user process group {child.pid} "
            f"and waiting up to {grace_seconds():g}s",
            file=sys.stderr,
            flush=True,
        )
        _signal_group(child.pid, signal.SIGTERM)
        self._killer = threading.Timer(grace_seconds(), _signal_group, (child.pid, signal.SIGKILL))
        self._killer.daemon = True
        self._killer.start()

    def run(
        self, cmd: list[str], cwd: Path, env: dict[str, str], *, tee_stderr: bool = True
    ) -> tuple[int, bytes]:
        """Run ``cmd`` in a new process group; return (exit code, the last 64 KiB of stderr).

        stdout goes straight to ours (the job log); stderr is copied through as it comes
        and its tail kept for the failure file.
        """
        if self.terminating:
            raise Stopped
        # (Blocking SIGTERM around Popen is no answer: the child would inherit the mask.)
        self._starting = True
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            self.child = proc
        finally:
            self._starting = False
        if self.terminating:  # SIGTERM arrived while the child was starting
            self._forward(proc)
        tail = bytearray()
        reader = threading.Thread(target=_pump, args=(proc.stderr, tail, tee_stderr), daemon=True)
        reader.start()
        try:
            code = proc.wait()
        finally:
            # Whatever the script left behind (daemons, children ignoring SIGTERM) dies with
            # it, as it would when the container exits.
            _signal_group(proc.pid, signal.SIGKILL)
            reader.join(timeout=5)
            self.child = None
        return code, bytes(tail)


def _pump(stream, tail: bytearray, tee: bool) -> None:
    out = sys.stderr.buffer
    fd = stream.fileno()
    while chunk := os.read(fd, 65536):
        if tee:
            out.write(chunk)
            out.flush()
        tail += chunk
        if len(tail) > 2 * STDERR_TAIL_BYTES:
            del tail[: len(tail) - STDERR_TAIL_BYTES]
    stream.close()
    if len(tail) > STDERR_TAIL_BYTES:
        del tail[: len(tail) - STDERR_TAIL_BYTES]


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
