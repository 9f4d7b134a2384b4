"""What the job page shows beyond the row: timeline, log, request as code, changes vs parent."""

from __future__ import annotations

import copy as _copy
import json
import logging
import pprint
import re
import shlex
from collections import deque
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from jobs import artifacts, bundles, storage
from jobs.backends import get_backend
from jobs.models import TrainingJob
from jobs.redact import SECRET_NOTE, Secrets, secrets_of
from jobs.requests import build_training_request, settings_kwargs
from jobs.shape_order import in_shape_order

log = logging.getLogger(__name__)

#: Log lines the page shows at first (older lines are in the full log download).
LOG_TAIL_LINES = 500
#: Log lines in the failure panel.
FAILURE_LOG_LINES = 30
#: Events fetched per follow-mode poll.
LOG_POLL_EVENTS = 2000


def timeline(transitions: Any) -> list[dict[str, Any]]:
    """``SecondaryStatusTransitions`` with each step's duration (``None`` while it lasts)."""
    steps = []
    for t in transitions if isinstance(transitions, list) else []:
        if not isinstance(t, dict):
            continue
        start, end = _parse(t.get("StartTime")), _parse(t.get("EndTime"))
        steps.append(
            {
                "status": t.get("Status", ""),
                "message": t.get("StatusMessage", ""),
                "start": start,
                "end": end,
                "duration": _round(end - start) if start and end else None,
            }
        )
    return steps


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _round(delta: timedelta) -> timedelta:
    return timedelta(seconds=round(delta.total_seconds()))


def request_for(job: TrainingJob) -> dict[str, Any]:
    """The request as sent, or as it will be sent (a job not submitted yet)."""
    if job.request:
        return in_shape_order("CreateTrainingJob", job.request)  # jsonb keeps no key order
    try:
        code_uri = bundles.job_uri(job.name, settings.ANYJOB_ARTIFACT_STORE)
        return build_training_request(job, code_uri=code_uri, **settings_kwargs(settings))
    except (ValueError, KeyError, TypeError):
        return {}


def shown(job: TrainingJob, secrets: Secrets | None = None) -> TrainingJob:
    """A copy of ``job`` for a page: every field a page shows passed through the redaction
    (secret values hidden; never saved)."""
    secrets = secrets_of(job) if secrets is None else secrets
    if not secrets:
        return job
    copy = _copy.copy(job)
    copy.environment = secrets.environment(job.environment or {})
    for name in _SHOWN_FIELDS:
        setattr(copy, name, secrets.redact(getattr(job, name)))
    return copy


_SHOWN_FIELDS = ("request", "hyperparameters", "channels", "tags", "error", "failure_reason", "failure_text")


def as_boto3(request: dict[str, Any], *, secret: bool = False) -> str:
    body = pprint.pformat(request, indent=4, width=100, sort_dicts=False)
    return (
        "import boto3\n\n"
        + (f"# {SECRET_NOTE}\n" if secret else "")
        + f"sagemaker = boto3.client({'sagemaker'!r}, region_name={settings.ANYJOB_REGION!r})\n"
        f"response = sagemaker.create_training_job(**{body})\n"
        'print(response["TrainingJobArn"])\n'
    )


def as_cli_json(request: dict[str, Any]) -> str:
    return json.dumps(request, indent=2)


def cli_file(job: TrainingJob) -> str:
    """The name of the file ``cli_command`` reads the request from."""
    return f"{job.name}.json"


def cli_command(job: TrainingJob) -> str:
    """The AWS CLI command line for the request in ``cli_file``, every value quoted."""
    region = shlex.quote(settings.ANYJOB_REGION)
    source = shlex.quote(f"file://{cli_file(job)}")
    return f"aws sagemaker create-training-job --region {region} --cli-input-json {source}"


# --- the log ---------------------------------------------------------------------------------------


def never_sent(job: TrainingJob) -> bool:
    """Whether the backend never had this row's job: whatever it has by that name (any case) is
    someone else's, so no log or artifact is read for it (stopped before it was sent, too)."""
    if job.status in (TrainingJob.Status.PENDING, TrainingJob.Status.SUBMIT_FAILED):
        return True
    unsent = job.submitted_at is None and job.creation_time is None and not job.imported
    return job.status == TrainingJob.Status.STOPPED and unsent


def log_tail(job: TrainingJob, lines: int = LOG_TAIL_LINES) -> tuple[list[dict[str, Any]], str | None, bool]:
    """The last ``lines`` log events, the token to follow from, and whether older lines exist.

    ``([], None, False)`` when the backend has no log for the job (not submitted yet)."""
    if never_sent(job):
        return [], None, False
    try:
        return get_backend().tail_training_logs(job.name, lines)
    except (ClientError, BotoCoreError, storage.StorageError) as exc:
        log.info("no log for %s: %s", job.name, exc)
        return [], None, False


def log_after(job: TrainingJob, token: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """New events after ``token`` (follow mode)."""
    if never_sent(job):
        return [], token
    try:
        page = get_backend().get_training_logs(job.name, token, LOG_POLL_EVENTS)
    except (ClientError, BotoCoreError, storage.StorageError, ValueError) as exc:
        log.info("log of %s unavailable: %s", job.name, exc)
        return [], token
    return page.get("events", []), page.get("nextForwardToken") or token


def full_log(job: TrainingJob, max_events: int = 1_000_000):
    """Every log line, as text chunks (the download)."""
    token: str | None = None
    sent = 0
    backend = get_backend()
    while sent < max_events and not never_sent(job):
        try:
            page = backend.get_training_logs(job.name, token, 10_000)
        except (ClientError, BotoCoreError, storage.StorageError):
            return
        events = page.get("events", [])
        if not events:
            return
        sent += len(events)
        yield "".join(f"{e['message']}\n" for e in events)
        token = page.get("nextForwardToken")


def last_lines(events: list[dict[str, Any]], n: int = FAILURE_LOG_LINES) -> list[dict[str, Any]]:
    """The last ``n`` lines of each host's stream (one stream on the local backend)."""
    by_stream: dict[str, deque[dict[str, Any]]] = {}
    for e in events:
        by_stream.setdefault(e.get("logStreamName", ""), deque(maxlen=n)).append(e)
    if len(by_stream) <= 1:
        return list(deque(events, maxlen=n))
    out: list[dict[str, Any]] = []
    for stream in sorted(by_stream):
        out.append({"message": f"--- {stream}"})
        out += by_stream[stream]
    return out


# --- the failure panel ------------------------------------------------------------------------

#: A line that names an exception: ``ValueError: boom``, ``torch.cuda.OutOfMemoryError: ...``,
#: ``KeyboardInterrupt``; also inside the quotes of AWS's ``ErrorMessage "..."``.
_EXCEPTION_LINE = re.compile(
    r'^\s*(?:ErrorMessage\s+)?"?((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Warning|Interrupt|Exit|Failure))'
    r"(?::.*)?$"
)
#: The header lines anyjob's container and AWS's toolkit write before the script's own output.
_HEADER = re.compile(
    r"^\s*(AlgorithmError: \w+:\s*$|AlgorithmError: ExecuteUserScriptError\b|ErrorMessage:?\s*$)"
)


def failure_cause(reason: str) -> tuple[str, str]:
    """``FailureReason`` as ``(cause, rest)``: the exception's own line (the last line naming an
    exception, as a traceback ends with the one raised; else the first line), and the other
    lines in their order, line breaks kept."""
    lines = reason.strip().splitlines()
    if not lines:
        return "", ""
    found = [i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line) and not _HEADER.match(line)]
    at = found[-1] if found else 0
    cause = lines[at].strip()
    if cause.startswith('ErrorMessage "'):
        cause = cause.removeprefix('ErrorMessage "')
    cause = cause.strip('"').strip()
    rest = "\n".join(lines[:at] + lines[at + 1 :]).strip("\n")
    return cause, rest


# --- artifacts -------------------------------------------------------------------------------------


def artifact_listing(job: TrainingJob) -> list[dict[str, Any]]:
    """``model.tar.gz`` and ``output.tar.gz``: each with its files, or why it cannot be read."""
    if not job.model_artifacts:
        return []
    backend = get_backend()
    found = []
    for which, filename in (("model", "model.tar.gz"), ("output", "output.tar.gz")):
        entry: dict[str, Any] = {"which": which, "filename": filename, "members": [], "error": ""}
        try:
            entry["uri"] = uri = backend.artifact_uri(job.name, which)
            # The archive's manifest, not the archive: a page view reads no archive bytes.
            listed = artifacts.manifest(uri) if uri else None
            if listed is not None:
                entry["members"] = [m for m in listed.members if not m.is_dir]
                entry["more"] = listed.total - len(listed.members)
        except (ClientError, BotoCoreError, storage.StorageError, OSError, EOFError) as exc:
            entry["error"] = str(exc) or type(exc).__name__
        found.append(entry)
    return found


# --- clones ----------------------------------------------------------------------------------------

_SCALARS = [
    ("entry_point", "entry point"),
    ("instance_type", "instance type"),
    ("instance_count", "instance count"),
    ("volume_size_gb", "volume size (GB)"),
    ("max_runtime_seconds", "max runtime (s)"),
    ("output_path", "output path"),
    ("network_isolation", "network isolation"),
]


def _rows(items: Any, key: str) -> dict[str, Any]:
    return {str(i.get(key)): i for i in items or [] if isinstance(i, dict)}


def changes(parent: TrainingJob, job: TrainingJob) -> list[str]:
    """What ``job`` changes against the job it was cloned from, one sentence each."""
    out: list[str] = []
    if parent.source_sha256 != job.source_sha256:
        out.append(f"code changed ({parent.source_sha256[:12]} → {job.source_sha256[:12]})")
    for attr, label in _SCALARS:
        old, new = getattr(parent, attr), getattr(job, attr)
        if old != new:
            out.append(f"{label}: {old!r} → {new!r}")
    out += _diff_rows(
        "hyperparameter", _rows(parent.hyperparameters, "key"), _rows(job.hyperparameters, "key"), _hp
    )
    out += _diff_rows("channel", _rows(parent.channels, "name"), _rows(job.channels, "name"), _channel)
    # Each side's secrets shown as the placeholder (and neither side's secret values in text).
    theirs, ours = secrets_of(parent), secrets_of(job)
    values = theirs | ours
    out += _diff_rows(
        "environment variable",
        _environment_rows(Secrets(theirs.keys, values.values), parent.environment),
        _environment_rows(Secrets(ours.keys, values.values), job.environment),
        lambda r: r["value"] if r["secret"] else repr(r["value"]),
    )
    out += _diff_rows(
        "tag", _rows(parent.tags, "key"), _rows(job.tags, "key"), lambda r: repr(r.get("value"))
    )
    out += _diff_rows(
        "metric",
        _rows(parent.metric_definitions, "name"),
        _rows(job.metric_definitions, "name"),
        lambda r: repr(r.get("regex")),
    )
    return [values.redact(line) for line in out]


def _environment_rows(secrets: Secrets, environment: Any) -> dict[str, dict[str, Any]]:
    shown = secrets.environment(environment or {})
    return {k: {"value": v, "secret": k in secrets.keys} for k, v in shown.items()}


def _hp(row: dict[str, Any]) -> str:
    kind = row.get("type", "string")
    return f"{row.get('value')!r}" + ("" if kind == "string" else f" ({kind})")


def _channel(row: dict[str, Any]) -> str:
    extra = ", ".join(v for v in (row.get("content_type"), row.get("input_mode")) if v)
    return f"{row.get('uri')}" + (f" ({extra})" if extra else "")


def _diff_rows(noun: str, old: dict[str, Any], new: dict[str, Any], show) -> list[str]:
    out = []
    for key in old:
        if key not in new:
            out.append(f"{noun} {key} removed (was {show(old[key])})")
        elif show(old[key]) != show(new[key]):
            out.append(f"{noun} {key}: {show(old[key])} → {show(new[key])}")
    out += [f"{noun} {key} added: {show(new[key])}" for key in new if key not in old]
    return out


def clone_initial(job: TrainingJob) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The new-job form's fields and rows, pre-filled from ``job``."""
    from jobs.newjob import generate_name

    secrets = secrets_of(job)
    initial = {
        "name": generate_name(job.entry_point),
        "source_sha256": job.source_sha256,
        "entry_point": job.entry_point,
        "parent": job.name,
        "instance_type": job.instance_type,
        "instance_count": job.instance_count,
        "volume_size_gb": job.volume_size_gb,
        "max_runtime_seconds": job.max_runtime_seconds,
        "output_path": job.output_path,
        "network_isolation": job.network_isolation,
    }
    rows = {
        "channels": [dict(c) for c in job.channels or []],
        "hyperparameters": [dict(h) for h in job.hyperparameters or []],
        # A secret keeps its key and its flag, not its value: the user types it again (the
        # value would otherwise sit in the page's HTML, or be resolved from another job).
        "environment": [
            {"key": k, "value": v, "secret": k in secrets.keys}
            for k, v in secrets.environment(job.environment or {}, shown="").items()
        ],
        "tags": [dict(t) for t in job.tags or []],
        "metric_definitions": [dict(d) for d in job.metric_definitions or []],
    }
    return initial, rows
