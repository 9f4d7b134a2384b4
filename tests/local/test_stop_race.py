"""A stop that arrives while a job moves from Pending to Submitting is kept and applied: the
racing steps called one after the other in the losing order, against the real local backend."""

from __future__ import annotations

from pathlib import Path
from unittest.mock import patch

import pytest
from botocore.exceptions import ClientError
from django.contrib.auth.models import User
from django.db import transaction

from jobs import tasks
from jobs.backends import get_backend
from jobs.models import TrainingJob
from jobs.tasks import stop_job, submit_job
from tests.local.jobs import SCRIPTS
from tests.local.test_tasks import linear_job, make_job, poll_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
Status = TrainingJob.Status


@pytest.fixture
def owner(image_python: Path) -> User:
    return User.objects.create_user("alice", password="x")


def stop_during_create(monkeypatch, job: TrainingJob, answers: list[str], *, refuse: bool = False) -> None:
    """The backend's CreateTrainingJob, with the user's stop arriving just before it runs: the
    row is Submitting, the backend does not have the job yet."""
    backend = type(get_backend())
    real = backend.create_training_job

    def racing(self, request):
        assert TrainingJob.objects.get(pk=job.pk).status == Status.SUBMITTING
        answers.append(stop_job(job.pk))
        if refuse:
            raise ClientError(
                {"Error": {"Code": "ValidationException", "Message": "no"}}, "CreateTrainingJob"
            )
        return real(self, request)

    monkeypatch.setattr(backend, "create_training_job", racing)


def test_a_stop_during_submission_is_applied_once_the_job_is_submitted(owner, monkeypatch) -> None:
    job = make_job(owner, {"train.py": SCRIPTS["sleep_forever.py"].encode()}, "stop-race")
    answers: list[str] = []
    stop_during_create(monkeypatch, job, answers)
    assert submit_job(job.pk) == "submitted"
    assert answers == ["deferred"]  # nothing to stop yet: kept on the row
    job.refresh_from_db()
    assert job.stop_requested_at is not None
    assert job.status == Status.STOPPING  # submit_job applied it as soon as the backend had it
    job = poll_until(job, {Status.STOPPED, Status.COMPLETED, Status.FAILED})
    assert job.status == Status.STOPPED


def test_a_stop_during_a_refused_submission_ends_stopped(owner, monkeypatch) -> None:
    job = linear_job(owner)
    answers: list[str] = []
    stop_during_create(monkeypatch, job, answers, refuse=True)
    assert submit_job(job.pk) == "stopped"
    job.refresh_from_db()
    assert answers == ["deferred"] and job.status == Status.STOPPED and "no" in job.error


def test_a_stop_before_the_worker_takes_the_job_is_kept(owner) -> None:
    job = linear_job(owner)
    with patch("jobs.tasks.stop_job_task.delay") as delay, transaction.atomic():
        tasks.enqueue_stop(job)  # the request is on the row before any message
    job.refresh_from_db()
    assert job.stop_requested_at is not None
    delay.assert_called_once_with(job.pk)
    # The stop message is lost (or late): the worker that takes the job does not start it.
    assert submit_job(job.pk) == "stopped"
    job.refresh_from_db()
    assert job.status == Status.STOPPED and not job.request


def test_a_final_job_keeps_no_stop_request(owner) -> None:
    job = linear_job(owner, status=Status.COMPLETED)
    assert stop_job(job.pk) == Status.COMPLETED
    job.refresh_from_db()
    assert job.stop_requested_at is None
