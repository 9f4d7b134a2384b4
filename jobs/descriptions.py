"""A ``DescribeTrainingJob`` answer as a ``TrainingJob`` row's fields (for the poller and the
importer alike)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from jobs import storage
from jobs.backends.base import Backend

log = logging.getLogger(__name__)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def description_fields(described: dict[str, Any]) -> dict[str, Any]:
    """The row's fields that a ``DescribeTrainingJob`` answer sets (not the status)."""
    return {
        "secondary_status": described.get("SecondaryStatus", ""),
        "transitions": _jsonable(described.get("SecondaryStatusTransitions", [])),
        "failure_reason": described.get("FailureReason", ""),
        "final_metrics": _jsonable(described.get("FinalMetricDataList", [])),
        "model_artifacts": (described.get("ModelArtifacts") or {}).get("S3ModelArtifacts", ""),
        "creation_time": described.get("CreationTime"),
        "training_start_time": described.get("TrainingStartTime"),
        "training_end_time": described.get("TrainingEndTime"),
        "billable_seconds": described.get("BillableTimeInSeconds"),
        "last_modified": described.get("LastModifiedTime"),
    }


def failure_text(backend: Backend, name: str) -> str:
    """The full failure file our container leaves in ``output.tar.gz`` ("" when there is none)."""
    try:
        data = backend.read_artifact_file(name, "output", "failure")
    except (storage.StorageError, ClientError, BotoCoreError) as exc:
        log.info("no failure file for %s: %s", name, exc)
        return ""
    return data.decode("utf-8", errors="replace")
