"""The API's operation table: ``(service, operation) → handler``, and the error handlers raise.

A handler is ``handler(ctx: Context, params: dict) -> dict``: ``params`` is the request as
botocore's service model shapes it (JSON input, or a query request parsed into the same shape),
the return value is the output shape. Protocol framing (JSON bodies, query XML, status codes,
error shapes) is the dispatcher's (``jobs.awsapi.views``), never a handler's.

Services are named as botocore signs them: ``sagemaker`` (SageMaker, and the runtime's
InvokeEndpoint, which the dispatcher routes by path), ``logs``, ``sts``, ``iam``, ``s3``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[["Context", dict[str, Any]], dict[str, Any]]

OPERATIONS: dict[tuple[str, str], Handler] = {}


@dataclass
class Context:
    """Who is asking, and where: the key's user, the signed region, the request's id."""

    user: Any
    region: str
    request_id: str
    access_key_id: str = ""
    #: The Django request (headers, raw body for REST protocols).
    http: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class ApiError(Exception):
    """An AWS error: ``code`` (e.g. ``ValidationException``), ``message`` as AWS words it, and the
    HTTP ``status`` (400 unless said). The dispatcher renders it in the protocol's error shape."""

    def __init__(self, code: str, message: str, status: int = 400, *, sender_fault: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.sender_fault = sender_fault


def operation(service: str, name: str) -> Callable[[Handler], Handler]:
    """Register ``handler`` for ``service``'s operation ``name`` (botocore's operation name)."""

    def register(handler: Handler) -> Handler:
        key = (service, name)
        if key in OPERATIONS:
            raise RuntimeError(f"{service}:{name} is registered twice")
        OPERATIONS[key] = handler
        return handler

    return register


def validation(message: str) -> ApiError:
    return ApiError("ValidationException", message)
