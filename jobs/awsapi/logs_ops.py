"""CloudWatch Logs over the backend's job and endpoint logs (what SDK v2's ``fit(logs=…)``,
``aws logs tail`` and ``aws logs get-log-events`` call).

Groups: ``/aws/sagemaker/TrainingJobs`` (streams ``<job>/algo-1-<epoch>``) and
``/aws/sagemaker/Endpoints/<name>``. Events are read through the configured backend
(``get_training_logs``/``get_endpoint_logs``, which merge a job's streams), so the API shows
what the dashboard shows, on either backend.

Tokens are opaque to clients (base64 JSON): a ``GetLogEvents`` forward token carries the
backend's own token and the stream's event index there, so following a log reads only what is
new; when nothing is new the same token comes back, as CloudWatch does. ``DescribeLogStreams``
pages by offset and never returns a ``nextToken`` with its last page (SDK v2 loops forever if
it does). ``FilterLogEvents`` pages by the last event returned (timestamp, eventId), which new
events do not shift. A stream's index makes its ``eventId``, so ``aws logs tail --follow``
(which de-duplicates by id) prints each line once.

Bounds: one request reads at most ``MAX_SCAN`` events from the backend; listing streams
without a job-name prefix looks at the ``MAX_JOBS`` most recent jobs.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from jobs.awsapi.identity_ops import account_id
from jobs.awsapi.registry import ApiError, Context, operation

TRAINING_GROUP = "/aws/sagemaker/TrainingJobs"
ENDPOINT_GROUP_PREFIX = "/aws/sagemaker/Endpoints/"
MAX_SCAN = 200_000
MAX_JOBS = 100
PAGE = 10_000
MAX_TOKEN = 4096
MAX_PATTERN = 1024

Reader = Callable[..., dict[str, Any]]


def _invalid(message: str) -> ApiError:
    return ApiError("InvalidParameterException", message)


def _no_group() -> ApiError:
    return ApiError("ResourceNotFoundException", "The specified log group does not exist.")


def _no_stream() -> ApiError:
    return ApiError("ResourceNotFoundException", "The specified log stream does not exist.")


def _backend():
    from jobs.backends import get_backend

    return get_backend()


def _encode(state: dict[str, Any], prefix: str = "") -> str:
    raw = base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()
    return prefix + raw


def _decode(token: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN or not token.startswith(prefix):
        raise _invalid("The specified nextToken is invalid.")
    try:
        state = json.loads(base64.urlsafe_b64decode(token[len(prefix) :].encode()))
    except (ValueError, binascii.Error):
        raise _invalid("The specified nextToken is invalid.") from None
    if not isinstance(state, dict):
        raise _invalid("The specified nextToken is invalid.")
    return state


def _int(params: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    value = params.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(
            f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy constraint: "
            f"Member must have value between {low} and {high}"
        )
    return value


def _group(params: dict[str, Any]) -> tuple[str, str | None]:
    """("training", None) or ("endpoint", name) for the request's logGroupName."""
    group = params.get("logGroupName") or params.get("logGroupIdentifier")
    if not isinstance(group, str) or not group:
        raise _invalid(
            "1 validation error detected: Value null at 'logGroupName' failed to satisfy constraint: "
            "Member must not be null"
        )
    if group.startswith("arn:"):
        group = group.split(":log-group:", 1)[-1].removesuffix(":*")
    if group == TRAINING_GROUP:
        return "training", None
    if group.startswith(ENDPOINT_GROUP_PREFIX):
        name = group[len(ENDPOINT_GROUP_PREFIX) :]
        if re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name):
            return "endpoint", name
    raise _no_group()


def _reader(kind: str, owner: str) -> Callable[[str | None, int], dict[str, Any]]:
    backend = _backend()
    read = backend.get_training_logs if kind == "training" else backend.get_endpoint_logs

    def page(token: str | None, limit: int) -> dict[str, Any]:
        try:
            return read(owner, next_token=token, limit=limit)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("ValidationException", "ResourceNotFound", "ResourceNotFoundException"):
                raise (_no_group() if kind == "endpoint" else _no_stream()) from None
            raise _invalid(e.response.get("Error", {}).get("Message", "The log could not be read.")) from None

    return page


def _scan(
    page: Callable[[str | None, int], dict[str, Any]], token: str | None = None
) -> Iterator[tuple[dict, str]]:
    """Every event from ``token`` on, with the backend token after the page it came in."""
    seen = 0
    while seen < MAX_SCAN:
        result = page(token, PAGE)
        events = result.get("events") or []
        if not events:
            return
        token = result.get("nextForwardToken")
        for event in events:
            yield event, token or ""
        seen += len(events)


def _event_id(stream: str, index: int) -> str:
    return f"{zlib.crc32(stream.encode()):010d}{index:020d}"


def _streams(kind: str, owner: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for event, _ in _scan(_reader(kind, owner)):
        info = out.setdefault(
            event["logStreamName"],
            {"first": event["timestamp"], "last": event["timestamp"], "ingested": 0},
        )
        info["first"] = min(info["first"], event["timestamp"])
        info["last"] = max(info["last"], event["timestamp"])
        info["ingested"] = max(info["ingested"], event.get("ingestionTime") or event["timestamp"])
    return out


def _group_name(kind: str, owner: str | None) -> str:
    return TRAINING_GROUP if kind == "training" else ENDPOINT_GROUP_PREFIX + str(owner)


def _stream_arn(ctx: Context, group: str, stream: str) -> str:
    return f"arn:aws:logs:{ctx.region}:{account_id()}:log-group:{group}:log-stream:{stream}"


def _job_names(prefix: str | None) -> list[str]:
    """Jobs whose streams may match ``prefix``: the job the prefix names, else recent jobs."""
    if prefix and "/" in prefix:
        return [prefix.split("/", 1)[0]]
    params: dict[str, Any] = {"MaxResults": 100, "SortBy": "CreationTime", "SortOrder": "Descending"}
    if prefix:
        params["NameContains"] = prefix
    names: list[str] = []
    while len(names) < MAX_JOBS:
        page = _backend().list_training_jobs(**params)
        names += [s["TrainingJobName"] for s in page.get("TrainingJobSummaries", [])]
        if not page.get("NextToken"):
            break
        params["NextToken"] = page["NextToken"]
    return [n for n in names[:MAX_JOBS] if not prefix or n.startswith(prefix)]


def _candidate_streams(kind: str, owner: str | None, prefix: str | None) -> dict[str, dict[str, Any]]:
    if kind == "endpoint":
        streams = _streams(kind, str(owner))
    else:
        streams = {}
        for job in _job_names(prefix):
            try:
                streams.update({k: {**v, "job": job} for k, v in _streams("training", job).items()})
            except ApiError:
                continue  # a job the backend no longer knows
    return {k: v for k, v in streams.items() if not prefix or k.startswith(prefix)}


@operation("logs", "DescribeLogStreams")
def describe_log_streams(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    kind, owner = _group(params)
    prefix = params.get("logStreamNamePrefix")
    order = params.get("orderBy", "LogStreamName")
    if order not in ("LogStreamName", "LastEventTime"):
        raise _invalid(
            f"1 validation error detected: Value '{order}' at 'orderBy' failed to satisfy constraint: "
            "Member must satisfy enum value set: [LogStreamName, LastEventTime]"
        )
    if prefix is not None and order == "LastEventTime":
        raise _invalid("Cannot order by LastEventTime with a logStreamNamePrefix.")
    if prefix is not None and (not isinstance(prefix, str) or not 1 <= len(prefix) <= 512):
        raise _invalid("logStreamNamePrefix must be 1 to 512 characters.")
    limit = _int(params, "limit", 50, 1, 50)
    assert limit is not None
    offset = int(_decode(params["nextToken"], "o/").get("o", 0)) if params.get("nextToken") else 0
    if kind == "endpoint" and owner is not None:
        _reader(kind, owner)(None, 1)  # the group exists only if the endpoint does
    streams = _candidate_streams(kind, owner, prefix)
    if order == "LogStreamName":
        names = sorted(streams, reverse=bool(params.get("descending")))
    else:
        names = sorted(streams, key=lambda s: (streams[s]["last"], s), reverse=bool(params.get("descending")))
    group = _group_name(kind, owner)
    page = names[offset : offset + limit]
    result: dict[str, Any] = {
        "logStreams": [
            {
                "logStreamName": name,
                "creationTime": streams[name]["first"],
                "firstEventTimestamp": streams[name]["first"],
                "lastEventTimestamp": streams[name]["last"],
                "lastIngestionTime": streams[name]["ingested"],
                "arn": _stream_arn(ctx, group, name),
                "storedBytes": 0,
            }
            for name in page
        ]
    }
    if offset + limit < len(names):
        result["nextToken"] = _encode({"o": offset + limit}, "o/")
    return result


def _stream_owner(kind: str, owner: str | None, stream: Any) -> str:
    if not isinstance(stream, str) or not 1 <= len(stream) <= 512:
        raise _invalid(
            "1 validation error detected: Value at 'logStreamName' failed to satisfy constraint: "
            "Member must have length between 1 and 512"
        )
    if kind == "training":
        return stream.split("/", 1)[0]
    return str(owner)


def _in_range(ts: int, start: int | None, end: int | None) -> bool:
    return (start is None or ts >= start) and (end is None or ts < end)


def _out(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "timestamp": event["timestamp"],
        "message": event["message"],
        "ingestionTime": event.get("ingestionTime") or event["timestamp"],
    }


@operation("logs", "GetLogEvents")
def get_log_events(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    kind, owner = _group(params)
    stream = params.get("logStreamName")
    name = _stream_owner(kind, owner, stream)
    limit = _int(params, "limit", 10_000, 1, 10_000)
    start = _int(params, "startTime", None, 0, 2**62)
    end = _int(params, "endTime", None, 0, 2**62)
    assert limit is not None
    page = _reader(kind, name)
    token = params.get("nextToken")
    if token:
        state = _decode(token)
        direction = state.get("d")
        if direction == "b":
            return _backward(page, stream, int(state.get("i", 0)), limit, start, end)
        if direction != "f":
            raise _invalid("The specified nextToken is invalid.")
        return _forward(page, stream, state, limit, start, end, token)
    if params.get("startFromHead"):
        return _forward(page, stream, {"d": "f", "t": None, "n": 0, "k": 0}, limit, start, end, None)
    # The tail: the newest `limit` events, and a forward token after the end of the log.
    kept: list[tuple[int, dict[str, Any]]] = []
    index, after = 0, None
    for event, backend_token in _scan(page):
        after = backend_token
        if event["logStreamName"] != stream:
            continue
        if _in_range(event["timestamp"], start, end):
            kept.append((index, event))
            kept = kept[-limit:] if len(kept) > 2 * limit else kept
        index += 1
    if index == 0:
        raise _no_stream()
    kept = kept[-limit:]
    first = kept[0][0] if kept else index
    return {
        "events": [_out(e) for _, e in kept],
        "nextForwardToken": _encode({"d": "f", "t": after, "n": index, "k": 0}),
        "nextBackwardToken": _encode({"d": "b", "i": first}),
    }


def _forward(page, stream, state, limit, start, end, token_in) -> dict[str, Any]:
    backend_token, index, skip = state.get("t"), int(state.get("n", 0)), int(state.get("k", 0))
    if backend_token is not None and not isinstance(backend_token, str):
        raise _invalid("The specified nextToken is invalid.")
    collected: list[dict[str, Any]] = []
    first_index = None
    seen = scanned = 0
    while len(collected) < limit and scanned < MAX_SCAN:
        want = min(PAGE, limit - len(collected) + max(0, skip))
        result = page(backend_token, want)
        events = result.get("events") or []
        if not events:
            break
        scanned += len(events)
        backend_token = result.get("nextForwardToken") or backend_token
        for event in events:
            if event["logStreamName"] != stream:
                continue
            seen += 1
            if skip > 0:
                skip -= 1
                index += 1
                continue
            if _in_range(event["timestamp"], start, end):
                if first_index is None:
                    first_index = index
                collected.append(event)
            index += 1
    if token_in is None and seen == 0 and state.get("t") is None:
        raise _no_stream()
    if seen == 0 and token_in is not None:
        forward = token_in  # nothing new: the same token back
    else:
        forward = _encode({"d": "f", "t": backend_token, "n": index, "k": max(0, skip)})
    return {
        "events": [_out(e) for e in collected],
        "nextForwardToken": forward,
        "nextBackwardToken": _encode({"d": "b", "i": first_index if first_index is not None else index}),
    }


def _backward(page, stream, before: int, limit, start, end) -> dict[str, Any]:
    kept: list[tuple[int, dict[str, Any]]] = []
    index = 0
    for event, _ in _scan(page):
        if event["logStreamName"] != stream:
            continue
        if index >= before:
            break
        if _in_range(event["timestamp"], start, end):
            kept.append((index, event))
        index += 1
    kept = kept[-limit:]
    first = kept[0][0] if kept else before
    last = kept[-1][0] + 1 if kept else before
    return {
        "events": [_out(e) for _, e in kept],
        "nextForwardToken": _encode({"d": "f", "t": None, "n": 0, "k": last}),
        "nextBackwardToken": _encode({"d": "b", "i": first}),
    }


def _matcher(pattern: Any) -> Callable[[str], bool]:
    """CloudWatch's plain-text filter terms: all of ``term`` / ``"a phrase"``, none of ``-term``,
    at least one of ``?term`` (case-sensitive, as CloudWatch). JSON and space-delimited
    patterns (``{ … }``, ``[ … ]``) are not supported here."""
    if pattern is None or pattern == "":
        return lambda message: True
    if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN:
        raise _invalid(f"filterPattern must be at most {MAX_PATTERN} characters.")
    if pattern.strip().startswith(("{", "[")):
        raise _invalid("Invalid filter pattern: anyjob matches plain terms and quoted phrases only.")
    terms = re.findall(r'([?-]?)(?:"((?:[^"\\]|\\.)*)"|(\S+))', pattern)
    required = [q or w for sign, q, w in terms if sign == ""]
    excluded = [q or w for sign, q, w in terms if sign == "-"]
    optional = [q or w for sign, q, w in terms if sign == "?"]

    def match(message: str) -> bool:
        return (
            all(t in message for t in required)
            and not any(t in message for t in excluded)
            and (not optional or any(t in message for t in optional))
        )

    return match


@operation("logs", "FilterLogEvents")
def filter_log_events(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    kind, owner = _group(params)
    names = params.get("logStreamNames")
    prefix = params.get("logStreamNamePrefix")
    if names is not None and prefix is not None:
        raise _invalid("You cannot specify both logStreamNames and logStreamNamePrefix.")
    if names is not None and (not isinstance(names, list) or not 1 <= len(names) <= 100):
        raise _invalid("logStreamNames must list 1 to 100 streams.")
    limit = _int(params, "limit", 10_000, 1, 10_000)
    start = _int(params, "startTime", None, 0, 2**62)
    end = _int(params, "endTime", None, 0, 2**62)
    assert limit is not None
    match = _matcher(params.get("filterPattern"))
    after = None
    if params.get("nextToken"):
        state = _decode(params["nextToken"], "p/")
        after = (int(state.get("ts", 0)), str(state.get("id", "")))
    if kind == "endpoint":
        owners = [str(owner)]
    elif names is not None:
        owners = sorted({_stream_owner(kind, owner, n) for n in names})
    else:
        owners = _job_names(prefix)
    wanted = set(names) if names is not None else None
    found: list[tuple[int, str, dict[str, Any]]] = []
    searched: set[str] = set()
    for name in owners:
        counts: dict[str, int] = {}
        try:
            events = list(_scan(_reader(kind, name)))
        except ApiError:
            if kind == "endpoint":
                raise
            continue
        for event, _ in events:
            stream = event["logStreamName"]
            index = counts.get(stream, 0)
            counts[stream] = index + 1
            if (wanted is not None and stream not in wanted) or (prefix and not stream.startswith(prefix)):
                continue
            searched.add(stream)
            if not _in_range(event["timestamp"], start, end) or not match(event["message"]):
                continue
            event_id = _event_id(stream, index)
            if after is not None and (event["timestamp"], event_id) <= after:
                continue
            found.append((event["timestamp"], event_id, event))
    found.sort(key=lambda f: (f[0], f[1]))
    page = found[:limit]
    result: dict[str, Any] = {
        "events": [
            {
                "logStreamName": e["logStreamName"],
                "timestamp": ts,
                "message": e["message"],
                "ingestionTime": e.get("ingestionTime") or ts,
                "eventId": event_id,
            }
            for ts, event_id, e in page
        ],
        "searchedLogStreams": [{"logStreamName": s, "searchedCompletely": True} for s in sorted(searched)],
    }
    if len(found) > limit:
        last_ts, last_id, _ = page[-1]
        result["nextToken"] = _encode({"ts": last_ts, "id": last_id}, "p/")
    return result
