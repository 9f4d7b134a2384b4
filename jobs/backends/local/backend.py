"""The ``local`` backend: SageMaker's training API, answered by an emulator on this machine.

``create_training_job`` validates the request as AWS does (``jobs.api_limits``), records the
job and starts one detached job process (``executor.py``) that stages the channels, runs the
generic container's ``train`` in a sandbox, uploads the artifacts and records every status.
Nothing here waits for a job: every other call reads and writes the job's row.

A job whose process died (machine restart, OOM kill) stops sending heartbeats; the next
describe or list call fails it with a reason instead of leaving it ``InProgress`` forever.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils.timezone import now

from jobs import api_limits, storage
from jobs.backends.base import Backend
from jobs.backends.local import states
from jobs.backends.local.models import ACTIVE, LocalLogEvent, LocalTrainingJob, Status

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
    if resources.get("InstanceCount", 1) != 1:
        problems.append(
            (
                "ResourceConfig.InstanceCount",
                "ResourceLimitExceeded",
                f"The local backend runs one instance per job; InstanceCount {resources['InstanceCount']} "
                "needs the sagemaker backend.",
            )
        )
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
    return problems


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
        "hide": [str(settings.VAR_DIR), str(settings.ANYJOB_LOCAL_ROOT), str(Path.home())],
        "stop_grace_seconds": settings.ANYJOB_LOCAL_STOP_GRACE_SECONDS,
        "heartbeat_seconds": settings.ANYJOB_LOCAL_HEARTBEAT_SECONDS,
        "max_log_events": settings.ANYJOB_LOCAL_MAX_LOG_EVENTS,
        "max_channel_bytes": settings.ANYJOB_LOCAL_MAX_CHANNEL_BYTES,
        "django_settings": os.environ.get("DJANGO_SETTINGS_MODULE", "webapp.settings"),
    }
    plan_file = job_root / "plan.json"
    plan_file.write_text(json.dumps(plan))
    subprocess.run(
        [sys.executable, "-m", "jobs.backends.local.executor", "--detach", str(plan_file)],
        cwd=settings.BASE_DIR,
        stdin=subprocess.DEVNULL,
        check=True,
        timeout=30,
    )


class LocalBackend(Backend):
    name = "local"

    # -- training jobs ---------------------------------------------------------------------
    def create_training_job(self, request: Mapping[str, Any]) -> dict[str, Any]:
        op = "CreateTrainingJob"
        api_limits.check(op, as_s3_shaped(request))
        _check_local(request)
        name = request["TrainingJobName"]
        arn = f"arn:aws:sagemaker:{settings.ANYJOB_REGION}:{ACCOUNT}:training-job/{name.lower()}"
        at = now()
        job = LocalTrainingJob(
            name=name,
            key=name.lower(),
            arn=arn,
            request=json.loads(json.dumps(dict(request), default=str)),
            creation_time=at,
            last_modified_time=at,
        )
        states.advance(job, "Starting", at)
        try:
            with transaction.atomic():
                job.save()
        except IntegrityError:
            raise client_error(
                op,
                "ResourceInUse",
                "Training job names must be unique within an AWS account and region, "
                f"and a training job with this name already exists ({arn})",
            ) from None
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
        after = -1
        if next_token:
            try:
                after = int(next_token.removeprefix("f/"))
            except ValueError:
                raise client_error(
                    "GetLogEvents", "InvalidParameterException", "The specified nextToken is invalid."
                ) from None
        events = list(
            LocalLogEvent.objects.filter(job=job, seq__gt=after).order_by("seq")[: max(1, min(limit, 10_000))]
        )
        last = events[-1].seq if events else after
        return {"events": [_event(e) for e in events], "nextForwardToken": f"f/{last}"}

    def tail_training_logs(self, name: str, lines: int) -> tuple[list[dict[str, Any]], str | None, bool]:
        job = self._get("GetLogEvents", name)
        newest = list(LocalLogEvent.objects.filter(job=job).order_by("-seq")[: lines + 1])
        older = len(newest) > lines
        events = list(reversed(newest[:lines]))
        token = f"f/{events[-1].seq}" if events else "f/-1"
        return [_event(e) for e in events], token, older

    def preflight(self, request: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [(path, message) for path, _, message in local_problems(request)]

    def job_notes(self, name: str) -> list[str]:
        return list(self._get("DescribeTrainingJob", name).notes)

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
        return reaped
