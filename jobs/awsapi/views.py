"""The API's front door: ``/aws/`` — verify the signature, pick the protocol, call the handler.

Requests are routed by the service signed in the credential scope (what botocore signs with):

=============  ===========================================  ======================================
service        request                                      protocol
=============  ===========================================  ======================================
``sagemaker``  ``X-Amz-Target: SageMaker.<Op>``             awsJson1.1 (``registry.OPERATIONS``)
``sagemaker``  ``POST /endpoints/<name>/invocations``       REST-JSON: ``runtime_ops.invoke``
``logs``       ``X-Amz-Target: Logs_20140328.<Op>``         awsJson1.1
``sts``/``iam`` form ``Action=…&Version=…``                 query (XML answers)
``s3``         anything else, path-style ``/<bucket>/<key>`` REST-XML: ``s3.handle``
=============  ===========================================  ======================================

A request that is not signed at all is answered in the protocol its shape implies (an
``X-Amz-Target`` header: JSON; a form with ``Action``: query; otherwise S3's XML).

Contract with the other modules (imported when first needed, so the front door works while
they are being written):

- ``jobs.awsapi.runtime_ops.invoke(ctx, endpoint_name, request) -> HttpResponse`` (raises
  ``ApiError``). The body has been read and its hash checked: ``request.body`` and
  ``ctx.extra["body"]`` hold it.
- ``jobs.awsapi.s3.handle(ctx, request, path) -> HttpResponse``. ``path`` is the decoded path
  after ``/aws`` (``/`` or ``/<bucket>[/<key>]``); ``ctx.extra["raw_path"]`` is the path as the
  client encoded it; ``ctx.extra["signed"]`` is the ``sigv4.SignedRequest`` (payload hash,
  seed signature, signing key, scope, timestamp for aws-chunked bodies). The body is not read
  here: S3 streams it, checks ``payload_sha256`` as it reads, and answers its own XML errors.

Limits: JSON and query bodies are read whole, at most ``MAX_JSON_BODY`` (SageMaker's 6 MiB for
an invocation), else HTTP 413 as AWS's front end answers it; S3 bodies are streamed, so
Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (which applies only to ``request.body``/``POST``) never
applies to them. The view is CSRF-exempt (a signature, not a cookie, authenticates it) and
never renders an HTML error: anything unexpected is an ``InternalFailure`` in the protocol's
shape, logged with the request id.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import re
import uuid
from typing import Any
from urllib.parse import unquote_to_bytes

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from jobs.awsapi import replay, sigv4
from jobs.awsapi.registry import OPERATIONS, ApiError, Context
from jobs.awsapi.sigv4 import AuthError

log = logging.getLogger("anyjob.awsapi")

PREFIX = "/aws"
#: A JSON or query request body: SageMaker's control plane caps requests well below this; an
#: InvokeEndpoint body is at most 6 MiB (jobs.endpoints.models.MAX_BODY_BYTES).
MAX_JSON_BODY = 6_291_456
#: Past the limit the rest of the body is still read (and dropped), up to this much, so the
#: client gets the 413 instead of a connection reset while it is still sending.
DRAIN_LIMIT = 64 * 1024 * 1024
JSON_TARGETS = {"SageMaker": "sagemaker", "Logs_20140328": "logs"}
QUERY_SERVICES = {
    "sts": ("2011-06-15", "https://sts.amazonaws.com/doc/2011-06-15/"),
    "iam": ("2010-05-08", "https://iam.amazonaws.com/doc/2010-05-08/"),
}
INVOCATIONS = re.compile(r"^/endpoints/([^/]+)/invocations$")
_OPERATION_NAME = re.compile(r"[A-Za-z0-9]{1,100}")
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"

#: An authentication failure's code and HTTP status, per protocol, as AWS answers it.
AUTH_ERRORS: dict[str, dict[str, tuple[str, int]]] = {
    "json": {
        "missing": ("MissingAuthenticationTokenException", 403),
        "malformed": ("IncompleteSignatureException", 400),
        "unknown_key": ("UnrecognizedClientException", 400),
        "revoked": ("UnrecognizedClientException", 400),
        "bad_signature": ("InvalidSignatureException", 400),
        "expired": ("InvalidSignatureException", 400),
        "presign_expired": ("InvalidSignatureException", 400),
        "payload_mismatch": ("InvalidSignatureException", 400),
        "replayed": ("InvalidSignatureException", 400),
    },
    "query": {
        "missing": ("MissingAuthenticationToken", 403),
        "malformed": ("IncompleteSignature", 400),
        "unknown_key": ("InvalidClientTokenId", 403),
        "revoked": ("InvalidClientTokenId", 403),
        "bad_signature": ("SignatureDoesNotMatch", 403),
        "expired": ("SignatureDoesNotMatch", 403),
        "presign_expired": ("SignatureDoesNotMatch", 403),
        "payload_mismatch": ("SignatureDoesNotMatch", 403),
        "replayed": ("SignatureDoesNotMatch", 403),
    },
    "s3": {
        "missing": ("AccessDenied", 403),
        "malformed": ("AuthorizationHeaderMalformed", 400),
        "unknown_key": ("InvalidAccessKeyId", 403),
        "revoked": ("InvalidAccessKeyId", 403),
        "bad_signature": ("SignatureDoesNotMatch", 403),
        "expired": ("RequestTimeTooSkewed", 403),
        "presign_expired": ("AccessDenied", 403),
        "payload_mismatch": ("XAmzContentSHA256Mismatch", 400),
        "replayed": ("AccessDenied", 403),
    },
}
UNKNOWN_KEY_MESSAGE = "The security token included in the request is invalid."
S3_MESSAGES = {
    "missing": "Access Denied",
    "unknown_key": "The AWS Access Key Id you provided does not exist in our records.",
    "revoked": "The AWS Access Key Id you provided does not exist in our records.",
    "bad_signature": "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method.",
    "expired": "The difference between the request time and the current time is too large.",
}


# --- the view ----------------------------------------------------------------------------------


@csrf_exempt
def api(request: HttpRequest, rest: str | None = None) -> HttpResponse:
    request_id = str(uuid.uuid4())
    path = "/" + (rest or "")
    query = _query_dict(request.META.get("QUERY_STRING", ""))
    service = sigv4.claimed_service(request.META, query)
    protocol = _protocol(request, service, path)
    try:
        return _serve(request, request_id, protocol, service, path, query)
    except AuthError as e:
        return auth_error_response(protocol, e, request_id)
    except ApiError as e:
        return error_response(protocol, e, request_id, service or "")
    except Exception:
        log.exception("API request %s failed", request_id)
        failure = ApiError(
            "InternalFailure", "The request processing has failed because of an unknown error.", 500
        )
        return error_response(protocol, failure, request_id, service or "")


def _protocol(request: HttpRequest, service: str | None, path: str) -> str:
    if service == "s3":
        return "s3"
    if service in QUERY_SERVICES:
        return "query"
    if service in ("sagemaker", "logs") or request.META.get("HTTP_X_AMZ_TARGET"):
        if INVOCATIONS.match(path) and not request.META.get("HTTP_X_AMZ_TARGET"):
            return "rest-json"
        return "json"
    if request.META.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        return "query"
    if INVOCATIONS.match(path) and request.method == "POST":
        return "rest-json"
    return "s3"


def _serve(
    request: HttpRequest,
    request_id: str,
    protocol: str,
    service: str | None,
    path: str,
    query: dict[str, str],
) -> HttpResponse:
    body = None if protocol == "s3" else _read_body(request)
    signed = sigv4.verify(request.method or "GET", request.META, query, body, _lookup_key)
    key = signed.key
    ctx = Context(
        user=key.user,
        region=signed.credential.region,
        request_id=request_id,
        access_key_id=key.access_key_id,
        http=request,
        extra={"signed": signed, "raw_path": sigv4.raw_path(request.META)[len(PREFIX) :] or "/"},
    )
    key.touch()
    if protocol == "s3":
        from jobs.awsapi import s3

        response = s3.handle(ctx, request, path)
        response.setdefault("x-amz-request-id", request_id)
        return response
    assert body is not None
    ctx.extra["body"] = body
    request._body = body
    if protocol == "rest-json":
        match = INVOCATIONS.match(path)
        if signed.credential.service != "sagemaker" or not match or request.method != "POST":
            raise ApiError("UnknownOperationException", "The requested operation is not recognized.")
        from jobs.awsapi import runtime_ops

        response = runtime_ops.invoke(
            ctx, unquote_to_bytes(match.group(1)).decode("utf-8", "replace"), request
        )
        response.setdefault("x-amzn-RequestId", request_id)
        return response
    if protocol == "json":
        op, params = _json_request(request, signed.credential.service, body)
    else:
        op, params = _query_request(request, signed.credential.service, body, query)
    handler = OPERATIONS.get((signed.credential.service, op))
    if handler is None:
        if protocol == "query":
            version = QUERY_SERVICES[signed.credential.service][0]
            raise ApiError("InvalidAction", f"Could not find operation {op} for version {version}")
        raise ApiError("UnknownOperationException", "The requested operation is not recognized.")
    with replay.guard(signed, op) as outcome:
        result = handler(ctx, params)
        outcome.succeeded()
    if protocol == "json":
        return json_response(result, request_id)
    return query_response(signed.credential.service, op, result, request_id)


def _lookup_key(access_key_id: str):
    from jobs.awsapi.models import AccessKey

    key = AccessKey.with_user(access_key_id)
    if key is None or not key.user.is_active:
        raise AuthError("unknown_key", UNKNOWN_KEY_MESSAGE)
    if key.revoked_at is not None:
        raise AuthError("revoked", UNKNOWN_KEY_MESSAGE)
    return key, key.signing_key


def _query_dict(query_string: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in query_string.split("&"):
        if part:
            k, _, v = part.partition("=")
            out.setdefault(
                unquote_to_bytes(k).decode("utf-8", "replace"), unquote_to_bytes(v).decode("utf-8", "replace")
            )
    return out


def _read_body(request: HttpRequest) -> bytes:
    """The whole body of a JSON/query request, or the AWS front end's 413 past the limit."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_JSON_BODY:
        _drain(request, declared)
        raise too_large()
    body = request.read(MAX_JSON_BODY + 1)
    if len(body) > MAX_JSON_BODY:
        _drain(request, DRAIN_LIMIT)
        raise too_large()
    return body


def _drain(request: HttpRequest, declared: int) -> None:
    if declared > DRAIN_LIMIT:
        return
    while request.read(1 << 20):
        pass


def too_large() -> ApiError:
    return ApiError("413", f"HTTP content length exceeded {MAX_JSON_BODY} bytes.", 413)


# --- awsJson1.1 ---------------------------------------------------------------------------------


def _json_request(request: HttpRequest, service: str, body: bytes) -> tuple[str, dict[str, Any]]:
    target = request.META.get("HTTP_X_AMZ_TARGET", "")
    prefix, _, op = target.partition(".")
    if request.method != "POST" or JSON_TARGETS.get(prefix) != service or not _OPERATION_NAME.fullmatch(op):
        raise ApiError("UnknownOperationException", "The requested operation is not recognized.")
    if (service, op) not in OPERATIONS:
        raise ApiError("UnknownOperationException", "The requested operation is not recognized.")
    if not body.strip():
        return op, {}
    try:
        params = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(
            "SerializationException", "Start of structure or map found where not expected."
        ) from None
    if not isinstance(params, dict):
        raise ApiError("SerializationException", "Start of structure or map expected.")
    return op, params


class _AwsJsonEncoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, dt.datetime):
            if timezone.is_naive(o):
                o = o.replace(tzinfo=dt.UTC)
            return o.timestamp()
        if isinstance(o, dt.date):
            return dt.datetime(o.year, o.month, o.day, tzinfo=dt.UTC).timestamp()
        if isinstance(o, bytes):
            import base64

            return base64.b64encode(o).decode()
        return super().default(o)


#: One encoder for every answer (it keeps no state between calls).
_ENCODER = _AwsJsonEncoder(separators=(",", ":"))


def json_response(result: dict[str, Any], request_id: str, status: int = 200) -> HttpResponse:
    response = HttpResponse(
        _ENCODER.encode(result),
        status=status,
        content_type=JSON_CONTENT_TYPE,
    )
    response["x-amzn-RequestId"] = request_id
    return response


# --- errors in each protocol's shape --------------------------------------------------------------


def auth_error_response(protocol: str, e: AuthError, request_id: str) -> HttpResponse:
    table = AUTH_ERRORS["json" if protocol == "rest-json" else protocol]
    code, status = table.get(e.kind, table["bad_signature"])
    message = e.message
    if protocol == "json" and e.kind == "missing":
        message = "Missing Authentication Token"
    if protocol in ("json", "rest-json", "query") and e.kind in ("unknown_key", "revoked"):
        message = UNKNOWN_KEY_MESSAGE
    if protocol == "s3":
        message = S3_MESSAGES.get(e.kind, message)
        extra = (
            {"AWSAccessKeyId": e.access_key_id}
            if e.kind in ("unknown_key", "revoked", "bad_signature")
            else {}
        )
        return s3_error(code, message, status, request_id, extra)
    return error_response(protocol, ApiError(code, message, status), request_id, e.service)


def error_response(protocol: str, e: ApiError, request_id: str, service: str) -> HttpResponse:
    if protocol == "s3":
        return s3_error(e.code, e.message, e.status, request_id)
    if protocol == "query":
        namespace = QUERY_SERVICES.get(service, QUERY_SERVICES["sts"])[1]
        kind = "Sender" if e.sender_fault and e.status < 500 else "Receiver"
        body = (
            f'<ErrorResponse xmlns="{namespace}"><Error><Type>{kind}</Type><Code>{_xml(e.code)}</Code>'
            f"<Message>{_xml(e.message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        response = HttpResponse(body, status=e.status, content_type="text/xml")
        response["x-amzn-RequestId"] = request_id
        return response
    if e.code.isdigit():  # the front end's own answer (413): a message, no type
        response = json_response({"message": e.message}, request_id, e.status)
        response["Content-Type"] = "application/json"
        return response
    response = json_response({"__type": e.code, "message": e.message}, request_id, e.status)
    response["x-amzn-ErrorType"] = e.code
    if protocol == "rest-json":
        response["Content-Type"] = "application/json"
    return response


def s3_error(
    code: str, message: str, status: int, request_id: str, extra: dict[str, str] | None = None
) -> HttpResponse:
    fields = "".join(f"<{k}>{_xml(v)}</{k}>" for k, v in (extra or {}).items())
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{_xml(code)}</Code><Message>{_xml(message)}</Message>{fields}"
        f"<RequestId>{request_id}</RequestId></Error>"
    )
    response = HttpResponse(body, status=status, content_type="application/xml")
    response["x-amz-request-id"] = request_id
    return response


def _xml(value: Any) -> str:
    text = str(value)
    # Characters XML 1.0 cannot carry at all are dropped; the rest escaped.
    text = re.sub(r"[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]", "", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


# --- the query protocol (STS, IAM) -----------------------------------------------------------------


@functools.cache
def service_model(service: str):
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


def _query_request(
    request: HttpRequest, service: str, body: bytes, query: dict[str, str]
) -> tuple[str, dict[str, Any]]:
    if request.method == "POST":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError("MalformedInput", "The request body is not UTF-8 form data.") from None
        form = _query_dict(text.replace("+", "%20"))
    else:
        form = {k: v for k, v in query.items() if not k.startswith("X-Amz-")}
    action = form.pop("Action", "")
    version = form.pop("Version", "")
    expected_version = QUERY_SERVICES[service][0]
    if not action:
        raise ApiError("MissingAction", "Missing Action")
    if not _OPERATION_NAME.fullmatch(action):
        raise ApiError(
            "InvalidAction", f"Could not find operation {action[:100]} for version {expected_version}"
        )
    if version and version != expected_version:
        raise ApiError("InvalidAction", f"Could not find operation {action} for version {version}")
    model = service_model(service)
    if action not in model.operation_names or (service, action) not in OPERATIONS:
        raise ApiError("InvalidAction", f"Could not find operation {action} for version {expected_version}")
    shape = model.operation_model(action).input_shape
    return action, _parse_query_shape(shape, form, "") if shape is not None else {}


def _parse_query_shape(shape, form: dict[str, str], prefix: str) -> Any:
    """Flattened query keys (``ActionNames.member.1``, ``Tags.member.2.Key``) → the input shape."""
    kind = shape.type_name
    if kind == "structure":
        out: dict[str, Any] = {}
        for name, member in shape.members.items():
            key = f"{prefix}{member.serialization.get('name', name)}"
            if member.type_name in ("structure", "list", "map"):
                if any(k == key or k.startswith(key + ".") for k in form):
                    out[name] = _parse_query_shape(member, form, key + ".")
            elif key in form:
                out[name] = _scalar(member, form[key], key)
        return out
    if kind == "list":
        base = prefix.rstrip(".")
        if form.get(base) == "":  # an empty list is sent as "Name="
            return []
        items = []
        n = 1
        while n <= 1000:
            item_key = f"{base}.member.{n}"
            if shape.member.type_name in ("structure", "list", "map"):
                if not any(k.startswith(item_key + ".") for k in form):
                    break
                items.append(_parse_query_shape(shape.member, form, item_key + "."))
            else:
                if item_key not in form:
                    break
                items.append(_scalar(shape.member, form[item_key], item_key))
            n += 1
        return items
    if kind == "map":
        base = prefix.rstrip(".")
        out_map: dict[str, Any] = {}
        n = 1
        while f"{base}.entry.{n}.key" in form and n <= 1000:
            out_map[form[f"{base}.entry.{n}.key"]] = _scalar(
                shape.value, form.get(f"{base}.entry.{n}.value", ""), base
            )
            n += 1
        return out_map
    return _scalar(shape, form.get(prefix.rstrip("."), ""), prefix)


def _scalar(shape, value: str, key: str) -> Any:
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            return int(value)
        if kind in ("float", "double"):
            return float(value)
    except ValueError:
        raise ApiError(
            "ValidationError",
            f"Value '{value[:100]}' at '{key}' failed to satisfy constraint: Member must be a number",
        ) from None
    if kind == "boolean":
        return value.lower() == "true"
    return value


def query_response(service: str, op: str, result: dict[str, Any], request_id: str) -> HttpResponse:
    namespace = QUERY_SERVICES[service][1]
    output = service_model(service).operation_model(op).output_shape
    inner = _xml_shape(output, result) if output is not None else ""
    body = (
        f'<{op}Response xmlns="{namespace}">\n  <{op}Result>{inner}</{op}Result>\n'
        f"  <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n  </ResponseMetadata>\n"
        f"</{op}Response>\n"
    )
    response = HttpResponse(body, content_type="text/xml")
    response["x-amzn-RequestId"] = request_id
    return response


def _xml_shape(shape, value: Any) -> str:
    kind = shape.type_name
    if kind == "structure":
        parts = []
        for name, member in shape.members.items():
            if name in value and value[name] is not None:
                tag = member.serialization.get("name", name)
                parts.append(f"<{tag}>{_xml_shape(member, value[name])}</{tag}>")
        return "".join(parts)
    if kind == "list":
        return "".join(f"<member>{_xml_shape(shape.member, item)}</member>" for item in value)
    if kind == "map":
        return "".join(
            f"<entry><key>{_xml(k)}</key><value>{_xml_shape(shape.value, v)}</value></entry>"
            for k, v in value.items()
        )
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "timestamp" and isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _xml(value)
