"""The WSGI application of one worker: ``GET /ping`` and ``POST /invocations``.

A plain WSGI callable rather than a framework: two routes do not need routing, and every
microsecond of a framework's request object shows in the endpoint's latency.

Each worker loads the model in a background thread right after it starts, so ``/ping``
answers at once: 503 while loading, 200 once loaded, 500 with the reason (one line of
JSON; the traceback goes to the log) when the code could not be fetched, its requirements
not installed, the module not imported or ``model_fn`` failed. A failed load leaves the
worker running and answering so — restarting it would only fail again.

A worker runs one invocation at a time, as the inference toolkit's model server does, so
handlers need not be thread-safe (with gthread, the worker's other thread keeps reading
requests and answering ``/ping`` meanwhile). An invocation running longer than
``SAGEMAKER_MODEL_SERVER_TIMEOUT`` gets its worker replaced: gunicorn's sync worker does
that by itself, for gthread the watchdog below does.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from ..errors import ContainerError
from .codecs import media_type
from .context import Context
from .handlers import Service, load_service

log = logging.getLogger(__name__)

MAX_BODY = 6_291_456  # InvokeEndpoint's limit on the request body
MAX_MESSAGE = 1024

StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class Plan:
    """What the master prepared for the workers before starting them."""

    code_dir: Path
    program: str
    model_dir: Path
    default_accept: str
    #: A failure before any worker started (code fetch, requirements): every worker reports it.
    error: ContainerError | None = None


def _status_line(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"{code} Error"


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _error_body(message: str) -> bytes:
    return json.dumps({"error": _one_line(message)}).encode()


def describe(exc: BaseException) -> str:
    """``ClassName: message``: a load failure names its kind (``ImportModuleError: ...``)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def status_of(exc: Exception) -> int:
    """The HTTP status for an exception a handler raised (the inference toolkit's convention)."""
    code = getattr(exc, "status_code", None)
    return code if type(code) is int and 400 <= code <= 599 else 500


_JSON = "application/json"
WORKER_HEADER = "X-Anyjob-Worker"
_READY = b'{"status":"ready"}'
_LOADING = _error_body("the model is still loading")


class ServingApp:
    """WSGI callable for one worker. ``start()`` begins loading the model in the background."""

    def __init__(self, plan: Plan, timeout: float | None) -> None:
        """``timeout``: replace this worker when an invocation outlives it (None: the
        worker class does that itself)."""
        self._plan = plan
        self._timeout = timeout
        self._model_dir = str(plan.model_dir)
        self._service: Service | None = None
        self._one_at_a_time = threading.Lock()
        self._running_since = 0.0  # monotonic start of the invocation in progress, or 0
        # What /ping and /invocations answer until the service is ready.
        self._unavailable: tuple[str, bytes] = (_status_line(503), _LOADING)
        if plan.error is not None:
            self._unavailable = (_status_line(500), _error_body(describe(plan.error)))

    def start(self) -> ServingApp:
        if self._plan.error is None:
            # Daemons: a model_fn still running must not keep a stopping worker alive.
            threading.Thread(target=self._load, name="anyjob-model-loader", daemon=True).start()
            if self._timeout is not None:
                watch = threading.Thread(target=self._watch, args=(self._timeout,), name="anyjob-watchdog")
                watch.daemon = True
                watch.start()
        return self

    def _watch(self, timeout: float) -> None:
        period = min(1.0, timeout / 4)
        while True:
            time.sleep(period)
            since = self._running_since
            if since and time.monotonic() - since > timeout:
                log.critical(
                    "an invocation has run for over %g s (SAGEMAKER_MODEL_SERVER_TIMEOUT): "
                    "replacing worker %d",
                    timeout,
                    os.getpid(),
                )
                # The handler cannot be interrupted; gunicorn's master starts a fresh worker.
                os._exit(1)

    def _load(self) -> None:
        plan = self._plan
        try:
            service = load_service(plan.code_dir, plan.program, plan.model_dir, plan.default_accept)
        except BaseException as exc:
            message = describe(exc)
            trace = "".join(traceback.format_exception(exc))
            log.error("the model could not be loaded: %s\n%s", message, trace)
            self._unavailable = (_status_line(500), _error_body(message))
            return
        self._service = service
        log.info("model loaded from %s with handlers from %s", plan.model_dir, service.module_name)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ["REQUEST_METHOD"]
        if path == "/invocations":
            if method == "POST":
                return self._invocations(environ, start_response)
            return self._error(start_response, 405, f"{method} is not allowed on /invocations", "POST")
        if path == "/ping":
            if method in ("GET", "HEAD"):
                # Which worker answered: anyjob's local host waits until every worker has
                # its model (each loads its own), not just the one that happened to answer.
                worker = [(WORKER_HEADER, str(os.getpid()))]
                if self._service is not None:
                    return self._respond(start_response, "200 OK", _READY, _JSON, worker)
                status, body = self._unavailable
                return self._respond(start_response, status, body, _JSON, worker)
            return self._error(start_response, 405, f"{method} is not allowed on /ping", "GET, HEAD")
        return self._error(start_response, 404, f"no such path {path!r}: use /ping or /invocations")

    def _invocations(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        service = self._service
        if service is None:
            status, body = self._unavailable
            return self._respond(start_response, status, body, _JSON)
        length = environ.get("CONTENT_LENGTH")
        if length:
            # Refuse an oversized body before reading a byte of it.
            if not length.isdigit():
                return self._error(start_response, 400, f"invalid Content-Length {length!r}")
            size = int(length)
            if size > MAX_BODY:
                return self._too_large(start_response)
            body = environ["wsgi.input"].read(size) if size else b""
        else:  # chunked: read one byte past the limit to know
            body = environ["wsgi.input"].read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                return self._too_large(start_response)
        context = Context(environ, self._model_dir) if service.wants_context else None
        with self._one_at_a_time:
            self._running_since = time.monotonic()
            try:
                out, content_type = service.invoke(
                    body, media_type(environ.get("CONTENT_TYPE")), environ.get("HTTP_ACCEPT"), context
                )
            except Exception as exc:
                return self._handler_error(start_response, exc)
            finally:
                self._running_since = 0.0
        headers = [("Content-Type", content_type), ("Content-Length", str(len(out)))]
        if context is not None and context.response_headers:
            headers.extend(context.response_headers.items())
        start_response("200 OK", headers)
        return [out]

    def _handler_error(self, start_response: StartResponse, exc: Exception) -> Iterable[bytes]:
        status = status_of(exc)
        if getattr(exc, "status_code", None) is not None:
            message = str(exc) or type(exc).__name__  # a deliberate error: its text is for the client
        else:
            message = describe(exc)
        if status >= 500:
            log.error("invocation failed (%d): %s", status, "".join(traceback.format_exception(exc)).rstrip())
        else:
            log.warning("invocation refused (%d): %s", status, _one_line(message))
        return self._respond(start_response, _status_line(status), _error_body(message), _JSON)

    def _too_large(self, start_response: StartResponse) -> Iterable[bytes]:
        return self._error(start_response, 413, f"the request body is over the {MAX_BODY}-byte limit")

    def _error(
        self, start_response: StartResponse, code: int, message: str, allow: str | None = None
    ) -> Iterable[bytes]:
        extra = [("Allow", allow)] if allow else []
        return self._respond(start_response, _status_line(code), _error_body(message), _JSON, extra)

    @staticmethod
    def _respond(
        start_response: StartResponse,
        status: str,
        body: bytes,
        content_type: str,
        extra: list[tuple[str, str]] | None = None,
    ) -> Iterable[bytes]:
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        if extra:
            headers.extend(extra)
        start_response(status, headers)
        return [body]
