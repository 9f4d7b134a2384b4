"""gunicorn, run in this process: its master is the container's main process.

Running the arbiter in-process (not ``exec gunicorn ...``) keeps one process to signal:
SIGTERM reaches gunicorn's master, which stops accepting, lets workers finish the
requests in flight and exits 0. Nothing is read from gunicorn's command line, config
file or ``GUNICORN_CMD_ARGS``: the settings below are the whole configuration.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from .settings import Settings

# The worker class is "sync" unless ANYJOB_SERVE_WORKER_CLASS says "gthread". Measured
# with bench/serve_throughput.py (2 workers, 2 cores, 16 connections): gthread keeps
# connections alive, but each stays with the worker that accepted it, and in half the
# runs all 16 landed on one worker while the other idled (requests/s halved). A sync
# worker only accepts when idle, so work spreads evenly; it closes the connection after
# each answer, and a reconnect on loopback costs less than gthread's hand-off between
# threads (p50 0.35 ms against 0.53 ms with one connection). sync: 3,200-3,800 req/s,
# p99 6-10 ms, 1.2-1.3x Flask; gthread: 1,400-4,100 req/s, p99 13-28 ms.
#
# Threads per gthread worker: invocations still run one at a time per worker (app.py
# serialises them, so handlers need not be thread-safe); the second thread reads the
# next request and answers /ping meanwhile. Four threads only made p99 worse.
THREADS = 2
# Idle keep-alive connections stay open longer than a client's usual pool idle time
# (nginx's default is 75 s), so the server is not the side that closes mid-reuse.
KEEPALIVE = 75
# On SIGTERM, requests in flight get this long to finish (and never more than the
# per-request timeout) before the workers are killed.
GRACEFUL_TIMEOUT = 30


def enforces_timeout(worker_class: str) -> bool:
    """Whether gunicorn itself replaces a worker whose request outlives ``timeout``."""
    return worker_class == "sync"


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bind": [settings.bind],
        "workers": settings.workers,
        "worker_class": settings.worker_class,
        # A worker stuck this long is replaced. sync counts a long request as stuck, as
        # the toolkit's model server does; for gthread, app.py's watchdog does the same.
        # (Model loading runs in a thread and never counts.)
        "timeout": settings.timeout,
        "graceful_timeout": min(GRACEFUL_TIMEOUT, settings.timeout),
        "keepalive": KEEPALIVE,
        "preload_app": False,  # the model is loaded once per worker, after the fork
        "control_socket_disable": True,  # no ~/.gunicorn/gunicorn.ctl shared between servers
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "anyjob-serve",
    }
    if settings.worker_class == "gthread":
        options["threads"] = THREADS
    return options


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}


class _Arbiter(Arbiter):
    """gunicorn's master, without a race that loses a stop signal at worker start.

    A SIGTERM reaching a new worker between its fork and the moment it installs its own
    handlers runs the copy of the master's handler and is lost: that worker then outlives
    the shutdown by the whole graceful timeout. So workers are forked with the stop
    signals blocked, and unblock them once their handlers are in place (``load``).
    """

    def spawn_worker(self) -> int:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return super().spawn_worker()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class GunicornServer(BaseApplication):
    def __init__(self, options: dict[str, Any], app_factory: Callable[[], Callable[..., Any]]) -> None:
        self._options = options
        self._app_factory = app_factory
        super().__init__(prog="anyjob-serve")

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Callable[..., Any]:
        # Called in each worker after the fork (preload_app is off), once the worker's
        # signal handlers are installed: a stop signal held back since the fork lands now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        return self._app_factory()

    def run(self) -> None:
        try:
            _Arbiter(self).run()
        except RuntimeError as exc:  # as BaseApplication.run, with our arbiter
            print(f"anyjob: {exc}", file=sys.stderr)
            sys.exit(1)


def run(settings: Settings, app_factory: Callable[[], Callable[..., Any]]) -> int:
    """Serve until SIGTERM (or SIGINT); the exit code: 0 for a clean stop, else 1."""
    try:
        GunicornServer(gunicorn_options(settings), app_factory).run()
    except SystemExit as exc:  # the arbiter always leaves through sys.exit
        code = exc.code
        if code in (None, 0):
            return 0
        if not isinstance(code, int):
            print(f"anyjob: {code}", file=sys.stderr)
        return 1
    return 0
