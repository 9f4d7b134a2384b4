"""The local emulator's state: one row per training job, and its log events.

State lives in the database, not in any process: the web server, every worker and every
job process see the same jobs, and a restarted worker finds them where they were. At team
scale the database is PostgreSQL, shared by every machine.

Job status (``TrainingJobStatus``), with the allowed transitions::

    InProgress ──▶ Completed | Failed
        │
        └──▶ Stopping ──▶ Stopped        (StopTrainingJob, MaxRuntimeInSeconds)
                     └──▶ Failed / Completed (the job finished before it could stop)

Every change is an "update where the status is still X" (see ``backend.py``), so two
processes can never both move a job, and exactly one process (the ``executor``) runs it.
"""

from __future__ import annotations

from django.db import models


class Status(models.TextChoices):
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"


ACTIVE = (Status.IN_PROGRESS, Status.STOPPING)
FINAL = (Status.COMPLETED, Status.FAILED, Status.STOPPED)


class LocalTrainingJob(models.Model):
    name = models.CharField(max_length=63)
    #: The name in lower case: SageMaker names are unique regardless of case.
    key = models.CharField(max_length=63, unique=True)
    arn = models.CharField(max_length=256)
    #: The CreateTrainingJob request as received (after validation).
    request = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.IN_PROGRESS)
    secondary_status = models.CharField(max_length=32, default="Starting")
    #: SecondaryStatusTransitions: [{"Status", "StartTime", "EndTime"?, "StatusMessage"}], times ISO 8601.
    transitions = models.JSONField(default=list)
    failure_reason = models.TextField(blank=True)
    final_metrics = models.JSONField(default=list)
    model_artifacts = models.CharField(max_length=1024, blank=True)
    creation_time = models.DateTimeField()
    last_modified_time = models.DateTimeField(db_index=True)
    training_start_time = models.DateTimeField(null=True, blank=True)
    training_end_time = models.DateTimeField(null=True, blank=True)
    #: Why a stop was asked for: "" (not asked), "user" (StopTrainingJob) or "max_runtime".
    stop_reason = models.CharField(max_length=16, blank=True)
    #: "host:pid" of the one process running the job, set when it claims the job.
    executor = models.CharField(max_length=128, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)
    #: Facts about how the job ran (e.g. no sandbox) that the service's shape cannot carry.
    notes = models.JSONField(default=list)

    class Meta:
        indexes = [models.Index(fields=["status", "heartbeat"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class LocalLogEvent(models.Model):
    """One line of a job's log, as CloudWatch keeps it; ``seq`` orders events of a job."""

    job = models.ForeignKey(LocalTrainingJob, on_delete=models.CASCADE, related_name="log_events")
    seq = models.BigIntegerField()
    stream = models.CharField(max_length=128)
    timestamp = models.BigIntegerField()  # ms since the epoch, when the line was written
    ingestion_time = models.BigIntegerField()
    message = models.TextField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="local_log_event_seq")]
