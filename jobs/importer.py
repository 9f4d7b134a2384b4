"""Import the account's training jobs into the team history, including ones started outside anyjob.

``ListTrainingJobs`` (every page) names them; ``DescribeTrainingJob`` is called only for a job
that is new here or whose status or ``LastModifiedTime`` changed, so a second run costs one
list sweep. A job already in the history is updated, never duplicated; its owner is kept.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction

from anyjob_container.environment import decode_value, is_reserved
from jobs import metric_poll
from jobs.backends import get_backend
from jobs.backends.base import Backend
from jobs.descriptions import description_fields, failure_text
from jobs.models import TrainingJob, searchable_text

log = logging.getLogger(__name__)


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    #: Metric points brought in with them.
    points: int = 0

    def __str__(self) -> str:
        text = f"{self.created} imported, {self.updated} updated, {self.unchanged} unchanged"
        return text + (f", {self.points:,} metric points" if self.points else "")


def typed_hyperparameter(key: str, raw: str) -> dict[str, str]:
    """A hyperparameter as the form's row: the SDK's JSON encoding (or a raw boto3 string)
    read back with its type."""
    value = decode_value(raw)
    if isinstance(value, bool):
        return {"key": key, "value": "true" if value else "false", "type": "boolean"}
    if isinstance(value, int | float):
        return {"key": key, "value": raw.strip(), "type": "number"}
    if isinstance(value, str):
        return {"key": key, "value": value, "type": "string"}
    return {"key": key, "value": json.dumps(value, separators=(",", ":")), "type": "json"}


def job_fields(described: dict[str, Any]) -> dict[str, Any]:
    """A ``TrainingJob``'s fields from a ``DescribeTrainingJob`` answer."""
    hps = described.get("HyperParameters") or {}
    resources = described.get("ResourceConfig") or {}
    group = (resources.get("InstanceGroups") or [{}])[0]
    program = decode_value(hps.get("sagemaker_program", ""))
    source = decode_value(hps.get("sagemaker_submit_directory", ""))
    channels = []
    for channel in described.get("InputDataConfig") or []:
        s3 = (channel.get("DataSource") or {}).get("S3DataSource") or {}
        channels.append(
            {
                "name": channel.get("ChannelName", ""),
                "uri": s3.get("S3Uri", ""),
                "content_type": channel.get("ContentType", ""),
                "input_mode": channel.get("InputMode", ""),
            }
        )
    return {
        "entry_point": program if isinstance(program, str) else "",
        "source_uri": source if isinstance(source, str) else "",
        "hyperparameters": [typed_hyperparameter(k, v) for k, v in sorted(hps.items()) if not is_reserved(k)],
        "channels": channels,
        "instance_type": resources.get("InstanceType") or group.get("InstanceType", ""),
        "instance_count": resources.get("InstanceCount") or group.get("InstanceCount", 1),
        "volume_size_gb": resources.get("VolumeSizeInGB") or 1,
        "max_runtime_seconds": (described.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds", 86_400),
        "output_path": (described.get("OutputDataConfig") or {}).get("S3OutputPath", ""),
        "environment": described.get("Environment") or {},
        "network_isolation": bool(described.get("EnableNetworkIsolation")),
        "metric_definitions": [
            {"name": d.get("Name", ""), "regex": d.get("Regex", "")}
            for d in (described.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []
        ],
        "status": described["TrainingJobStatus"],
        **description_fields(described),
    }


def import_jobs(owner: Any, *, backend: Backend | None = None, since: datetime | None = None) -> ImportResult:
    """Bring every job of the account (created after ``since``) into the history; new ones
    are owned by ``owner``."""
    backend = backend or get_backend()
    params: dict[str, Any] = {"MaxResults": 100, "SortBy": "CreationTime", "SortOrder": "Descending"}
    if since is not None:
        params["CreationTimeAfter"] = since
    summaries: list[dict[str, Any]] = []
    while True:
        page = backend.list_training_jobs(**params)
        summaries += page.get("TrainingJobSummaries", [])
        if not page.get("NextToken"):
            break
        params["NextToken"] = page["NextToken"]
    result = ImportResult()
    moved: list[str] = []  # jobs created or updated: their metrics are read too
    names = [s["TrainingJobName"] for s in summaries]
    known = {}
    for i in range(0, len(names), 500):
        known.update(
            {
                j.name: j
                for j in TrainingJob.objects.filter(name__in=names[i : i + 500]).only(
                    "pk", "name", "status", "last_modified"
                )
            }
        )
    for summary in summaries:
        name = summary["TrainingJobName"]
        row = known.get(name)
        if (
            row is not None
            and row.status == summary["TrainingJobStatus"]
            and row.last_modified == summary.get("LastModifiedTime")
        ):
            result.unchanged += 1
            continue
        fields = job_fields(backend.describe_training_job(name))
        # QuerySet.update() skips save(), which keeps the search column: set it here.
        fields["search_text"] = searchable_text(name, fields["hyperparameters"], fields["channels"])
        if fields["status"] == TrainingJob.Status.FAILED:
            fields["failure_text"] = failure_text(backend, name)
        moved.append(name)
        if row is not None:
            TrainingJob.objects.filter(pk=row.pk).update(**fields)
            result.updated += 1
            continue
        try:
            with transaction.atomic():
                job = TrainingJob.objects.create(owner=owner, name=name, imported=True, **fields)
                if fields.get("creation_time"):  # the history sorts by when the job was made
                    TrainingJob.objects.filter(pk=job.pk).update(created_at=fields["creation_time"])
        except IntegrityError:  # created meanwhile (a concurrent import): update it instead
            TrainingJob.objects.filter(name=name).update(**fields)
            result.updated += 1
            continue
        result.created += 1
    for i in range(0, len(moved), 500):
        rows = list(TrainingJob.objects.filter(name__in=moved[i : i + 500]))
        result.points += metric_poll.store(backend, rows)
    log.info("import of training jobs: %s", result)
    return result
