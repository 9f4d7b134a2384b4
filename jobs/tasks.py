"""Celery tasks: short, JSON arguments, acked early (see the Celery block in settings).

Each task takes ids, is idempotent and keeps the job's state in the database; every status
change is an update-where on the status it expects (a row that moved on is left alone).

- ``submit_job``: Pending|SubmitFailed → Submitting → InProgress|SubmitFailed. A retry after
  a lost answer meets ``ResourceInUse`` and continues as submitted, once the job with that name
  is proved this row's (its ``anyjob:job-id`` tag); a name taken by another job (names are unique
  regardless of case) ends SubmitFailed.
- ``poll_jobs`` (beat, every 2 s): one list call for what changed since the watermark,
  a describe only for jobs whose status or LastModifiedTime changed.
- ``stop_job``: the backend's stop; the poller records Stopping → Stopped. A stop that finds the
  job Submitting is kept on the row (``stop_requested_at``) and ``submit_job`` applies it.
- ``sweep_pending`` (beat, every 60 s): re-sends submissions whose message was lost.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from jobs import bundles, metric_poll, storage
from jobs.backends import get_backend
from jobs.backends.base import tags_of
from jobs.descriptions import description_fields, failure_text
from jobs.errors import explain, one_line, transient
from jobs.models import PollState, TrainingJob
from jobs.requests import JOB_ID_TAG, build_training_request, settings_kwargs

log = logging.getLogger(__name__)
Status = TrainingJob.Status

#: The watermark is moved back by this much: clocks and commits are not perfectly ordered.
WATERMARK_MARGIN = timedelta(seconds=60)
PENDING_SWEEP_AFTER = timedelta(seconds=60)
#: A Submitting row this old lost its worker; resubmitting is safe (ResourceInUse continues).
SUBMITTING_SWEEP_AFTER = timedelta(minutes=10)
#: Rows the poller updates: the backend has (or may have) the job.
POLLED = (Status.SUBMITTING, Status.IN_PROGRESS, Status.STOPPING)


class TransientError(Exception):
    """A backend call that may succeed when tried again (throttling, network)."""


class NameTaken(ValueError):
    """The backend has a job (or endpoint) by this name, any case, that is not this row's."""


RETRY = {
    "autoretry_for": (TransientError,),
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 8,
}


@shared_task
def ping() -> str:
    """Answer ``"pong"``: proves a worker consumes from the broker (tests, health checks)."""
    return "pong"


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def move(model: Any, pk: int, frm: Sequence[str] | str, to: str, **fields: Any) -> bool:
    """Update-where: set ``status=to`` (and ``fields``) on row ``pk`` of ``model`` only if its
    status is still ``frm`` (one status or several); whether it moved."""
    statuses = (frm,) if isinstance(frm, str) else frm
    updated = model.objects.filter(pk=pk, status__in=statuses).update(
        status=to, updated_at=timezone.now(), **fields
    )
    return updated == 1


def _move(pk: int, frm: Sequence[str] | str, to: str, **fields: Any) -> bool:
    return move(TrainingJob, pk, frm, to, **fields)


def enqueue_submit(job: TrainingJob) -> None:
    """Send ``submit_job`` once the current transaction commits (never for a rolled-back row)."""
    pk = job.pk
    transaction.on_commit(lambda: submit_job_task.delay(pk))


@shared_task(name="jobs.submit_job", bind=True, **RETRY)
def submit_job(self, job_id: int) -> str:
    """Submit one job to the backend; returns what happened (for logs and tests)."""
    job = TrainingJob.objects.filter(pk=job_id).first()
    if job is None:
        return "missing"
    # Stopped before it was ever sent (no request built yet); one that may have reached the
    # backend goes on (ResourceInUse continues) and is stopped below.
    never_sent = not job.request
    if job.stop_requested_at and never_sent and _move(job.pk, Status.PENDING, Status.STOPPED):
        return "stopped"
    if not _move(job.pk, (Status.PENDING, Status.SUBMIT_FAILED), Status.SUBMITTING, error=""):
        return "taken"
    backend = get_backend()
    try:
        code_uri = _stage_code(job)
        request = build_training_request(job, code_uri=code_uri, job_id=job.pk, **settings_kwargs(settings))
        TrainingJob.objects.filter(pk=job.pk).update(request=request, source_uri=code_uri)
        backend.check_inputs(request)
        try:
            backend.create_training_job(request)
        except ClientError as exc:
            if _code(exc) != "ResourceInUse":
                raise
            # A retry after a lost answer, or someone else's job by this name (any case).
            check_ours(backend, job)
            log.info("submit_job %s: already created, continuing", job.name)
    except Exception as exc:
        retry = transient(exc) and self.request.retries < self.max_retries
        if not retry and _stop_requested(job.pk):  # refused, so never created: as asked, Stopped
            _move(job.pk, Status.SUBMITTING, Status.STOPPED, error=explain(exc))
            return "stopped"
        if retry:
            # Tried again with backoff; the same name makes a duplicate impossible.
            _move(job.pk, Status.SUBMITTING, Status.PENDING, error=f"Retrying: {explain(exc)}")
            raise TransientError(one_line(exc)) from exc
        # The job row is never deleted: it says why, and can be resubmitted.
        _move(job.pk, Status.SUBMITTING, Status.SUBMIT_FAILED, error=explain(exc))
        if not isinstance(exc, ClientError | BotoCoreError | ValueError):
            log.exception("submit_job %s failed unexpectedly", job.name)
        return "failed"
    now = timezone.now()
    _move(job.pk, Status.SUBMITTING, Status.IN_PROGRESS, submitted_at=now)
    if _stop_requested(job.pk):  # asked for while this worker submitted: apply it now
        try:
            stop_job(job.pk)
        except Exception:  # the stop's own retries: as its own task
            log.warning("submit_job %s: stopping it inline failed, sending stop_job", job.name, exc_info=True)
            stop_job_task.delay(job.pk)
    return "submitted"


submit_job_task = submit_job


def check_ours(backend: Any, job: TrainingJob) -> None:
    """Raise ``NameTaken`` unless the backend's training job called ``job.name`` carries this
    row's ``anyjob:job-id`` tag: only then is ``ResourceInUse`` our own earlier call."""
    described = backend.describe_training_job(job.name)
    if tags_of(backend, described["TrainingJobArn"]).get(JOB_ID_TAG) == str(job.pk):
        return
    raise NameTaken(
        f"The name {job.name!r} is taken: the training job {described.get('TrainingJobName', job.name)!r} "
        "exists already and is someone else's, not this one (names are unique regardless of case). "
        "Clone this job under another name."
    )


def _stop_requested(pk: int) -> bool:
    return TrainingJob.objects.filter(pk=pk, stop_requested_at__isnull=False).exists()


def _request_stop(pk: int) -> None:
    """Keep a stop request on the row (the first one's time), unless the job is already final."""
    TrainingJob.objects.filter(pk=pk, stop_requested_at__isnull=True).exclude(
        status__in=TrainingJob.FINAL
    ).update(stop_requested_at=timezone.now())


def _stage_code(job: TrainingJob) -> str:
    """The job's own copy of its code bundle (``<store>/<job>/source/sourcedir.tar.gz``)."""
    store = settings.ANYJOB_ARTIFACT_STORE
    if job.source_sha256:
        if not storage.exists(bundles.uri_for(job.source_sha256, store)):
            raise ValueError(f"the code bundle {job.source_sha256[:12]} is missing: upload the code again")
        return bundles.stage_for_job(job.source_sha256, job.name, store)
    if not job.source_uri or not storage.exists(job.source_uri):
        raise ValueError(f"the code bundle {job.source_uri or '(none)'} is missing: upload the code again")
    return job.source_uri


def enqueue_stop(job: TrainingJob) -> None:
    """Keep the stop request on the row and send ``stop_job`` once the transaction commits."""
    pk = job.pk
    _request_stop(pk)
    transaction.on_commit(lambda: stop_job_task.delay(pk))


def _store_description(job: TrainingJob, described: dict[str, Any]) -> None:
    """Record a ``DescribeTrainingJob`` answer on the row (update-where it is still followed)."""
    status = described["TrainingJobStatus"]
    fields = description_fields(described)
    if status == Status.FAILED:
        fields["failure_text"] = failure_text(get_backend(), job.name)
    if job.submitted_at is None:
        fields["submitted_at"] = described.get("CreationTime") or timezone.now()
    _move(job.pk, POLLED, status, **fields)


def refresh_job(job: TrainingJob) -> None:
    """Describe one job and store what the backend says (a job it does not know is left)."""
    try:
        described = get_backend().describe_training_job(job.name)
    except ClientError as exc:
        if _code(exc) == "ValidationException":
            return
        raise
    _store_description(job, described)


@shared_task(name="jobs.poll_jobs", **RETRY)
def poll_jobs() -> int:
    """One pass of the poller; returns how many jobs were described."""
    state = PollState.get()
    watermark = state.watermark
    if watermark is None:
        oldest = TrainingJob.objects.filter(status__in=POLLED).order_by("created_at").first()
        watermark = oldest.created_at if oldest else timezone.now()
    backend = get_backend()
    params: dict[str, Any] = {"LastModifiedTimeAfter": watermark - WATERMARK_MARGIN, "MaxResults": 100}
    summaries: list[dict[str, Any]] = []
    try:
        while True:
            page = backend.list_training_jobs(**params)
            summaries.extend(page.get("TrainingJobSummaries", []))
            token = page.get("NextToken")
            if not token:
                break
            params["NextToken"] = token
    except Exception as exc:
        if transient(exc):
            raise TransientError(one_line(exc)) from exc
        raise
    by_name = {s["TrainingJobName"]: s for s in summaries}
    rows = TrainingJob.objects.filter(name__in=list(by_name), status__in=POLLED).order_by("name")
    refreshed = []
    for job in rows:
        summary = by_name[job.name]
        changed = summary.get("LastModifiedTime")
        if job.status == summary["TrainingJobStatus"] and job.last_modified == changed:
            continue
        refresh_job(job)
        refreshed.append(job.pk)
    described = len(refreshed)
    newest = max((s["LastModifiedTime"] for s in summaries if s.get("LastModifiedTime")), default=None)
    if newest is not None and (state.watermark is None or newest > state.watermark):
        PollState.objects.filter(pk=state.pk).update(watermark=newest)
    elif state.watermark is None:
        PollState.objects.filter(pk=state.pk).update(watermark=watermark)
    metric_poll.poll_metrics(backend, refreshed)
    return described


@shared_task(name="jobs.stop_job", **RETRY)
def stop_job(job_id: int) -> str:
    """Stop a job: one never submitted is Stopped at once; one being submitted keeps the request
    for ``submit_job`` (which calls this again once the backend has it); a running one asks the
    backend."""
    _request_stop(job_id)  # first, so a submit_job that ends after the check below sees it
    job = TrainingJob.objects.filter(pk=job_id).first()
    if job is None:
        return "missing"
    if _move(job.pk, (Status.PENDING, Status.SUBMIT_FAILED), Status.STOPPED):
        return "stopped"
    if job.status in TrainingJob.FINAL:
        return job.status
    if job.status == Status.SUBMITTING:
        return "deferred"
    try:
        get_backend().stop_training_job(job.name)
    except ClientError as exc:
        if transient(exc):
            raise TransientError(one_line(exc)) from exc
        if _code(exc) != "ValidationException":
            raise
        refresh_job(job)  # already final (or unknown): record what the backend says
        return "refreshed"
    _move(job.pk, Status.IN_PROGRESS, Status.STOPPING)
    return "stopping"


stop_job_task = stop_job


@shared_task(name="jobs.sweep_pending")
def sweep_pending() -> int:
    """Re-send ``submit_job`` for jobs Pending too long (a lost message); returns how many."""
    now = timezone.now()
    stuck = TrainingJob.objects.filter(
        status=Status.SUBMITTING, updated_at__lt=now - SUBMITTING_SWEEP_AFTER
    ).values_list("pk", flat=True)
    for pk in list(stuck):
        _move(pk, Status.SUBMITTING, Status.PENDING)
    pending = list(
        TrainingJob.objects.filter(
            status=Status.PENDING, updated_at__lt=now - PENDING_SWEEP_AFTER
        ).values_list("pk", flat=True)
    )
    for pk in pending:
        submit_job_task.delay(pk)
    return len(pending)


@shared_task(name="jobs.import_jobs", **RETRY)
def import_jobs(user_id: int) -> str:
    """Import the account's training jobs into the history, new ones owned by ``user_id``."""
    from django.contrib.auth import get_user_model

    from jobs.importer import import_jobs as run_import

    owner = get_user_model().objects.filter(pk=user_id).first()
    if owner is None:
        return "missing"
    try:
        return str(run_import(owner))
    except Exception as exc:
        if transient(exc):
            raise TransientError(one_line(exc)) from exc
        raise


import_jobs_task = import_jobs
