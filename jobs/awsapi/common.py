"""What the SageMaker handlers share: the service model's rules as API errors, the backend's
``ClientError`` as an ``ApiError``, JSON timestamps as datetimes, answers cut to their shape, and
who may change a resource.

A request through the API meets exactly the rules a form request meets (``jobs.api_limits`` on
``backend.api_shaped`` of it, then the backend's own ``preflight``), so its message is AWS's own
("1 validation error detected: Value '…' at 'trainingJobName' failed to satisfy constraint: …").
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError
from botocore.utils import parse_to_aware_datetime

from jobs import api_limits
from jobs.awsapi.registry import ApiError, Context

#: Tags whose key starts with this are anyjob's own (the row ids, the owner): never accepted
#: from a request, never shown by ListTags.
RESERVED_TAG_PREFIX = "anyjob:"
#: The tag naming the user who made a model, endpoint config or endpoint through the API (the
#: dashboard's own carry ``anyjob:endpoint-id``, whose row has the owner).
OWNER_TAG = "anyjob:owner-id"
#: The account in ARNs the API makes itself (as the local emulator's).
ACCOUNT = "000000000000"


def check(operation: str, params: Mapping[str, Any], backend: Any = None) -> None:
    """Refuse ``params`` as AWS does (``ValidationException``, AWS's message) when the service
    model's rules — or, given ``backend``, what it refuses beyond them — say no."""
    shaped = backend.api_shaped(operation, params) if backend is not None else params
    problems = api_limits.validate(operation, shaped)
    if problems:
        raise ApiError("ValidationException", api_limits.aws_error_message(problems) or problems[0].message)
    if backend is not None:
        refused = backend.preflight(params, operation)
        if refused:
            raise ApiError("ValidationException", refused[0][1])


def refuse_reserved_tags(tags: Any) -> None:
    for tag in tags or []:
        key = tag.get("Key", "") if isinstance(tag, Mapping) else ""
        if isinstance(key, str) and key.lower().startswith(RESERVED_TAG_PREFIX):
            raise ApiError(
                "ValidationException",
                f"Tag keys starting with '{RESERVED_TAG_PREFIX}' are reserved for anyjob: {key!r} "
                "cannot be set.",
            )


def from_client_error(exc: ClientError) -> ApiError:
    """The backend's refusal, as the API answers it (the same code, message and status)."""
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400
    return ApiError(error.get("Code") or "ValidationException", error.get("Message") or str(exc), int(status))


def call(method: Any, *args: Any, **kwargs: Any) -> Any:
    """``method(*args, **kwargs)`` with a ``ClientError`` turned into the API's error."""
    try:
        return method(*args, **kwargs)
    except ClientError as exc:
        raise from_client_error(exc) from None


def timestamps(operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with its top-level timestamp members as datetimes (JSON carries epoch seconds),
    as boto3 would have passed them to the backend."""
    shape = _input_shape(operation)
    out = dict(params)
    for name, member in shape.members.items():
        if member.type_name == "timestamp" and name in out and not isinstance(out[name], datetime):
            try:
                out[name] = parse_to_aware_datetime(out[name])
            except (TypeError, ValueError, AttributeError):
                raise ApiError(
                    "ValidationException", f"Value '{out[name]}' at '{name}' is not a valid timestamp."
                ) from None
    return out


def shaped(operation: str, answer: Mapping[str, Any]) -> dict[str, Any]:
    """``answer`` with only the top-level members the operation's output shape declares (a
    backend's describe may carry its request's ``Tags``, which the service never returns)."""
    members = _output_members(operation)
    return {k: v for k, v in answer.items() if k in members and v is not None}


@functools.cache
def _input_shape(operation: str) -> Any:
    return _service().operation_model(operation).input_shape


@functools.cache
def _output_members(operation: str) -> frozenset[str]:
    shape = _service().operation_model(operation).output_shape
    return frozenset(shape.members) if shape is not None else frozenset()


@functools.cache
def _service() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker")


def preload() -> None:
    """Load SageMaker's service model now (``webapp.wsgi.settle``), not in the first API call."""
    _service()


def user_arn(ctx: Context) -> str:
    name = getattr(ctx.user, "username", "") or "anonymous"
    return f"arn:aws:iam::{ACCOUNT}:user/{name}"


def access_denied(ctx: Context, operation: str, resource_arn: str) -> ApiError:
    """AWS's refusal of an action on someone else's resource (IAM's wording)."""
    return ApiError(
        "AccessDeniedException",
        f"User: {user_arn(ctx)} is not authorized to perform: sagemaker:{operation} on resource: "
        f"{resource_arn} because it belongs to another user (only its owner or staff may change it)",
    )


def arn_for(kind: str, name: str, region: str) -> str:
    """The ARN of a resource the backend does not (yet) describe, as SageMaker writes it."""
    return f"arn:aws:sagemaker:{region}:{ACCOUNT}:{kind}/{name.lower()}"
