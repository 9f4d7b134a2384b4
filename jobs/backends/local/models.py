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

import time
from typing import Any

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


class LogEvent(models.Model):
    """One line of a log, as CloudWatch keeps it; ``seq`` orders the lines of one owner."""

    seq = models.BigIntegerField()
    stream = models.CharField(max_length=128)
    timestamp = models.BigIntegerField()  # ms since the epoch, when the line was written
    ingestion_time = models.BigIntegerField()
    message = models.TextField()

    class Meta:
        abstract = True

    @classmethod
    def store_batch(
        cls, owner: dict[str, Any], stream: str, batch: list[tuple[int, str]], last_seq: int, max_events: int
    ) -> int:
        """Write ``batch`` (``(ms, line)`` pairs) after ``last_seq`` for ``owner`` (the foreign
        key, as filter keywords); beyond ``max_events`` the oldest go (pages show the tail).
        Returns the new last ``seq``."""
        ingested = int(time.time() * 1000)
        cls.objects.bulk_create(
            [
                cls(
                    **owner,
                    seq=last_seq + i,
                    stream=stream,
                    timestamp=stamp,
                    ingestion_time=ingested,
                    message=line,
                )
                for i, (stamp, line) in enumerate(batch, 1)
            ],
            batch_size=500,
        )
        seq = last_seq + len(batch)
        if seq > max_events:
            cls.objects.filter(**owner, seq__lte=seq - max_events).delete()
        return seq


class LocalLogEvent(LogEvent):
    """One line of a job's log; ``seq`` orders events of a job."""

    job = models.ForeignKey(LocalTrainingJob, on_delete=models.CASCADE, related_name="log_events")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="local_log_event_seq")]


class LocalMetricBatch(models.Model):
    """Points of one metric of a job, as CloudWatch holds a job's metrics: what one flush of
    its log writer captured (``points`` packs ``(unix_ms, value)`` as ``<qd``, the packing of
    ``jobs.metrics``). Steps number every value the job printed for the metric, from 1: a batch
    covers ``dropped + count`` steps from ``first_step``, its ``dropped`` ones (past the
    emulator's bound, ``jobs.metrics.MAX_POINTS``: counted, not kept) before its ``count``
    points. Past the bound each metric has one such row, rewritten with its newest point."""

    job = models.ForeignKey(LocalTrainingJob, on_delete=models.CASCADE, related_name="metric_batches")
    name = models.CharField(max_length=255)
    first_step = models.PositiveBigIntegerField()
    count = models.PositiveIntegerField()
    dropped = models.PositiveBigIntegerField(default=0)
    points = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "name", "first_step"], name="local_metric_batch_step")
        ]

    def __str__(self) -> str:
        return f"{self.job_id}:{self.name}@{self.first_step}"


# -- endpoints -------------------------------------------------------------------------------
#
# A model and an endpoint config are plain records of their requests. An endpoint keeps a
# copy of both as they were when it was created (as SageMaker does: deleting the config or
# the model later does not touch a running endpoint), and is served by one detached "host"
# process (``endpoint_host.py``) that runs the container's ``serve`` in the sandbox.
#
# Endpoint status (``EndpointStatus``)::
#
#     Creating ──▶ InService ──▶ Deleting ──▶ (row deleted)
#         │            │
#         └──▶ Failed ◀┘ (the model server never passed /ping, or could not come back)
#     Creating, InService, Failed ──▶ Deleting (DeleteEndpoint)
#
# Ownership: ``generation`` counts host processes started for the endpoint; a host acts on the
# row only while the row still has its generation and its ``host`` identity, so a replaced
# host can never write over its successor. ``LocalBackend.reattach_endpoints`` starts a new
# generation for an endpoint that should be serving but whose host is gone.


class EndpointStatus(models.TextChoices):
    CREATING = "Creating"
    IN_SERVICE = "InService"
    FAILED = "Failed"
    DELETING = "Deleting"


#: Endpoints that need a live host process.
SERVING = (EndpointStatus.CREATING, EndpointStatus.IN_SERVICE)


class LocalModel(models.Model):
    """``CreateModel``: the request as received (after validation)."""

    name = models.CharField(max_length=63)
    key = models.CharField(max_length=63, unique=True)  # the name in lower case
    arn = models.CharField(max_length=256)
    request = models.JSONField()
    creation_time = models.DateTimeField()

    def __str__(self) -> str:
        return self.name


class LocalEndpointConfig(models.Model):
    """``CreateEndpointConfig``: the request as received (after validation)."""

    name = models.CharField(max_length=63)
    key = models.CharField(max_length=63, unique=True)
    arn = models.CharField(max_length=256)
    request = models.JSONField()
    creation_time = models.DateTimeField()

    def __str__(self) -> str:
        return self.name


class LocalEndpoint(models.Model):
    name = models.CharField(max_length=63)
    key = models.CharField(max_length=63, unique=True)
    arn = models.CharField(max_length=256)
    #: Names this endpoint's folder (``<ANYJOB_LOCAL_ROOT>/_endpoints/<key>-<uid>``), so a
    #: new endpoint of the same name never shares a folder with one still being removed.
    uid = models.CharField(max_length=32)
    #: The CreateEndpoint request, and copies of its config's and model's requests.
    request = models.JSONField()
    config = models.JSONField()
    model = models.JSONField()
    status = models.CharField(max_length=16, choices=EndpointStatus.choices, default=EndpointStatus.CREATING)
    failure_reason = models.TextField(blank=True)
    creation_time = models.DateTimeField()
    last_modified_time = models.DateTimeField()
    #: Host processes started so far; the current one owns the row (see above).
    generation = models.PositiveIntegerField(default=1)
    #: When the current generation's host was launched.
    launched_at = models.DateTimeField(null=True, blank=True)
    #: "machine:pid" of the host process once it has claimed the row, and its machine.
    host = models.CharField(max_length=128, blank=True)
    machine = models.CharField(max_length=128, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)
    #: Where the model server listens on 127.0.0.1 while it answers /ping; None otherwise.
    port = models.PositiveIntegerField(null=True, blank=True)
    #: Host pid of the model server's main process (the container's ``python``), for diagnostics.
    server_pid = models.PositiveIntegerField(null=True, blank=True)
    #: Facts about how the endpoint runs (e.g. no sandbox) that the service's shape cannot carry.
    notes = models.JSONField(default=list)

    class Meta:
        indexes = [models.Index(fields=["status", "heartbeat"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class LocalEndpointLogEvent(LogEvent):
    """One line of an endpoint's log; ``seq`` orders them."""

    endpoint = models.ForeignKey(LocalEndpoint, on_delete=models.CASCADE, related_name="log_events")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "seq"], name="local_endpoint_log_event_seq")
        ]
