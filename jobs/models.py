"""The dashboard's own state: training jobs as submitted, and the poller's watermark.

Job state lives here; Redis holds only messages (DESIGN.md, "Data flow").
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from django.utils.timezone import now

#: ``search_text`` keeps at most this many UTF-8 bytes, so that an index entry holding it stays
#: under PostgreSQL's B-tree limit (2,704 bytes); typical jobs need a tenth of it.
SEARCH_TEXT_MAX_BYTES = 2000
#: First character of a ``search_text`` that was cut: such a job is also searched in its JSON
#: fields. (A prefix test costs one character per row; ``LENGTH()`` would count them all.)
SEARCH_TEXT_CUT = "\x1e"
#: What ``search_text`` is made of, so ``save()`` refreshes it when one of them changes.
SEARCHED_FIELDS = ("name", "hyperparameters", "channels")


def searchable_text(name: str, hyperparameters: Any, channels: Any) -> str:
    """The history's free-text search target, in lower case, one item a line: the name, each
    hyperparameter as ``key=value``, each channel's name, URI and content type. Longer than
    ``SEARCH_TEXT_MAX_BYTES``, it is cut and starts with ``SEARCH_TEXT_CUT``."""
    lines = [name]
    for hp in hyperparameters if isinstance(hyperparameters, list) else []:
        if isinstance(hp, dict):
            lines.append(f"{hp.get('key', '')}={hp.get('value', '')}")
    for channel in channels if isinstance(channels, list) else []:
        if isinstance(channel, dict):
            lines += [str(channel.get(k) or "") for k in ("name", "uri", "content_type")]
    text = "\n".join(lines).lower()
    encoded = text.encode()
    if len(encoded) <= SEARCH_TEXT_MAX_BYTES:
        return text
    room = SEARCH_TEXT_MAX_BYTES - len(SEARCH_TEXT_CUT.encode())
    return SEARCH_TEXT_CUT + encoded[:room].decode(errors="ignore")


class TrainingJob(models.Model):
    """One training job, from the form to its final state.

    ``name`` is the SageMaker ``TrainingJobName``, fixed at creation, unique regardless of case
    (as SageMaker's names are: ``LONG-RUN`` would be someone's ``long-run``). ``request`` is the exact
    ``CreateTrainingJob`` request sent (empty until submitted).

    Allowed status transitions (each one an update-where on the current status):

    - Pending → Submitting (a worker took the job) ;
    - SubmitFailed → Submitting (resubmitted) ;
    - Submitting → InProgress (the backend accepted it, or already had it: ``ResourceInUse``) ;
    - Submitting → SubmitFailed (the backend refused it; ``error`` says why, in one line) ;
    - InProgress → Completed | Failed | Stopping | Stopped (as the poller sees it) ;
    - Stopping → Stopped | Completed | Failed ;
    - Pending | SubmitFailed → Stopped (stopped before the backend had it), and Submitting →
      Stopped (a stop asked for while the backend refused it).

    Completed, Failed and Stopped are final. A job row is never deleted by the workers.

    A stop asked for while a worker submits the job (Submitting, when ``stop_job`` cannot act
    yet) is kept in ``stop_requested_at`` and applied by ``submit_job`` once the backend has
    the job.
    """

    class Status(models.TextChoices):
        PENDING = "Pending"
        SUBMITTING = "Submitting"
        SUBMIT_FAILED = "SubmitFailed"
        IN_PROGRESS = "InProgress"
        COMPLETED = "Completed"
        FAILED = "Failed"
        STOPPING = "Stopping"
        STOPPED = "Stopped"

    FINAL = (Status.COMPLETED, Status.FAILED, Status.STOPPED)
    #: Statuses the backend knows about: the poller follows these.
    RUNNING = (Status.IN_PROGRESS, Status.STOPPING)

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="training_jobs"
    )
    name = models.CharField(max_length=63, unique=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="clones"
    )

    entry_point = models.CharField(max_length=255)
    source_sha256 = models.CharField(max_length=64, blank=True)
    source_uri = models.CharField(max_length=1024, blank=True)
    #: ``[{"key", "value", "type": "string"|"number"|"boolean"|"json"}]``
    hyperparameters = models.JSONField(default=list, blank=True)
    #: ``[{"name", "uri", "content_type", "input_mode"}]``
    channels = models.JSONField(default=list, blank=True)
    instance_type = models.CharField(max_length=64, default="ml.m5.large")
    instance_count = models.PositiveIntegerField(default=1)
    volume_size_gb = models.PositiveIntegerField(default=1)
    max_runtime_seconds = models.PositiveIntegerField(default=3600)
    output_path = models.CharField(max_length=1024, blank=True)
    environment = models.JSONField(default=dict, blank=True)
    #: Keys of ``environment`` whose values are secret: sent, never shown (``jobs.redact``).
    secret_environment = models.JSONField(default=list, blank=True)
    tags = models.JSONField(default=list, blank=True)
    #: ``[{"name", "regex"}]``: SageMaker's ``AlgorithmSpecification.MetricDefinitions``.
    metric_definitions = models.JSONField(default=list, blank=True)
    network_isolation = models.BooleanField(default=False)
    request = models.JSONField(default=dict, blank=True)
    #: Started outside anyjob and imported from the account (``manage.py import_jobs``).
    imported = models.BooleanField(default=False)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.CharField(max_length=1000, blank=True)
    #: When a stop was asked for (see the docstring); None when nobody asked.
    stop_requested_at = models.DateTimeField(null=True, blank=True)
    secondary_status = models.CharField(max_length=64, blank=True)
    transitions = models.JSONField(default=list, blank=True)
    failure_reason = models.TextField(blank=True)
    failure_text = models.TextField(blank=True)
    final_metrics = models.JSONField(default=list, blank=True)
    model_artifacts = models.CharField(max_length=1024, blank=True)

    creation_time = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    training_start_time = models.DateTimeField(null=True, blank=True)
    training_end_time = models.DateTimeField(null=True, blank=True)
    billable_seconds = models.PositiveIntegerField(null=True, blank=True)
    last_modified = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    #: ``searchable_text()`` of the row, set by ``save()`` (``QuerySet.update()`` and
    #: ``bulk_create()`` skip it: pass it yourself when they set a searched field).
    search_text = models.TextField(blank=True, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(Lower("name"), name="jobs_trainingjob_name_any_case")]
        indexes = [
            # Each index a history page is read in holds ``search_text``: SQLite then checks
            # ``search_text LIKE '%…%'`` in the index (a tenth of the table) and reads only the
            # rows it shows, for COUNT(*) and for the page (see jobs.history._search). An owner
            # filter reads that owner's rows.
            # Newest first (the default), a date range.
            models.Index(fields=["created_at", "id", "search_text"], name="jobs_created_search_idx"),
            # A status filter, and ?sort=-status (read backwards).
            models.Index(fields=["status", "created_at", "id", "search_text"], name="jobs_status_search_idx"),
            # ?sort=status: newest first within each status (without it SQLite sorts a status).
            models.Index(
                fields=["status", "-created_at", "-id", "search_text"], name="jobs_status_newest_idx"
            ),
            # ?sort=name and -name (the unique index on name alone would read every row); with
            # the id, PostgreSQL reads a page's ids in it alone (SQLite's indexes hold it anyway).
            models.Index(fields=["name", "search_text", "id"], name="jobs_name_search_id_idx"),
            models.Index(fields=["owner", "created_at"]),
            # The jobs of a status as a list of ids (the history sorted or filtered by a metric
            # and a status: jobs.history.MetricOrdered): a thirtieth of the indexes above.
            models.Index(fields=["status", "id"], name="jobs_status_id_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.search_text = searchable_text(self.name, self.hyperparameters, self.channels)
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and set(SEARCHED_FIELDS) & set(update_fields):
            kwargs["update_fields"] = {*update_fields, "search_text"}
        super().save(*args, **kwargs)

    @property
    def duration(self) -> timedelta | None:
        """Training time: start to end, or to now while it runs; ``None`` before it starts."""
        if self.training_start_time is None:
            return None
        if self.training_end_time is not None:
            return self.training_end_time - self.training_start_time
        if self.status in self.RUNNING:
            return now() - self.training_start_time
        return None


class PollState(models.Model):
    """A single row (pk 1): the ``LastModifiedTime`` up to which the poller has seen changes,
    and where its metrics pass stands."""

    watermark = models.DateTimeField(null=True, blank=True)
    #: When the poller last asked the backend for new metric points (``jobs.metric_poll``).
    metrics_at = models.DateTimeField(null=True, blank=True)
    #: Jobs that ended lately, ``{job id: unix seconds}``: their metrics are read until then.
    metrics_final = models.JSONField(default=dict, blank=True)

    @classmethod
    def get(cls) -> PollState:
        return cls.objects.get_or_create(pk=1)[0]


class ArtifactManifest(models.Model):
    """What one stored archive (``model.tar.gz``/``output.tar.gz``) holds, computed once and kept:
    keyed by the archive's URI and its ``storage.head`` tag (S3: the ETag), so a changed object
    is read again and an unchanged one never is (``jobs.artifacts``)."""

    #: sha256 of the URI and the tag (a URI is up to 1,024 characters: too long to index).
    key = models.CharField(max_length=64, unique=True)
    uri = models.CharField(max_length=1024)
    etag = models.CharField(max_length=200)
    manifest = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)


class MetricSeries(models.Model):
    """One metric of one job: what the history sorts and filters on (``last``/``min``/``max``),
    and the head of its points, kept in ``MetricChunk`` rows (``jobs.metrics``).

    Step ``n`` is the metric's nth value (1-based). At most ``jobs.metrics.MAX_POINTS`` points are
    kept; later ones only move ``dropped`` (and ``last``), so the cut is recorded, never silent.
    """

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="metric_series")
    name = models.CharField(max_length=255)
    #: Points kept (== the last kept step).
    count = models.PositiveIntegerField(default=0)
    #: Points seen after the bound was reached: counted, not kept.
    dropped = models.PositiveBigIntegerField(default=0)
    last = models.FloatField(null=True, blank=True)
    min = models.FloatField(null=True, blank=True)
    max = models.FloatField(null=True, blank=True)
    #: Unix milliseconds of the first and of the last point seen.
    first_ms = models.BigIntegerField(null=True, blank=True)
    last_ms = models.BigIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "name"], name="jobs_metricseries_job_name")]
        indexes = [
            # The history sorted or filtered by a metric: one index walk per statistic.
            models.Index(fields=["name", "last", "job"], name="jobs_metric_last_idx"),
            models.Index(fields=["name", "min", "job"], name="jobs_metric_min_idx"),
            models.Index(fields=["name", "max", "job"], name="jobs_metric_max_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.job_id}:{self.name}"


class MetricChunk(models.Model):
    """Consecutive points of one series: ``points`` packs ``(unix_ms int64, value float64)``
    little-endian pairs (``struct`` format ``<qd``) for steps ``first_step`` … ``first_step +
    count - 1``; ``summary`` is the same packing of ``(step, unix_ms, value)`` triples (``<qqd``)
    that keeps each display bucket's first, minimum, maximum and last point (``jobs.metrics``), so
    a chart of 100,000 points reads the summaries, not the points."""

    series = models.ForeignKey(MetricSeries, on_delete=models.CASCADE, related_name="chunks")
    seq = models.PositiveIntegerField()
    first_step = models.PositiveIntegerField()
    count = models.PositiveIntegerField(default=0)
    points = models.BinaryField(default=bytes)
    summary = models.BinaryField(default=bytes)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["series", "seq"], name="jobs_metricchunk_series_seq")]
