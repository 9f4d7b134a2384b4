"""``InvokeEndpoint``: a request to a local endpoint's model server, as SageMaker's runtime
sends it, with its limits and its error shapes.

The server listens on a unix socket in the endpoint's folder (``endpoint_host.py``). Where
each endpoint listens is cached per process for ``ROUTE_CACHE_SECONDS`` and connections are
kept alive per thread (``connections``), so an invocation usually skips the database (the
runtime path's overhead is benchmarked); any connection error forgets both.
"""

from __future__ import annotations

import http.client
import threading
import time
from typing import Any

from botocore.exceptions import ClientError
from django.conf import settings

from jobs import api_limits
from jobs.backends.local import endpoint_host, launch, reattach
from jobs.backends.local.models import EndpointStatus, LocalEndpoint
from jobs.backends.local.shapes import (
    ACCOUNT,
    INVOKE,
    container_error,
    model_error,
    runtime_error,
    variant_name,
)

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
#: SageMaker's runtime returns at most 6 MB of a model's answer (InvokeEndpoint's quota).
MAX_RESPONSE_BYTES = 6 * 1024**2
#: Where each endpoint listens, per process, for a second: an invocation then skips the
#: database. Any connection error forgets it.
ROUTE_CACHE_SECONDS = 1.0
routes: dict[str, tuple[float, str, str]] = {}
#: What InvokeEndpoint reads of the endpoint's row (not the requests' copies).
_INVOKE_FIELDS = (
    "name",
    "key",
    "uid",
    "status",
    "port",
    "config",
    "generation",
    "launched_at",
    "host",
    "machine",
    "heartbeat",
)


class AnswerTooLarge(Exception):
    pass


def read_answer(response: http.client.HTTPResponse, deadline: float) -> bytes:
    """The model server's answer, read in pieces with a bound on its size and on the whole
    read's time (a server that drips a byte at a time cannot hold the caller longer)."""
    chunks, size = [], 0
    while chunk := response.read1(64 * 1024):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise AnswerTooLarge
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise TimeoutError
    return b"".join(chunks)


class Connections(threading.local):
    """Keep-alive HTTP connections to the model servers' unix sockets, one per server and
    thread."""

    def __init__(self) -> None:
        self.by_port: dict[str, http.client.HTTPConnection] = {}

    def get(self, port: str, timeout: float) -> http.client.HTTPConnection:
        conn = self.by_port.get(port)
        if conn is None:
            conn = self.by_port[port] = endpoint_host.UnixHTTPConnection(port, timeout=timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def drop(self, port: str) -> None:
        conn = self.by_port.pop(port, None)
        if conn is not None:
            conn.close()


connections = Connections()


def forget_route(name: str) -> None:
    routes.pop(name.lower(), None)


def invoke_endpoint(
    name: str,
    body: bytes,
    *,
    content_type: str = "application/json",
    accept: str | None = None,
    custom_attributes: str | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {"EndpointName": name, "Body": body}
    headers = {}
    for member, header, value in (
        ("ContentType", "Content-Type", content_type),
        ("Accept", "Accept", accept),
        ("CustomAttributes", CUSTOM_ATTRIBUTES, custom_attributes),
    ):
        if value is not None:
            params[member] = headers[header] = value
    # Before anything else, as the service does: the server never sees a refused request.
    api_limits.check(INVOKE, params)
    if isinstance(body, str):
        body = body.encode()
    route = routes.get(name.lower())
    if route is not None and route[0] > time.monotonic():
        _, port, variant = route
    else:
        port, variant = _route(name)
        routes[name.lower()] = (time.monotonic() + ROUTE_CACHE_SECONDS, port, variant)
    headers["Content-Length"] = str(len(body))
    timeout = settings.ANYJOB_LOCAL_INVOKE_TIMEOUT_SECONDS
    for attempt in (1, 2):
        conn = connections.get(port, timeout)
        reused = conn.sock is not None
        try:
            conn.request("POST", "/invocations", body=body, headers=headers)
            response = conn.getresponse()
            answer = read_answer(response, time.monotonic() + timeout)
            break
        except AnswerTooLarge:
            connections.drop(port)
            raise model_error(
                name,
                f"Received an invalid response from the primary container: the response is larger "
                f"than {MAX_RESPONSE_BYTES // 1024**2} MB, the most SageMaker's runtime returns.",
            ) from None
        except TimeoutError:
            connections.drop(port)
            forget_route(name)
            raise model_error(
                name,
                "Your invocation timed out while waiting for a response from container primary. "
                "Review the latency metrics for each container in Amazon CloudWatch, resolve the "
                f"issue, and try again. (anyjob: no answer within {timeout:g} s.)",
            ) from None
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
            connections.drop(port)
            forget_route(name)
            if reused and attempt == 1:
                continue  # the server closed an idle kept-alive connection: once more, afresh
            raise _unreachable(name, port, exc) from None
        except (OSError, http.client.HTTPException) as exc:
            connections.drop(port)
            forget_route(name)
            raise _unreachable(name, port, exc) from None
    if not 200 <= response.status < 300:
        raise container_error(name, response.status, answer)
    return {
        "Body": answer,
        "ContentType": response.getheader("Content-Type") or "application/octet-stream",
        "CustomAttributes": response.getheader(CUSTOM_ATTRIBUTES),
        "InvokedProductionVariant": variant,
    }


def _route(name: str) -> tuple[str, str]:
    """Where an InService endpoint's server listens (its unix socket), and its variant
    (from the database)."""
    endpoint = LocalEndpoint.objects.only(*_INVOKE_FIELDS).filter(key=name.lower()).first()
    if endpoint is None:
        raise runtime_error("ValidationError", f"Endpoint {name} of account {ACCOUNT} not found.")
    if endpoint.status != EndpointStatus.IN_SERVICE:
        raise runtime_error(
            "ValidationError",
            f"Endpoint {name} of account {ACCOUNT} is not in service: its status is {endpoint.status}.",
        )
    port = endpoint.port
    # A port whose host is gone may be anyone's by now (after a reboot): never send there.
    if port is None or not reattach.host_alive(endpoint):
        reattach.reattach(endpoint)
        raise runtime_error(
            "ServiceUnavailable",
            f"The model server of endpoint {name} is restarting; retry in a few seconds.",
        )
    socket = endpoint_host.socket_path(launch.endpoint_root(endpoint), endpoint.generation)
    return str(socket), variant_name(endpoint)


def _unreachable(name: str, port: str, exc: Exception) -> ClientError:
    """The error for a model server that did not answer at all."""
    endpoint = LocalEndpoint.objects.filter(key=name.lower()).first()
    if endpoint is None or endpoint.status == EndpointStatus.DELETING:
        return runtime_error(
            "ValidationError",
            f"Endpoint {name} of account {ACCOUNT} not found. (anyjob: it was deleted while the "
            f"request was on its way: {type(exc).__name__}.)",
        )
    if isinstance(exc, (ConnectionRefusedError, FileNotFoundError)):
        reattach.reattach(endpoint)
        return runtime_error(
            "ServiceUnavailable",
            f"The model server of endpoint {name} is not listening ({type(exc).__name__}); it is "
            "being restarted: retry in a few seconds.",
        )
    return model_error(
        name,
        f"The primary container closed the connection without answering ({type(exc).__name__}: "
        f"{exc}); its worker may have crashed or outlived SAGEMAKER_MODEL_SERVER_TIMEOUT. See "
        "the endpoint's log.",
    )
