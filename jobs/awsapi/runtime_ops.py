"""sagemaker-runtime's ``InvokeEndpoint`` (REST-JSON ``POST /endpoints/{EndpointName}/invocations``)
through the backend's ``invoke_endpoint``, with the runtime's limits and error shapes.

The body travels raw both ways. The request's ``Content-Type``, ``Accept`` and
``X-Amzn-SageMaker-Custom-Attributes`` go to the model server; the answer carries the model's
``Content-Type``, its custom attributes and ``x-Amzn-Invoked-Production-Variant``. Errors are
the runtime's JSON errors, as botocore parses them: the code in ``x-amzn-ErrorType``, the
message in the body's ``Message``, and a ``ModelError`` (HTTP 424) carries the container's
``OriginalStatusCode`` and ``OriginalMessage`` and the ``LogStreamArn`` of the endpoint's log.
Everyone on the team may invoke every endpoint (invoking changes nothing).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from botocore.exceptions import ClientError
from django.http import HttpRequest, HttpResponse

from jobs import api_limits
from jobs.awsapi.registry import ApiError, Context
from jobs.backends import get_backend

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
#: InvokeEndpoint's members sent as headers (botocore's ``location: header`` names).
_HEADERS = {
    "Accept": "Accept",
    "CustomAttributes": CUSTOM_ATTRIBUTES,
    "TargetModel": "X-Amzn-SageMaker-Target-Model",
    "TargetVariant": "X-Amzn-SageMaker-Target-Variant",
    "TargetContainerHostname": "X-Amzn-SageMaker-Target-Container-Hostname",
    "InferenceId": "X-Amzn-SageMaker-Inference-Id",
    "EnableExplanations": "X-Amzn-SageMaker-Enable-Explanations",
    "InferenceComponentName": "X-Amzn-SageMaker-Inference-Component",
    "SessionId": "X-Amzn-SageMaker-Session-Id",
}
#: What the runtime refuses here rather than quietly ignoring (an emulated endpoint has one
#: model, one container and one variant).
_UNSUPPORTED = ("TargetModel", "TargetContainerHostname", "InferenceComponentName", "EnableExplanations")
#: The JSON body of a ModelError, as the runtime's own: whose fault it was.
_MODEL_ERROR_CODES = {"client": "CLIENT_ERROR_FROM_MODEL", "server": "SERVER_ERROR_FROM_MODEL"}


def invoke(ctx: Context, endpoint_name: str, request: HttpRequest) -> HttpResponse:
    """Answer one ``InvokeEndpoint`` request (already authenticated as ``ctx.user``)."""
    params: dict[str, Any] = {"EndpointName": endpoint_name, "Body": request.body}
    content_type = request.META.get("CONTENT_TYPE")
    if content_type:
        params["ContentType"] = content_type
    for member, header in _HEADERS.items():
        value = request.headers.get(header)
        if value:
            params[member] = value
    try:
        return _invoke(ctx, params)
    except ApiError as exc:
        return error_response(ctx, exc.code, exc.message, exc.status)
    except ClientError as exc:
        return client_error_response(ctx, exc)


def _invoke(ctx: Context, params: dict[str, Any]) -> HttpResponse:
    problems = api_limits.validate("InvokeEndpoint", params)
    if problems:
        message = api_limits.aws_error_message(problems) or problems[0].message
        raise ApiError("ValidationError", message)
    for member in _UNSUPPORTED:
        if member in params:
            raise ApiError(
                "ValidationError", f"{member} is not supported: the endpoint has one model and one container."
            )
    backend = get_backend()
    headers = {"content_type": params["ContentType"]} if "ContentType" in params else {}
    answer = backend.invoke_endpoint(
        params["EndpointName"],
        params["Body"],
        accept=params.get("Accept"),
        custom_attributes=params.get("CustomAttributes"),
        **headers,
    )
    variant = answer.get("InvokedProductionVariant") or "AllTraffic"
    if params.get("TargetVariant") not in (None, variant):
        raise ApiError(
            "ValidationError",
            f"The variant {params['TargetVariant']} is not one of the endpoint's ({variant}).",
        )
    response = HttpResponse(
        answer.get("Body", b""), content_type=answer.get("ContentType") or "application/octet-stream"
    )
    response["x-Amzn-Invoked-Production-Variant"] = variant
    if answer.get("CustomAttributes"):
        response[CUSTOM_ATTRIBUTES] = answer["CustomAttributes"]
    response["x-amzn-RequestId"] = ctx.request_id
    return response


def client_error_response(ctx: Context, exc: ClientError) -> HttpResponse:
    """The backend's runtime error (``jobs.backends.local.shapes.runtime_error`` and AWS's own)
    as the runtime answers it."""
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400
    extra = {
        key: exc.response[key]
        for key in ("OriginalStatusCode", "OriginalMessage", "LogStreamArn")
        if key in exc.response
    }
    code = error.get("Code") or "ValidationError"
    return error_response(ctx, code, error.get("Message") or str(exc), int(status), **extra)


def error_response(ctx: Context, code: str, message: str, status: int = 400, **extra: Any) -> HttpResponse:
    body: dict[str, Any] = {"Message": message, **extra}
    if code == "ModelError" and "OriginalStatusCode" in extra:
        fault = "client" if 400 <= int(extra["OriginalStatusCode"]) < 500 else "server"
        body = {"ErrorCode": _MODEL_ERROR_CODES[fault], **body}
    response = HttpResponse(json.dumps(body), status=status, content_type="application/json")
    response["x-amzn-ErrorType"] = f"{code}:http://internal.amazon.com/coral/com.amazon.sagemaker/"
    response["x-amzn-RequestId"] = ctx.request_id or str(uuid.uuid4())
    return response
