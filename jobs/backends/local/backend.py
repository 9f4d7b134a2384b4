"""The ``local`` backend: SageMaker's training API, answered by an emulator on this machine.

``create_training_job`` validates the request as AWS does (``jobs.api_limits``), records the
job and starts one detached job process (``executor.py``) that stages the channels, runs the
generic container's ``train`` in a sandbox, uploads the artifacts and records every status.
Nothing here waits for a job: every other call reads and writes the job's row.

A job whose process died (machine restart, OOM kill) stops sending heartbeats; the next
describe or list call fails it with a reason instead of leaving it ``InProgress`` forever.

Endpoints: ``create_model`` and ``create_endpoint_config`` record their requests;
``create_endpoint`` records the endpoint (with copies of both) and starts its detached host
process (``endpoint_host.py``), which serves the model with the container's ``serve`` in the
sandbox on a free 127.0.0.1 port and records ``InService`` (or ``Failed`` with the reason).
``invoke_endpoint`` posts to that port as SageMaker's runtime does, with its limits and error
shapes. An endpoint whose host died (a machine restart) is not failed but restarted:
``reattach_endpoints`` (a beat task's job; ``describe_endpoint`` and ``invoke_endpoint`` do it
for their endpoint) starts a new host for it.
"""

from __future__ import annotations

import base64
import copy
import http.client
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils.timezone import now

from anyjob_container.environment import decode_value
from jobs import api_limits, storage
from jobs.backends.base import Backend
from jobs.backends.local import capacity, endpoint_host, image, roles, states, volume
from jobs.backends.local.models import (
    ACTIVE,
    SERVING,
    EndpointStatus,
    LocalEndpoint,
    LocalEndpointConfig,
    LocalEndpointLogEvent,
    LocalLogEvent,
    LocalModel,
    LocalTrainingJob,
    Status,
)
from jobs.backends.local.resources import instance_type_problem

log = logging.getLogger(__name__)

ACCOUNT = "000000000000"  # the emulator's account id, as in ARNs
NOT_FOUND = "Requested resource not found."
VALIDATION = "ValidationException"


def client_error(operation: str, code: str, message: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


def local_problems(request: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """What the emulator needs beyond what AWS checks, as ``(path, error code, message)``
    (AWS's serverless jobs may omit what is required here)."""
    problems: list[tuple[str, str, str]] = []
    spec = request.get("AlgorithmSpecification") or {}
    if not spec.get("TrainingImage"):
        problems.append(
            (
                "AlgorithmSpecification.TrainingImage",
                VALIDATION,
                "AlgorithmSpecification.TrainingImage is required.",
            )
        )
    if spec.get("TrainingInputMode", "File") == "Pipe":
        problems.append(
            (
                "AlgorithmSpecification.TrainingInputMode",
                VALIDATION,
                "The local backend supports File and FastFile input modes.",
            )
        )
    resources = request.get("ResourceConfig") or {}
    if not resources.get("InstanceType"):
        problems.append(
            ("ResourceConfig.InstanceType", VALIDATION, "ResourceConfig.InstanceType is required.")
        )
    elif unknown := instance_type_problem(resources["InstanceType"]):
        problems.append(("ResourceConfig.InstanceType", VALIDATION, unknown))
    if resources.get("InstanceCount", 1) != 1:
        problems.append(
            (
                "ResourceConfig.InstanceCount",
                "ResourceLimitExceeded",
                f"The local backend runs one instance per job; InstanceCount {resources['InstanceCount']} "
                "needs the sagemaker backend.",
            )
        )
    code = decode_value((request.get("HyperParameters") or {}).get("sagemaker_submit_directory"))
    if isinstance(code, str) and code.startswith("/opt/ml/"):
        code = None  # inside the job's own /opt/ml (an isolated job's code channel): not the host's
    if isinstance(code, str) and code and "://" not in code:
        code = Path(code).absolute().as_uri()  # a plain path, as the container accepts it
    if isinstance(code, str):
        problems += _file_root_problems("HyperParameters.sagemaker_submit_directory", code)
    output = (request.get("OutputDataConfig") or {}).get("S3OutputPath", "")
    if not isinstance(output, str) or not output.startswith(("s3://", "file://")):
        problems.append(
            (
                "OutputDataConfig.S3OutputPath",
                VALIDATION,
                f"S3OutputPath {output!r} must be an s3:// or file:// URI.",
            )
        )
    else:
        problems += _file_root_problems("OutputDataConfig.S3OutputPath", output)
    for i, channel in enumerate(request.get("InputDataConfig") or []):
        source = (channel.get("DataSource") or {}).get("S3DataSource")
        name = channel.get("ChannelName")
        where = f"InputDataConfig[{i}]"
        if not source:
            problems.append(
                (where, VALIDATION, f"Channel {name}: the local backend reads S3DataSource only.")
            )
            continue
        if source.get("S3DataType", "S3Prefix") != "S3Prefix":
            problems.append(
                (where, VALIDATION, f"Channel {name}: the local backend reads S3Prefix data only.")
            )
        if channel.get("InputMode", spec.get("TrainingInputMode", "File")) == "Pipe":
            problems.append(
                (
                    f"{where}.InputMode",
                    VALIDATION,
                    f"Channel {name}: Pipe input mode is not supported locally.",
                )
            )
        uri = source.get("S3Uri")
        if isinstance(uri, str):
            problems += _file_root_problems(f"{where}.DataSource.S3DataSource.S3Uri", uri)
    problems += role_problems(request.get("RoleArn"), training_s3_locations(request))
    return problems


def training_s3_locations(request: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(path, uri)`` of every location a training job reads or writes on its role's behalf."""
    found: list[tuple[str, Any]] = []
    for i, channel in enumerate(request.get("InputDataConfig") or []):
        source = (channel.get("DataSource") or {}).get("S3DataSource") or {}
        found.append((f"InputDataConfig[{i}].DataSource.S3DataSource.S3Uri", source.get("S3Uri")))
    code = decode_value((request.get("HyperParameters") or {}).get("sagemaker_submit_directory"))
    return [
        *found,
        ("OutputDataConfig.S3OutputPath", (request.get("OutputDataConfig") or {}).get("S3OutputPath")),
        ("HyperParameters.sagemaker_submit_directory", code),
        ("CheckpointConfig.S3Uri", (request.get("CheckpointConfig") or {}).get("S3Uri")),
    ]


def role_problems(role_arn: Any, locations: list[tuple[str, Any]]) -> list[tuple[str, str, str]]:
    """``s3://`` locations are read and written with the role's credentials, never the
    server's: a role without credentials here (``ANYJOB_LOCAL_ROLES``) may name none."""
    s3 = [path for path, uri in locations if isinstance(uri, str) and uri.startswith("s3://")]
    if not s3 or roles.is_mapped(role_arn if isinstance(role_arn, str) else None):
        return []
    message = roles.unmapped_message(role_arn if isinstance(role_arn, str) else None)
    return [(path, VALIDATION, message) for path in s3]


def sandbox_refusal(operation: str) -> None:
    """Fail closed: with ``ANYJOB_SANDBOX=on`` (the default), no job or endpoint starts on a
    machine where the sandbox cannot run (``sandbox.isolation_problem``)."""
    from jobs.backends.local import sandbox
    from jobs.checks import SANDBOX_FIX

    try:
        problem = sandbox.isolation_problem()  # None when it can run, or when it is off
    except sandbox.SandboxError as exc:  # ANYJOB_SANDBOX itself is wrong
        problem = str(exc)
    if problem:
        message = f"The local backend cannot sandbox code on this machine, so it runs none: {problem}."
        raise client_error(operation, VALIDATION, f"{message} {SANDBOX_FIX}")


def _file_root_problems(path: str, uri: str) -> list[tuple[str, str, str]]:
    """A ``file://`` URI must lie under one of ``ANYJOB_LOCAL_FILE_ROOTS``."""
    if not uri.startswith("file://"):
        return []
    roots = [Path(r) for r in settings.ANYJOB_LOCAL_FILE_ROOTS]
    try:
        target = storage.parse(uri, prefix=True).path.resolve()
    except (storage.StorageError, OSError, ValueError) as exc:
        return [(path, VALIDATION, str(exc))]
    if any(target == root or target.is_relative_to(root) for root in roots):
        return []
    allowed = ", ".join(str(r) for r in roots) or "(none: set ANYJOB_LOCAL_FILE_ROOTS)"
    return [
        (
            path,
            "AccessDenied",
            f"{uri} is outside the folders local jobs may read and write ({allowed}); "
            "set ANYJOB_LOCAL_FILE_ROOTS to allow more.",
        )
    ]


def _check_local(request: Mapping[str, Any]) -> None:
    problems = local_problems(request)
    if problems:
        _, code, message = problems[0]
        raise client_error("CreateTrainingJob", code, message)


def _s3_shaped(uri: str) -> str:
    # file:///data/x is checked as s3://file/data/x: every rule but the scheme still applies.
    return "s3://file" + uri.removeprefix("file://") if uri.startswith("file://") else uri


def as_s3_shaped(request: Mapping[str, Any]) -> dict[str, Any]:
    """The request with its ``file://`` URIs in S3's shape, for validation.

    The local backend also reads channels from and writes artifacts to ``file://`` paths
    (as the SageMaker SDK's local mode does); AWS would refuse them, so they are checked
    as if they were S3 URIs of the same length.
    """
    shaped = copy.deepcopy(dict(request))
    for channel in shaped.get("InputDataConfig") or []:
        source = (channel.get("DataSource") or {}).get("S3DataSource") or {}
        if isinstance(source.get("S3Uri"), str):
            source["S3Uri"] = _s3_shaped(source["S3Uri"])
    output = shaped.get("OutputDataConfig") or {}
    if isinstance(output.get("S3OutputPath"), str):
        output["S3OutputPath"] = _s3_shaped(output["S3OutputPath"])
    return shaped


def _record(request: Mapping[str, Any]) -> dict[str, Any]:
    """A request as kept in a JSON field (datetimes and the like as strings)."""
    return json.loads(json.dumps(dict(request), default=str))


def _insert(row: Any, op: str, code: str, message: str) -> None:
    """Save a new record; a name already taken is refused as the service refuses it."""
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError:
        raise client_error(op, code, message) from None


def _log_page(events: Any, next_token: str | None, limit: int) -> dict[str, Any]:
    """A ``GetLogEvents`` page of ``events`` (a queryset of log events) after ``next_token``."""
    after = -1
    if next_token:
        try:
            after = int(next_token.removeprefix("f/"))
        except ValueError:
            raise client_error(
                "GetLogEvents", "InvalidParameterException", "The specified nextToken is invalid."
            ) from None
    page = list(events.filter(seq__gt=after).order_by("seq")[: max(1, min(limit, 10_000))])
    last = page[-1].seq if page else after
    return {"events": [_event(e) for e in page], "nextForwardToken": f"f/{last}"}


def _log_tail(events: Any, lines: int) -> tuple[list[dict[str, Any]], str, bool]:
    """The newest ``lines`` of ``events`` (a queryset of log events), oldest first, the token
    to follow from, and whether older events exist."""
    newest = list(events.order_by("-seq")[: lines + 1])
    page = list(reversed(newest[:lines]))
    token = f"f/{page[-1].seq}" if page else "f/-1"
    return [_event(e) for e in page], token, len(newest) > lines


def _event(e: LocalLogEvent) -> dict[str, Any]:
    return {
        "logStreamName": e.stream,
        "timestamp": e.timestamp,
        "message": e.message,
        "ingestionTime": e.ingestion_time,
    }


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def describe(job: LocalTrainingJob) -> dict[str, Any]:
    """The row as ``DescribeTrainingJob`` answers."""
    req = job.request
    out: dict[str, Any] = {
        "TrainingJobName": job.name,
        "TrainingJobArn": job.arn,
        "TrainingJobStatus": job.status,
        "SecondaryStatus": job.secondary_status,
        "HyperParameters": req.get("HyperParameters", {}),
        "AlgorithmSpecification": {"TrainingInputMode": "File", **req.get("AlgorithmSpecification", {})},
        "RoleArn": req.get("RoleArn", ""),
        "InputDataConfig": req.get("InputDataConfig", []),
        "OutputDataConfig": req.get("OutputDataConfig", {}),
        "ResourceConfig": req.get("ResourceConfig", {}),
        "StoppingCondition": {
            "MaxRuntimeInSeconds": api_limits.DEFAULT_MAX_RUNTIME_IN_SECONDS,
            **req.get("StoppingCondition", {}),
        },
        "CreationTime": job.creation_time,
        "LastModifiedTime": job.last_modified_time,
        "SecondaryStatusTransitions": [
            {
                **t,
                "StartTime": _time(t["StartTime"]),
                **({"EndTime": _time(t["EndTime"])} if "EndTime" in t else {}),
            }
            for t in job.transitions
        ],
        "EnableNetworkIsolation": bool(req.get("EnableNetworkIsolation", False)),
        "EnableInterContainerTrafficEncryption": bool(
            req.get("EnableInterContainerTrafficEncryption", False)
        ),
        "EnableManagedSpotTraining": bool(req.get("EnableManagedSpotTraining", False)),
    }
    # (Tags are not part of DescribeTrainingJob's answer: ListTags returns them.)
    for key in ("Environment", "VpcConfig", "CheckpointConfig", "RetryStrategy"):
        if key in req:
            out[key] = req[key]
    if job.failure_reason:
        out["FailureReason"] = job.failure_reason
    if job.model_artifacts:
        out["ModelArtifacts"] = {"S3ModelArtifacts": job.model_artifacts}
    if job.final_metrics:
        out["FinalMetricDataList"] = [{**m, "Timestamp": _time(m["Timestamp"])} for m in job.final_metrics]
    if job.training_start_time:
        out["TrainingStartTime"] = job.training_start_time
    if job.training_end_time:
        out["TrainingEndTime"] = job.training_end_time
        seconds = max(
            1, round((job.training_end_time - (job.training_start_time or job.creation_time)).total_seconds())
        )
        out["TrainingTimeInSeconds"] = seconds
        out["BillableTimeInSeconds"] = seconds
    return out


def write_private(path: Path, text: str) -> None:
    """Write a plan file readable by anyjob alone (0600): it holds the request, whose
    Environment may carry secrets."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)  # an older file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


#: The server's own credentials: a job's process works with its role's alone, so that no step
#: of it can fall back to them (boto3's chain would find these first).
SERVER_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
}


def child_environment() -> dict[str, str]:
    """The environment of a job's or an endpoint's process: ours without the server's
    credentials, with this process's ``ANYJOB_LOCAL_ROLES`` (which ``roles`` reads there
    before Django is set up)."""
    env = {k: v for k, v in os.environ.items() if k not in SERVER_CREDENTIALS}
    env[roles.SETTING] = settings.ANYJOB_LOCAL_ROLES
    # This checkout's container package (the hyperparameter decoder), whatever the .pth says.
    env["PYTHONPATH"] = os.pathsep.join([str(image.CONTAINER_DIR), *filter(None, [env.get("PYTHONPATH")])])
    return env


def hidden_paths(databases: Mapping[str, Any] | None = None) -> list[str]:
    """What looks empty inside every sandbox: anyjob's state (``var/``: the database, the
    secret key, the Redis socket, artifacts, other jobs), the emulator's folders, the home
    folder (credentials), and a SQLite database (``settings.DATABASES``) wherever it is."""
    paths = [settings.VAR_DIR, settings.ANYJOB_LOCAL_ROOT, Path.home()]
    for database in (settings.DATABASES if databases is None else databases).values():
        if "sqlite" in database.get("ENGINE", "") and str(database.get("NAME", "")).startswith("/"):
            name = Path(database["NAME"])
            paths += [name, Path(f"{name}-wal"), Path(f"{name}-shm"), Path(f"{name}-journal")]
    return list(dict.fromkeys(str(p) for p in paths))


def _release_leftovers(job: LocalTrainingJob | None) -> None:
    """Unmount the volume of an abandoned job whose process is gone from this machine (it
    would have released it itself, had it not been killed)."""
    if job is None or not job.executor:
        return
    host, _, pid = job.executor.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return
    try:
        os.kill(int(pid), 0)
        return  # still alive: not ours to touch
    except ProcessLookupError:
        pass
    except PermissionError:
        return
    volume.release(Path(settings.ANYJOB_LOCAL_ROOT) / job.key)


def launch_executor(job: LocalTrainingJob) -> None:
    """Start the job's process, detached: it outlives the worker or web process that asked.

    Everything it needs before Django is set up goes into its plan file, so the container can
    start while the process is still importing Django.
    """
    job_root = Path(settings.ANYJOB_LOCAL_ROOT) / job.key
    job_root.mkdir(parents=True, exist_ok=True)
    plan = {
        "name": job.name,
        "key": job.key,
        "arn": job.arn,
        "request": job.request,
        "job_root": str(job_root),
        "image_env_root": str(settings.ANYJOB_IMAGE_ENV_ROOT),
        # Hidden inside the sandbox: the database, sockets, artifacts, other jobs, credentials.
        "hide": hidden_paths(),
        "stop_grace_seconds": settings.ANYJOB_LOCAL_STOP_GRACE_SECONDS,
        "heartbeat_seconds": settings.ANYJOB_LOCAL_HEARTBEAT_SECONDS,
        "max_log_events": settings.ANYJOB_LOCAL_MAX_LOG_EVENTS,
        "max_channel_bytes": settings.ANYJOB_LOCAL_MAX_CHANNEL_BYTES,
        "max_processes": settings.ANYJOB_LOCAL_MAX_PROCESSES,
        "django_settings": os.environ.get("DJANGO_SETTINGS_MODULE", "webapp.settings"),
    }
    plan_file = job_root / "plan.json"
    write_private(plan_file, json.dumps(plan))
    subprocess.run(
        [sys.executable, "-m", "jobs.backends.local.executor", "--detach", str(plan_file)],
        cwd=settings.BASE_DIR,
        env=child_environment(),
        stdin=subprocess.DEVNULL,
        check=True,
        timeout=30,
    )


# -- endpoints: module helpers ------------------------------------------------------------------

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
_RUNTIME_ERROR_TYPES = {
    "ValidationError": 400,
    "ModelError": 424,
    "ServiceUnavailable": 503,
    "InternalFailure": 500,
}
_INVOKE = "InvokeEndpoint"
#: What InvokeEndpoint reads of the endpoint's row (not the requests' copies).
#: Where each endpoint listens, per process, for a second: an invocation then skips the
#: database (the runtime path's overhead is benchmarked). Any connection error forgets it.
ROUTE_CACHE_SECONDS = 1.0
_routes: dict[str, tuple[float, int, str]] = {}
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


def _arn(kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:{settings.ANYJOB_REGION}:{ACCOUNT}:{kind}/{name.lower()}"


def _could_not_find(operation: str, what: str, kind: str, name: str) -> ClientError:
    return client_error(operation, VALIDATION, f'Could not find {what} "{_arn(kind, name)}".')


def log_group_arn(name: str) -> str:
    """The ARN of the endpoint's CloudWatch log group, as ``ModelError`` names it."""
    return f"arn:aws:logs:{settings.ANYJOB_REGION}:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/{name}"


def runtime_error(code: str, message: str, **fields: Any) -> ClientError:
    """A sagemaker-runtime error as botocore parses it: ``Error`` plus the error shape's own
    members (``OriginalStatusCode``, ``OriginalMessage``, ``LogStreamArn``) at the top level."""
    status = _RUNTIME_ERROR_TYPES[code]
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {
            "RequestId": str(uuid.uuid4()),
            "HTTPStatusCode": status,
            "HTTPHeaders": {"content-type": "application/json", "x-amzn-errortype": code},
            "RetryAttempts": 0,
        },
        "Message": message,
        **fields,
    }
    return ClientError(response, _INVOKE)


def _model_error(name: str, message: str, **fields: Any) -> ClientError:
    return runtime_error("ModelError", message, LogStreamArn=log_group_arn(name), **fields)


def _container_error(name: str, status: int, body: bytes) -> ClientError:
    """A container's non-2xx answer, as SageMaker wraps it (HTTP 424 ``ModelError``)."""
    original = body.decode("utf-8", "replace")
    kind = "client" if 400 <= status < 500 else "server"
    region = settings.ANYJOB_REGION
    message = (
        f'Received {kind} error ({status}) from primary with message "{original}". See '
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logEventViewer:"
        f"group=/aws/sagemaker/Endpoints/{name} in account {ACCOUNT} for more information."
    )
    return _model_error(name, message, OriginalStatusCode=status, OriginalMessage=original)


def _path_problems(path: str, value: str) -> list[tuple[str, str, str]]:
    """A local path or ``file://`` URI the endpoint reads must lie under the file roots."""
    if value.startswith("/"):
        if value == "/opt/ml" or value.startswith("/opt/ml/"):
            return []  # inside the container (e.g. /opt/ml/model/code)
        value = Path(value).as_uri()
    return _file_root_problems(path, value)


def model_problems(request: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """What the emulator needs of a CreateModel request beyond AWS's rules."""
    problems: list[tuple[str, str, str]] = []
    container = request.get("PrimaryContainer")
    if not container:
        return [
            (
                "PrimaryContainer",
                VALIDATION,
                "The local backend serves models with one PrimaryContainer (not Containers).",
            )
        ]
    if container.get("Mode", "SingleModel") != "SingleModel":
        problems.append(
            ("PrimaryContainer.Mode", VALIDATION, "The local backend serves SingleModel containers only.")
        )
    if container.get("ModelDataSource"):
        problems.append(
            (
                "PrimaryContainer.ModelDataSource",
                VALIDATION,
                "The local backend reads the model from ModelDataUrl (a model.tar.gz), not ModelDataSource.",
            )
        )
    url = container.get("ModelDataUrl")
    if isinstance(url, str):
        if not url.startswith(("s3://", "file://")):
            problems.append(
                (
                    "PrimaryContainer.ModelDataUrl",
                    VALIDATION,
                    f"ModelDataUrl {url!r} must be an s3:// or file:// URI of a model.tar.gz.",
                )
            )
        else:
            problems += _file_root_problems("PrimaryContainer.ModelDataUrl", url)
    code = (container.get("Environment") or {}).get("SAGEMAKER_SUBMIT_DIRECTORY")
    if isinstance(code, str) and code.startswith(("/", "file://")):
        problems += _path_problems("PrimaryContainer.Environment.SAGEMAKER_SUBMIT_DIRECTORY", code)
    locations = [
        ("PrimaryContainer.ModelDataUrl", url),
        ("PrimaryContainer.Environment.SAGEMAKER_SUBMIT_DIRECTORY", code),
    ]
    problems += role_problems(request.get("ExecutionRoleArn"), locations)
    return problems


def endpoint_config_problems(request: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """What the emulator needs of a CreateEndpointConfig request beyond AWS's rules."""
    problems: list[tuple[str, str, str]] = []
    variants = request.get("ProductionVariants") or []
    if len(variants) != 1:
        problems.append(
            (
                "ProductionVariants",
                VALIDATION,
                f"The local backend serves one production variant per endpoint, not {len(variants)}.",
            )
        )
    for i, variant in enumerate(variants[:1]):
        count = variant.get("InitialInstanceCount", 1)
        if count != 1:
            problems.append(
                (
                    f"ProductionVariants[{i}].InitialInstanceCount",
                    "ResourceLimitExceeded",
                    f"The local backend runs one instance per endpoint; InitialInstanceCount {count} "
                    "needs the sagemaker backend.",
                )
            )
    for key in ("AsyncInferenceConfig", "ShadowProductionVariants", "ExplainerConfig", "DataCaptureConfig"):
        if request.get(key):
            problems.append((key, VALIDATION, f"The local backend does not support {key}."))
    return problems


def _refuse(operation: str, problems: list[tuple[str, str, str]]) -> None:
    if problems:
        _, code, message = problems[0]
        raise client_error(operation, code, message)


def model_s3_shaped(request: Mapping[str, Any]) -> dict[str, Any]:
    """A CreateModel request with its ``file://`` model data in S3's shape, for validation."""
    shaped = copy.deepcopy(dict(request))
    for container in [shaped.get("PrimaryContainer") or {}, *(shaped.get("Containers") or [])]:
        if isinstance(container, dict) and isinstance(container.get("ModelDataUrl"), str):
            container["ModelDataUrl"] = _s3_shaped(container["ModelDataUrl"])
    return shaped


def endpoint_root(endpoint: LocalEndpoint) -> Path:
    """The endpoint's folder on this machine (its ``ml/`` is ``/opt/ml`` for the server).
    ``_`` cannot start a SageMaker name, so no training job's folder is ever called that."""
    return Path(settings.ANYJOB_LOCAL_ROOT) / "_endpoints" / f"{endpoint.key}-{endpoint.uid}"


def variant_name(endpoint: LocalEndpoint) -> str:
    return endpoint.config["ProductionVariants"][0].get("VariantName", "AllTraffic")


def describe_endpoint_row(endpoint: LocalEndpoint) -> dict[str, Any]:
    """The row as ``DescribeEndpoint`` answers."""
    out: dict[str, Any] = {
        "EndpointName": endpoint.name,
        "EndpointArn": endpoint.arn,
        "EndpointConfigName": endpoint.request["EndpointConfigName"],
        "EndpointStatus": endpoint.status,
        "CreationTime": endpoint.creation_time,
        "LastModifiedTime": endpoint.last_modified_time,
    }
    if endpoint.status == EndpointStatus.IN_SERVICE:
        image = (endpoint.model.get("PrimaryContainer") or {}).get("Image", "")
        out["ProductionVariants"] = [
            {
                "VariantName": variant_name(endpoint),
                "DeployedImages": [
                    {
                        "SpecifiedImage": image,
                        "ResolvedImage": image,
                        "ResolutionTime": endpoint.creation_time,
                    }
                ],
                "CurrentWeight": 1.0,
                "DesiredWeight": 1.0,
                "CurrentInstanceCount": 1,
                "DesiredInstanceCount": 1,
            }
        ]
    if endpoint.failure_reason:
        out["FailureReason"] = endpoint.failure_reason
    return out


def launch_endpoint_host(endpoint: LocalEndpoint) -> None:
    """Start the endpoint's host process for its current generation, detached (see
    ``endpoint_host.py``). Returns once the host holds the endpoint's lock."""
    root = endpoint_root(endpoint)
    root.mkdir(parents=True, exist_ok=True)
    plan = {
        "name": endpoint.name,
        "key": endpoint.key,
        "generation": endpoint.generation,
        "root": str(root),
        "model": endpoint.model,
        "variant": variant_name(endpoint),
        "instance_type": endpoint.config["ProductionVariants"][0].get("InstanceType", ""),
        "volume_gb": endpoint.config["ProductionVariants"][0].get("VolumeSizeInGB"),
        "max_processes": settings.ANYJOB_LOCAL_MAX_PROCESSES,
        "region": settings.ANYJOB_REGION,
        "image_env_root": str(settings.ANYJOB_IMAGE_ENV_ROOT),
        # Hidden inside the sandbox: the database, sockets, artifacts, jobs, credentials.
        "hide": hidden_paths(),
        "stop_grace_seconds": settings.ANYJOB_LOCAL_STOP_GRACE_SECONDS,
        "heartbeat_seconds": settings.ANYJOB_LOCAL_HEARTBEAT_SECONDS,
        "startup_seconds": settings.ANYJOB_LOCAL_ENDPOINT_STARTUP_SECONDS,
        "max_log_events": settings.ANYJOB_LOCAL_MAX_LOG_EVENTS,
        "django_settings": os.environ.get("DJANGO_SETTINGS_MODULE", "webapp.settings"),
    }
    plan_file = root / f"plan-{endpoint.generation}.json"
    write_private(plan_file, json.dumps(plan))
    subprocess.run(
        [sys.executable, "-m", "jobs.backends.local.endpoint_host", "--detach", str(plan_file)],
        cwd=settings.BASE_DIR,
        env=child_environment(),
        stdin=subprocess.DEVNULL,
        check=True,
        timeout=30,
    )


#: SageMaker's runtime returns at most 6 MB of a model's answer (InvokeEndpoint's quota).
MAX_RESPONSE_BYTES = 6 * 1024**2


class _AnswerTooLarge(Exception):
    pass


def _read_answer(response: http.client.HTTPResponse, deadline: float) -> bytes:
    """The model server's answer, read in pieces with a bound on its size and on the whole
    read's time (a server that drips a byte at a time cannot hold the caller longer)."""
    chunks, size = [], 0
    while chunk := response.read1(64 * 1024):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise _AnswerTooLarge
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise TimeoutError
    return b"".join(chunks)


class _Connections(threading.local):
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


_connections = _Connections()


class LocalBackend(Backend):
    name = "local"

    # -- training jobs ---------------------------------------------------------------------
    def create_training_job(self, request: Mapping[str, Any]) -> dict[str, Any]:
        op = "CreateTrainingJob"
        sandbox_refusal(op)
        api_limits.check(op, as_s3_shaped(request))
        _check_local(request)
        instance_type = request["ResourceConfig"]["InstanceType"]
        if problem := instance_type_problem(instance_type):
            raise client_error(op, VALIDATION, problem)
        name = request["TrainingJobName"]
        arn = f"arn:aws:sagemaker:{settings.ANYJOB_REGION}:{ACCOUNT}:training-job/{name.lower()}"
        at = now()
        job = LocalTrainingJob(
            name=name,
            key=name.lower(),
            arn=arn,
            request=_record(request),
            creation_time=at,
            last_modified_time=at,
        )
        states.advance(job, "Starting", at)
        self.reap_abandoned()  # a job whose process died gives its instance back
        with capacity.locked():  # count and insert as one step: two creates never both pass
            _insert(
                job,
                op,
                "ResourceInUse",
                "Training job names must be unique within an AWS account and region, "
                f"and a training job with this name already exists ({arn})",
            )
            if problem := capacity.exceeded(instance_type, "training job"):
                raise client_error(op, "ResourceLimitExceeded", problem)
        launch_executor(job)
        return {"TrainingJobArn": arn}

    def describe_training_job(self, name: str) -> dict[str, Any]:
        api_limits.check("DescribeTrainingJob", {"TrainingJobName": name})
        self.reap_abandoned()
        return describe(self._get("DescribeTrainingJob", name))

    def list_training_jobs(self, **params: Any) -> dict[str, Any]:
        op = "ListTrainingJobs"
        api_limits.check(op, params)
        self.reap_abandoned()
        jobs = LocalTrainingJob.objects.all()
        filters = {
            "CreationTimeAfter": "creation_time__gt",
            "CreationTimeBefore": "creation_time__lt",
            "LastModifiedTimeAfter": "last_modified_time__gt",
            "LastModifiedTimeBefore": "last_modified_time__lt",
            "NameContains": "name__icontains",
            "StatusEquals": "status",
        }
        for param, lookup in filters.items():
            if param in params:
                jobs = jobs.filter(**{lookup: params[param]})
        field = {"Name": "name", "CreationTime": "creation_time", "Status": "status"}[
            params.get("SortBy", "CreationTime")
        ]
        descending = params.get("SortOrder", "Descending") == "Descending"
        jobs = jobs.order_by(f"-{field}" if descending else field, "-id" if descending else "id")
        offset = self._offset(op, params.get("NextToken"))
        size = params.get("MaxResults", 10)
        page = list(jobs[offset : offset + size + 1])
        result: dict[str, Any] = {
            "TrainingJobSummaries": [
                {
                    "TrainingJobName": j.name,
                    "TrainingJobArn": j.arn,
                    "CreationTime": j.creation_time,
                    "LastModifiedTime": j.last_modified_time,
                    "TrainingJobStatus": j.status,
                    "SecondaryStatus": j.secondary_status,
                    **({"TrainingEndTime": j.training_end_time} if j.training_end_time else {}),
                }
                for j in page[:size]
            ]
        }
        if len(page) > size:
            result["NextToken"] = base64.urlsafe_b64encode(
                json.dumps({"offset": offset + size}).encode()
            ).decode()
        return result

    def stop_training_job(self, name: str) -> None:
        op = "StopTrainingJob"
        api_limits.check(op, {"TrainingJobName": name})
        with transaction.atomic():
            job = self._get(op, name, for_update=True)
            if job.status == Status.STOPPING:
                return
            if job.status != Status.IN_PROGRESS:
                raise client_error(
                    op,
                    "ValidationException",
                    f"The request was rejected because the training job is in status {job.status}.",
                )
            job.status = Status.STOPPING
            job.stop_reason = "user"
            states.advance(job, "Stopping")
            job.save()

    def get_training_logs(
        self, name: str, next_token: str | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        job = self._get("GetLogEvents", name)
        return _log_page(LocalLogEvent.objects.filter(job=job), next_token, limit)

    def tail_training_logs(self, name: str, lines: int) -> tuple[list[dict[str, Any]], str | None, bool]:
        job = self._get("GetLogEvents", name)
        return _log_tail(LocalLogEvent.objects.filter(job=job), lines)

    def tail_endpoint_logs(self, name: str, lines: int) -> tuple[list[dict[str, Any]], str | None, bool]:
        endpoint = self._endpoint("GetLogEvents", name)
        return _log_tail(LocalEndpointLogEvent.objects.filter(endpoint=endpoint), lines)

    def preflight(
        self, request: Mapping[str, Any], operation: str = "CreateTrainingJob"
    ) -> list[tuple[str, str]]:
        check = {
            "CreateTrainingJob": local_problems,
            "CreateModel": model_problems,
            "CreateEndpointConfig": endpoint_config_problems,
        }.get(operation)
        return [(path, message) for path, _, message in check(request)] if check else []

    def api_shaped(self, operation: str, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """``file://`` locations checked as S3 URIs of the same length (``as_s3_shaped``)."""
        if operation == "CreateTrainingJob":
            return as_s3_shaped(request)
        if operation == "CreateModel":
            return model_s3_shaped(request)
        return request

    def list_tags(self, **params: Any) -> dict[str, Any]:
        """The tags each create request carried, found by the resource's ARN (whose name part
        is the lower-cased name, as the rows' ``key``)."""
        op = "ListTags"
        arn = params.get("ResourceArn", "")
        kind, _, name = str(arn).rpartition(":")[2].partition("/")
        rows = {
            "training-job": LocalTrainingJob,
            "model": LocalModel,
            "endpoint-config": LocalEndpointConfig,
            "endpoint": LocalEndpoint,
        }.get(kind)
        row = rows.objects.filter(key=name.lower(), arn=arn).only("request").first() if rows else None
        if row is None:
            raise client_error(op, VALIDATION, f"Resource {arn} does not exist.")
        tags = list(row.request.get("Tags") or [])
        offset = self._offset(op, params.get("NextToken"))
        size = params.get("MaxResults", 50)
        result: dict[str, Any] = {"Tags": tags[offset : offset + size]}
        if len(tags) > offset + size:
            result["NextToken"] = base64.urlsafe_b64encode(
                json.dumps({"offset": offset + size}).encode()
            ).decode()
        return result

    def describe_model(self, name: str) -> dict[str, Any]:
        model = LocalModel.objects.filter(key=name.lower()).first()
        if model is None:
            raise _could_not_find("DescribeModel", "model", "model", name)
        return {**model.request, "ModelArn": model.arn, "CreationTime": model.creation_time}

    def describe_endpoint_config(self, name: str) -> dict[str, Any]:
        config = LocalEndpointConfig.objects.filter(key=name.lower()).first()
        if config is None:
            raise _could_not_find("DescribeEndpointConfig", "endpoint configuration", "endpoint-config", name)
        return {**config.request, "EndpointConfigArn": config.arn, "CreationTime": config.creation_time}

    def job_notes(self, name: str) -> list[str]:
        return list(self._get("DescribeTrainingJob", name).notes)

    # -- endpoints -----------------------------------------------------------------------------
    def create_model(self, request: Mapping[str, Any]) -> dict[str, Any]:
        op = "CreateModel"
        api_limits.check(op, model_s3_shaped(request))
        _refuse(op, model_problems(request))
        name = request["ModelName"]
        arn = _arn("model", name)
        model = LocalModel(
            name=name,
            key=name.lower(),
            arn=arn,
            request=_record(request),
            creation_time=now(),
        )
        _insert(model, op, VALIDATION, f'Cannot create already existing model "{arn}".')
        return {"ModelArn": arn}

    def create_endpoint_config(self, request: Mapping[str, Any]) -> dict[str, Any]:
        op = "CreateEndpointConfig"
        api_limits.check(op, request)
        _refuse(op, endpoint_config_problems(request))
        name = request["EndpointConfigName"]
        arn = _arn("endpoint-config", name)
        for variant in request["ProductionVariants"]:
            if not LocalModel.objects.filter(key=variant["ModelName"].lower()).exists():
                raise _could_not_find(op, "model", "model", variant["ModelName"])
        config = LocalEndpointConfig(
            name=name,
            key=name.lower(),
            arn=arn,
            request=_record(request),
            creation_time=now(),
        )
        _insert(config, op, VALIDATION, f'Cannot create already existing endpoint configuration "{arn}".')
        return {"EndpointConfigArn": arn}

    def create_endpoint(self, request: Mapping[str, Any]) -> dict[str, Any]:
        op = "CreateEndpoint"
        sandbox_refusal(op)
        api_limits.check(op, request)
        if request.get("DeploymentConfig"):
            raise client_error(op, VALIDATION, "The local backend does not support DeploymentConfig.")
        name = request["EndpointName"]
        arn = _arn("endpoint", name)
        config_name = request["EndpointConfigName"]
        config = LocalEndpointConfig.objects.filter(key=config_name.lower()).first()
        if config is None:
            raise _could_not_find(op, "endpoint configuration", "endpoint-config", config_name)
        model_name = config.request["ProductionVariants"][0]["ModelName"]
        model = LocalModel.objects.filter(key=model_name.lower()).first()
        if model is None:
            raise _could_not_find(op, "model", "model", model_name)
        instance_type = config.request["ProductionVariants"][0].get("InstanceType")
        if instance_type and (problem := instance_type_problem(instance_type)):
            raise client_error(op, VALIDATION, problem)
        at = now()
        endpoint = LocalEndpoint(
            name=name,
            key=name.lower(),
            arn=arn,
            uid=uuid.uuid4().hex,
            request=_record(request),
            config=config.request,
            model=model.request,
            creation_time=at,
            last_modified_time=at,
            launched_at=at,
            machine=socket.gethostname(),
        )
        self.reap_abandoned()  # a job whose process died gives its instance back
        with capacity.locked():  # count and insert as one step: two creates never both pass
            _insert(endpoint, op, VALIDATION, f'Cannot create already existing endpoint "{arn}".')
            if problem := capacity.exceeded(instance_type or "serverless", "endpoint"):
                raise client_error(op, "ResourceLimitExceeded", problem)
        self._launch(endpoint)
        return {"EndpointArn": arn}

    def describe_endpoint(self, name: str) -> dict[str, Any]:
        op = "DescribeEndpoint"
        api_limits.check(op, {"EndpointName": name})
        endpoint = self._endpoint(op, name)
        endpoint = self._reattach(endpoint)  # a host that died is replaced (or a deletion finished)
        if endpoint is None:
            raise _could_not_find(op, "endpoint", "endpoint", name)
        return describe_endpoint_row(endpoint)

    def delete_endpoint(self, name: str) -> None:
        op = "DeleteEndpoint"
        api_limits.check(op, {"EndpointName": name})
        _routes.pop(name.lower(), None)
        with transaction.atomic():
            endpoint = self._endpoint(op, name, for_update=True)
            if endpoint.status != EndpointStatus.DELETING:
                endpoint.status = EndpointStatus.DELETING
                endpoint.last_modified_time = now()
                endpoint.save(update_fields=["status", "last_modified_time"])
        # The host stops the server and removes the row; with no live host, that happens here.
        self._reattach(endpoint)

    def delete_endpoint_config(self, name: str) -> None:
        op = "DeleteEndpointConfig"
        api_limits.check(op, {"EndpointConfigName": name})
        deleted, _ = LocalEndpointConfig.objects.filter(key=name.lower()).delete()
        if not deleted:
            raise _could_not_find(op, "endpoint configuration", "endpoint-config", name)

    def delete_model(self, name: str) -> None:
        op = "DeleteModel"
        api_limits.check(op, {"ModelName": name})
        deleted, _ = LocalModel.objects.filter(key=name.lower()).delete()
        if not deleted:
            raise _could_not_find(op, "model", "model", name)

    def invoke_endpoint(
        self,
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
        api_limits.check(_INVOKE, params)
        if isinstance(body, str):
            body = body.encode()
        route = _routes.get(name.lower())
        if route is not None and route[0] > time.monotonic():
            _, port, variant = route
        else:
            port, variant = self._route(name)
            _routes[name.lower()] = (time.monotonic() + ROUTE_CACHE_SECONDS, port, variant)
        headers["Content-Length"] = str(len(body))
        timeout = settings.ANYJOB_LOCAL_INVOKE_TIMEOUT_SECONDS
        for attempt in (1, 2):
            conn = _connections.get(port, timeout)
            reused = conn.sock is not None
            try:
                conn.request("POST", "/invocations", body=body, headers=headers)
                response = conn.getresponse()
                answer = _read_answer(response, time.monotonic() + timeout)
                break
            except _AnswerTooLarge:
                _connections.drop(port)
                raise _model_error(
                    name,
                    f"Received an invalid response from the primary container: the response is larger "
                    f"than {MAX_RESPONSE_BYTES // 1024**2} MB, the most SageMaker's runtime returns.",
                ) from None
            except TimeoutError:
                _connections.drop(port)
                _routes.pop(name.lower(), None)
                raise _model_error(
                    name,
                    "Your invocation timed out while waiting for a response from container primary. "
                    "Review the latency metrics for each container in Amazon CloudWatch, resolve the "
                    f"issue, and try again. (anyjob: no answer within {timeout:g} s.)",
                ) from None
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                _connections.drop(port)
                _routes.pop(name.lower(), None)
                if reused and attempt == 1:
                    continue  # the server closed an idle kept-alive connection: once more, afresh
                raise self._unreachable(name, port, exc) from None
            except (OSError, http.client.HTTPException) as exc:
                _connections.drop(port)
                _routes.pop(name.lower(), None)
                raise self._unreachable(name, port, exc) from None
        if not 200 <= response.status < 300:
            raise _container_error(name, response.status, answer)
        return {
            "Body": answer,
            "ContentType": response.getheader("Content-Type") or "application/octet-stream",
            "CustomAttributes": response.getheader(CUSTOM_ATTRIBUTES),
            "InvokedProductionVariant": variant,
        }

    def _route(self, name: str) -> tuple[str, str]:
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
        if port is None or not self._host_alive(endpoint):
            self._reattach(endpoint)
            raise runtime_error(
                "ServiceUnavailable",
                f"The model server of endpoint {name} is restarting; retry in a few seconds.",
            )
        return str(endpoint_host.socket_path(endpoint_root(endpoint), endpoint.generation)), variant_name(
            endpoint
        )

    def get_endpoint_logs(
        self, name: str, next_token: str | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        endpoint = self._endpoint("GetLogEvents", name)
        return _log_page(LocalEndpointLogEvent.objects.filter(endpoint=endpoint), next_token, limit)

    def reattach_endpoints(self) -> int:
        """Start a new host for every endpoint that should be serving (``Creating``,
        ``InService``) but whose host process is gone, and finish the deletion of ``Deleting``
        ones whose host is gone; returns how many. Cheap when all is well (one query, and a
        ``flock`` probe per endpoint of this machine): a beat task may call it every few
        seconds, and ``describe_endpoint`` does it for the endpoint it describes."""
        count = 0
        for endpoint in LocalEndpoint.objects.filter(status__in=[*SERVING, EndpointStatus.DELETING]):
            generation = endpoint.generation
            after = self._reattach(endpoint)
            if after is None or after.generation != generation:
                count += 1
        return count

    def _unreachable(self, name: str, port: str, exc: Exception) -> ClientError:
        """The error for a model server that did not answer at all."""
        endpoint = LocalEndpoint.objects.filter(key=name.lower()).first()
        if endpoint is None or endpoint.status == EndpointStatus.DELETING:
            return runtime_error(
                "ValidationError",
                f"Endpoint {name} of account {ACCOUNT} not found. (anyjob: it was deleted while the "
                f"request was on its way: {type(exc).__name__}.)",
            )
        if isinstance(exc, (ConnectionRefusedError, FileNotFoundError)):
            self._reattach(endpoint)
            return runtime_error(
                "ServiceUnavailable",
                f"The model server of endpoint {name} is not listening ({type(exc).__name__}); it is "
                "being restarted: retry in a few seconds.",
            )
        return _model_error(
            name,
            f"The primary container closed the connection without answering ({type(exc).__name__}: "
            f"{exc}); its worker may have crashed or outlived SAGEMAKER_MODEL_SERVER_TIMEOUT. See "
            "the endpoint's log.",
        )

    def _launch(self, endpoint: LocalEndpoint) -> None:
        try:
            launch_endpoint_host(endpoint)
        except (OSError, subprocess.SubprocessError) as exc:
            log.exception("endpoint %s: could not start its host process", endpoint.name)
            LocalEndpoint.objects.filter(pk=endpoint.pk, generation=endpoint.generation).filter(
                status__in=SERVING
            ).update(
                status=EndpointStatus.FAILED,
                failure_reason=f"InternalServerError: could not start the endpoint's process: {exc}"[:1024],
                last_modified_time=now(),
                launched_at=None,
            )

    @staticmethod
    def _host_alive(endpoint: LocalEndpoint) -> bool:
        """Whether the endpoint's current host process is alive (or on its way up).

        On this machine the host's lock says it exactly; elsewhere (a shared database) the
        heartbeat does, after ``ANYJOB_LOCAL_HEARTBEAT_TIMEOUT``. A host launched but not yet
        in its row counts as alive for that long too."""
        cutoff = now() - timedelta(seconds=settings.ANYJOB_LOCAL_HEARTBEAT_TIMEOUT)
        starting = not endpoint.host and endpoint.launched_at is not None and endpoint.launched_at > cutoff
        if endpoint.machine == socket.gethostname():
            return starting or endpoint_host.lock_is_held(endpoint_root(endpoint))
        return starting or (endpoint.heartbeat is not None and endpoint.heartbeat > cutoff)

    def _reattach(self, endpoint: LocalEndpoint) -> LocalEndpoint | None:
        """The endpoint after making sure a live host serves it (None once it is deleted)."""
        if endpoint.status == EndpointStatus.FAILED or self._host_alive(endpoint):
            return endpoint
        here = endpoint.machine == socket.gethostname()
        if endpoint.status == EndpointStatus.DELETING:
            LocalEndpoint.objects.filter(
                pk=endpoint.pk, generation=endpoint.generation, status=EndpointStatus.DELETING
            ).delete()
            if here:
                shutil.rmtree(endpoint_root(endpoint), ignore_errors=True)
            return LocalEndpoint.objects.filter(pk=endpoint.pk).first()
        # Creating or InService with no host: a new generation takes over (exactly one caller
        # wins the update; a late host of the old generation can no longer claim the row).
        moved = (
            LocalEndpoint.objects.filter(pk=endpoint.pk, generation=endpoint.generation, status__in=SERVING)
            .exclude(status=EndpointStatus.FAILED)
            .update(
                generation=endpoint.generation + 1,
                host="",
                heartbeat=None,
                port=None,
                server_pid=None,
                launched_at=now(),
                machine=socket.gethostname(),
            )
        )
        fresh = LocalEndpoint.objects.filter(pk=endpoint.pk).first()
        if moved and fresh is not None:
            log.warning(
                "endpoint %s: its host process (%s) is gone; starting generation %d",
                fresh.name,
                endpoint.host or "never started",
                fresh.generation,
            )
            self._launch(fresh)
        return fresh

    @staticmethod
    def _endpoint(operation: str, name: str, for_update: bool = False) -> LocalEndpoint:
        rows = LocalEndpoint.objects.select_for_update() if for_update else LocalEndpoint.objects
        try:
            return rows.get(key=name.lower())
        except LocalEndpoint.DoesNotExist:
            raise _could_not_find(operation, "endpoint", "endpoint", name) from None

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _get(operation: str, name: str, for_update: bool = False) -> LocalTrainingJob:
        jobs = LocalTrainingJob.objects.select_for_update() if for_update else LocalTrainingJob.objects
        try:
            return jobs.get(key=name.lower())
        except LocalTrainingJob.DoesNotExist:
            raise client_error(operation, "ValidationException", NOT_FOUND) from None

    @staticmethod
    def _offset(operation: str, token: str | None) -> int:
        if not token:
            return 0
        try:
            offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
            if isinstance(offset, int) and offset >= 0:
                return offset
        except (ValueError, KeyError, TypeError):
            pass
        raise client_error(operation, "ValidationException", "The pagination token is not valid.")

    @staticmethod
    def reap_abandoned() -> int:
        """Fail active jobs whose process stopped sending heartbeats; returns how many."""
        timeout = timedelta(seconds=settings.ANYJOB_LOCAL_HEARTBEAT_TIMEOUT)
        cutoff = now() - timeout
        stale = Q(heartbeat__lt=cutoff) | Q(heartbeat__isnull=True, creation_time__lt=cutoff)
        reaped = 0
        for pk in LocalTrainingJob.objects.filter(stale, status__in=ACTIVE).values_list("pk", flat=True):
            with transaction.atomic():
                job = (
                    LocalTrainingJob.objects.select_for_update()
                    .filter(stale, pk=pk, status__in=ACTIVE)
                    .first()
                )
                if job is None:
                    continue  # it moved on meanwhile
                if job.executor:
                    reason = (
                        f"InternalServerError: the process running this job ({job.executor}) stopped "
                        f"sending heartbeats for over {timeout.total_seconds():g} s; the job was abandoned."
                    )
                else:
                    reason = "InternalServerError: the process for this job never started."
                states.finish(job, Status.FAILED, "Failed", reason)
                job.save()
                reaped += 1
                log.warning("training job %s failed: %s", job.name, reason)
            _release_leftovers(job)
        return reaped
