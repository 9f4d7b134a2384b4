"""SageMaker's training-job operations through the API, each one a dashboard action.

A job made with ``CreateTrainingJob`` is a dashboard job: a ``jobs.models.TrainingJob`` row owned
by the key's user, with its hyperparameters typed back (``jobs.importer``), its channels,
resources, environment, tags and metric definitions, and its code registered as a bundle
(``codebundle``), so the history, the job page, clone and deploy treat it as a form job. It is
submitted here, synchronously, through the configured backend: the row goes Submitting →
InProgress (update-where, as ``jobs.tasks.submit_job`` moves it), and from then on the poller
follows it like any other. A request the backend refuses leaves no row: AWS keeps no job it
refused.

Describe and List answer from the backend (live, as the boto3 waiters need). Everyone on the
team sees every job; stopping one is its owner's or staff's (``jobs.permissions.may_change``).

Importing this module registers every SageMaker operation (endpoints and tags live in
``endpoint_ops`` and ``tag_ops``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from jobs.awsapi import codebundle
from jobs.awsapi.common import (
    access_denied,
    arn_for,
    call,
    check,
    refuse_reserved_tags,
    shaped,
    timestamps,
)
from jobs.awsapi.registry import ApiError, Context, operation
from jobs.backends import get_backend
from jobs.importer import job_fields
from jobs.models import TrainingJob
from jobs.permissions import may_change
from jobs.requests import JOB_ID_TAG
from jobs.tasks import move

log = logging.getLogger(__name__)
Status = TrainingJob.Status

#: The fields of a ``TrainingJob`` row a request sets (``importer.job_fields`` reads them).
_ROW_FIELDS = (
    "entry_point",
    "source_uri",
    "hyperparameters",
    "channels",
    "instance_type",
    "instance_count",
    "volume_size_gb",
    "max_runtime_seconds",
    "output_path",
    "environment",
    "network_isolation",
)
#: Environment variables whose values are kept secret on the dashboard (never shown again), as
#: a form user would have marked them.
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSW|API_?KEY|ACCESS_?KEY|PRIVATE|CREDENTIAL", re.IGNORECASE)


def taken_message(arn: str) -> str:
    return (
        "Training job names must be unique within an AWS account and region, and a training job "
        f"with this name already exists ({arn})"
    )


def row_fields(request: Mapping[str, Any]) -> dict[str, Any]:
    """The dashboard row of a ``CreateTrainingJob`` request."""
    found = job_fields({**request, "TrainingJobStatus": Status.SUBMITTING})
    fields = {key: found[key] for key in _ROW_FIELDS}
    for key, member in (("entry_point", "sagemaker_program"), ("source_uri", "sagemaker_submit_directory")):
        limit = TrainingJob._meta.get_field(key).max_length
        if len(fields[key]) > limit:  # the history keeps no more (AWS allows a 2,500-character value)
            raise ApiError(
                "ValidationException",
                f"The hyperparameter {member} is longer than anyjob keeps ({limit} characters).",
            )
    fields["max_runtime_seconds"] = int(fields["max_runtime_seconds"])
    fields["volume_size_gb"] = int(fields["volume_size_gb"] or 1)
    fields["instance_count"] = int(fields["instance_count"] or 1)
    fields["secret_environment"] = sorted(k for k in fields["environment"] if _SECRET_NAME.search(k))
    fields["tags"] = [{"key": t["Key"], "value": t.get("Value", "")} for t in request.get("Tags") or []]
    spec = request.get("AlgorithmSpecification") or {}
    fields["metric_definitions"] = [
        {"name": m.get("Name", ""), "regex": m.get("Regex", "")} for m in spec.get("MetricDefinitions") or []
    ]
    return fields


def _existing_arn(backend: Any, name: str) -> str:
    try:
        return backend.describe_training_job(name)["TrainingJobArn"]
    except (ClientError, BotoCoreError):  # not at the backend (yet): a form job still Pending
        return arn_for("training-job", name, settings.ANYJOB_REGION)


@operation("sagemaker", "CreateTrainingJob")
def create_training_job(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    op = "CreateTrainingJob"
    backend = get_backend()
    check(op, params, backend)
    refuse_reserved_tags(params.get("Tags"))
    name = params["TrainingJobName"]
    fields = row_fields(params)
    existing = TrainingJob.objects.filter(name__iexact=name).values_list("name", flat=True).first()
    if existing is not None:
        raise ApiError("ResourceInUse", taken_message(_existing_arn(backend, existing)))
    try:
        with transaction.atomic():
            job = TrainingJob.objects.create(owner=ctx.user, name=name, status=Status.SUBMITTING, **fields)
            # The row's id travels as a tag, as a form job's: a resubmit after a lost answer
            # proves by it that the backend's job is this row's (``tasks.check_ours``).
            request = {
                **params,
                "Tags": [*(params.get("Tags") or []), {"Key": JOB_ID_TAG, "Value": str(job.pk)}],
            }
            TrainingJob.objects.filter(pk=job.pk).update(request=request)
    except IntegrityError:  # made meanwhile, in another case
        raise ApiError("ResourceInUse", taken_message(_existing_arn(backend, name))) from None
    try:
        answer = call(backend.create_training_job, request)
    except Exception:
        TrainingJob.objects.filter(pk=job.pk, status=Status.SUBMITTING).delete()
        raise
    move(TrainingJob, job.pk, Status.SUBMITTING, Status.IN_PROGRESS, submitted_at=timezone.now())
    _register_code(job, params)
    return {"TrainingJobArn": answer["TrainingJobArn"]}


def _register_code(job: TrainingJob, request: Mapping[str, Any]) -> None:
    """The job's code as a dashboard bundle, once the backend runs the job (never before)."""
    found = codebundle.register(request, job.entry_point)
    if found is None:
        return
    TrainingJob.objects.filter(pk=job.pk).update(
        source_sha256=found.sha256, source_uri=found.uri, entry_point=found.entry_point or job.entry_point
    )


@operation("sagemaker", "DescribeTrainingJob")
def describe_training_job(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    check("DescribeTrainingJob", params)
    described = call(get_backend().describe_training_job, params["TrainingJobName"])
    return shaped("DescribeTrainingJob", described)


@operation("sagemaker", "ListTrainingJobs")
def list_training_jobs(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    op = "ListTrainingJobs"
    params = timestamps(op, params)
    check(op, params)
    return shaped(op, call(get_backend().list_training_jobs, **params))


@operation("sagemaker", "StopTrainingJob")
def stop_training_job(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    op = "StopTrainingJob"
    check(op, params)
    name = params["TrainingJobName"]
    backend = get_backend()
    job = TrainingJob.objects.filter(name__iexact=name).first()
    if job is not None and not may_change(ctx.user, job.owner_id):
        raise access_denied(ctx, op, _existing_arn(backend, job.name))
    call(backend.stop_training_job, name)
    if job is not None:
        TrainingJob.objects.filter(pk=job.pk, stop_requested_at__isnull=True).update(
            stop_requested_at=timezone.now()
        )
        move(TrainingJob, job.pk, Status.IN_PROGRESS, Status.STOPPING)
    return {}


# The other SageMaker operations register themselves on import.
from jobs.awsapi import endpoint_ops, tag_ops  # noqa: E402, F401
