"""Secondary statuses and how a job's row moves between them (shared by backend and executor).

The messages are the service's own, so the dashboard shows the same words for both backends.
"""

from __future__ import annotations

from datetime import datetime

from django.utils.timezone import now

from jobs.backends.local.models import LocalTrainingJob, Status

MESSAGES = {
    "Starting": "Launching requested ML instances",
    "Downloading": "Downloading input data",
    "Training": "Training image download completed. Training in progress.",
    "Uploading": "Uploading generated training model",
    "Completed": "Training job completed",
    "Failed": "Training job failed",
    "Stopping": "Stopping the training job",
    "Stopped": "Training job stopped",
    "MaxRuntimeExceeded": "Training job stopped because it ran longer than MaxRuntimeInSeconds",
    "Interrupted": "Training job interrupted",
}


def advance(
    job: LocalTrainingJob, secondary: str, at: datetime | None = None, message: str | None = None
) -> None:
    """Append a SecondaryStatusTransition (closing the previous one); the caller saves."""
    at = at or now()
    stamp = at.isoformat()
    if job.transitions and "EndTime" not in job.transitions[-1]:
        job.transitions[-1]["EndTime"] = stamp
    job.transitions.append(
        {"Status": secondary, "StartTime": stamp, "StatusMessage": message or MESSAGES[secondary]}
    )
    job.secondary_status = secondary
    job.last_modified_time = at


def finish(job: LocalTrainingJob, status: Status, secondary: str, failure_reason: str = "") -> None:
    """Move the job to a final status; the caller saves (inside a transaction)."""
    at = now()
    advance(job, secondary, at)
    job.transitions[-1]["EndTime"] = at.isoformat()
    job.status = status
    job.failure_reason = failure_reason
    job.training_end_time = at
    if job.training_start_time is None:
        job.training_start_time = at
