"""The worker tasks, called directly (not through Celery) against the real local backend."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from jobs import bundles, tasks
from jobs.models import PollState, TrainingJob
from jobs.tasks import poll_jobs, stop_job, submit_job
from tests.container.support import EXAMPLES
from tests.local.jobs import SCRIPTS, unique

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
Status = TrainingJob.Status


@pytest.fixture
def owner(image_python: Path) -> User:
    return User.objects.create_user("alice", password="x")


def code_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.glob("*.py"))}


def make_job(owner: User, files: dict[str, bytes], prefix: str, **fields) -> TrainingJob:
    bundle = bundles.build(files)
    uri = bundles.store(bundle, settings.ANYJOB_ARTIFACT_STORE)
    return TrainingJob.objects.create(
        owner=owner,
        name=unique(prefix),
        entry_point=fields.pop("entry_point", "train.py"),
        source_sha256=bundle.sha256,
        source_uri=uri,
        max_runtime_seconds=600,
        **fields,
    )


def linear_job(owner: User, **fields) -> TrainingJob:
    channels = [
        {
            "name": "train",
            "uri": (EXAMPLES / "linear" / "data").as_uri(),
            "content_type": "text/csv",
            "input_mode": "",
        }
    ]
    hyperparameters = [{"key": "epochs", "value": "20", "type": "number"}]
    return make_job(
        owner,
        code_files(EXAMPLES / "linear"),
        "linear",
        channels=channels,
        hyperparameters=hyperparameters,
        **fields,
    )


def poll_until(job: TrainingJob, statuses: set[str], timeout: float = 90) -> TrainingJob:
    deadline = time.monotonic() + timeout
    while True:
        poll_jobs()
        job.refresh_from_db()
        if job.status in statuses:
            return job
        assert time.monotonic() < deadline, f"{job.name} still {job.status}/{job.secondary_status}"
        time.sleep(0.2)


def test_a_job_is_submitted_and_polled_to_completion(owner) -> None:
    job = linear_job(owner)
    assert submit_job(job.pk) == "submitted"
    job.refresh_from_db()
    assert job.status == Status.IN_PROGRESS and job.submitted_at is not None and not job.error
    assert job.request["HyperParameters"]["sagemaker_submit_directory"] == f'"{job.source_uri}"'
    assert job.request["HyperParameters"]["epochs"] == "20"
    job = poll_until(job, {Status.COMPLETED, Status.FAILED})
    assert job.status == Status.COMPLETED, job.failure_reason
    assert [t["Status"] for t in job.transitions][-1] == "Completed"
    assert "Training" in [t["Status"] for t in job.transitions]
    assert job.model_artifacts.endswith("/model.tar.gz")
    assert job.training_start_time and job.training_end_time and job.last_modified
    assert job.billable_seconds is not None
    assert PollState.get().watermark is not None
    # A second submit of the same row does nothing: it has moved on.
    assert submit_job(job.pk) == "taken"


def test_a_failing_job_keeps_its_reason_and_the_full_failure_file(owner) -> None:
    job = make_job(owner, code_files(EXAMPLES / "failing"), "failing")
    assert submit_job(job.pk) == "submitted"
    job = poll_until(job, {Status.COMPLETED, Status.FAILED})
    assert job.status == Status.FAILED
    assert job.failure_reason
    assert "Traceback (most recent call last):" in job.failure_text


def test_a_resubmit_after_a_lost_answer_continues(owner) -> None:
    job = make_job(
        owner,
        {"sleep_forever.py": SCRIPTS["sleep_forever.py"].encode()},
        "again",
        entry_point="sleep_forever.py",
    )
    assert submit_job(job.pk) == "submitted"
    # The worker died before it recorded the answer: the row went back for a resubmit.
    TrainingJob.objects.filter(pk=job.pk).update(status=Status.PENDING, submitted_at=None)
    assert submit_job(job.pk) == "submitted"
    job.refresh_from_db()
    assert job.status == Status.IN_PROGRESS and not job.error
    assert stop_job(job.pk) == "stopping"
    job.refresh_from_db()
    assert job.status == Status.STOPPING
    job = poll_until(job, {Status.STOPPED, Status.COMPLETED, Status.FAILED})
    assert job.status == Status.STOPPED
    # Stopping a final job only records what the backend says.
    assert stop_job(job.pk) == Status.STOPPED


def test_a_refused_request_is_submit_failed_with_one_line(owner) -> None:
    too_many = [{"key": f"h{i}", "value": "1", "type": "number"} for i in range(101)]
    job = make_job(owner, code_files(EXAMPLES / "failing"), "refused", hyperparameters=too_many)
    assert submit_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.status == Status.SUBMIT_FAILED
    assert job.error and "\n" not in job.error
    assert TrainingJob.objects.filter(pk=job.pk).exists()


def test_a_missing_job_is_ignored(owner) -> None:
    assert submit_job(10**9) == "missing"
    assert stop_job(10**9) == "missing"


def test_stopping_a_job_never_submitted(owner) -> None:
    job = make_job(owner, code_files(EXAMPLES / "failing"), "never")
    assert stop_job(job.pk) == "stopped"
    assert submit_job(job.pk) == "taken"


def test_the_sweep_resends_jobs_pending_too_long(owner, monkeypatch) -> None:
    sent: list[int] = []
    monkeypatch.setattr(tasks.submit_job_task, "delay", sent.append)
    old = make_job(owner, code_files(EXAMPLES / "failing"), "old")
    fresh = make_job(owner, code_files(EXAMPLES / "failing"), "fresh")
    lost = make_job(owner, code_files(EXAMPLES / "failing"), "lost", status=Status.SUBMITTING)
    TrainingJob.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(seconds=61))
    TrainingJob.objects.filter(pk=lost.pk).update(updated_at=timezone.now() - timedelta(minutes=11))
    assert tasks.sweep_pending() == 1
    assert sent == [old.pk]
    lost.refresh_from_db()
    fresh.refresh_from_db()
    assert lost.status == Status.PENDING and fresh.status == Status.PENDING


def test_enqueue_submit_sends_on_commit(owner, monkeypatch) -> None:
    sent: list[int] = []
    monkeypatch.setattr(tasks.submit_job_task, "delay", sent.append)
    with transaction.atomic():
        job = make_job(owner, code_files(EXAMPLES / "failing"), "commit")
        tasks.enqueue_submit(job)
        assert sent == []
    assert sent == [job.pk]
    try:
        with transaction.atomic():
            rolled = make_job(owner, code_files(EXAMPLES / "failing"), "rolled")
            tasks.enqueue_submit(rolled)
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    assert sent == [job.pk]
