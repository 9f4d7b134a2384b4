"""The saved-test suite on a real Redis and Celery worker: one task per test, side by side, and
the suite's result assembled by the chord's callback once the last test has ended."""

from __future__ import annotations

import pytest
from celery.result import AsyncResult
from django.contrib.auth.models import User

from jobs.endpoints import tasks
from jobs.endpoints.forms import InvokeForm
from jobs.endpoints.models import MAX_SAVED_TESTS, Endpoint, Invocation, SavedTest
from jobs.models import TrainingJob
from tests.local.test_worker_integration import celery_processes  # noqa: F401 - the fixture

using_workers = pytest.mark.usefixtures("celery_processes")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def endpoint() -> Endpoint:
    alice = User.objects.create_user("alice", password="x")
    job = TrainingJob.objects.create(
        owner=alice, name="suite-job-1", entry_point="train.py", status="Completed"
    )
    # InService on the row, unknown to the backend: each test's request is answered with an error.
    return Endpoint.objects.create(
        name="suite-ep-1",
        job=job,
        owner=alice,
        inference_entry_point="inference.py",
        instance_type="ml.m5.large",
        status=Endpoint.Status.IN_SERVICE,
    )


@using_workers
def test_each_saved_test_is_its_own_task_and_the_result_comes_last(endpoint) -> None:
    for i in range(5):
        SavedTest.objects.create(
            job=endpoint.job, owner=endpoint.owner, name=f"t{i}", body=b"[]", expect="status"
        )
    started = tasks.run_suite_task.delay(endpoint.pk, endpoint.owner_id).get(timeout=60)
    assert started["tests"] == 5 and started["suite"]
    summary = AsyncResult(started["suite"]).get(timeout=60)
    assert summary == {"endpoint": endpoint.pk, "tests": 5, "passed": 0, "failed": 5, "unfinished": 0}
    runs = Invocation.objects.filter(endpoint=endpoint)
    assert runs.count() == 5 and all(r.status == "Error" and r.finished_at for r in runs)
    # Each test ran as a task of its own (the chord's header), not inside run_suite.
    assert len(set(started["runs"])) == 5
    assert [AsyncResult(task).get(timeout=10) for task in started["runs"]] == ["Error"] * 5


def test_a_model_keeps_a_bounded_number_of_saved_tests(endpoint) -> None:
    SavedTest.objects.bulk_create(
        SavedTest(job=endpoint.job, owner=endpoint.owner, name=f"t{i:02d}", body=b"[]")
        for i in range(MAX_SAVED_TESTS)
    )
    data = {"body": "[]", "content_type": "application/json", "save_as": "one more", "expect": "none"}
    form = InvokeForm(data, job=endpoint.job, user=endpoint.owner)
    assert not form.is_valid()
    assert f"{MAX_SAVED_TESTS} saved tests, the most it keeps" in form.errors["save_as"][0]
    # Replacing one of yours is still allowed.
    data["save_as"] = "T01"
    assert InvokeForm(data, job=endpoint.job, user=endpoint.owner).is_valid()


def test_called_as_a_function_the_suite_runs_in_place(endpoint) -> None:
    for i in range(3):
        SavedTest.objects.create(
            job=endpoint.job, owner=endpoint.owner, name=f"t{i}", body=b"[]", expect="none"
        )
    assert tasks.run_suite(endpoint.pk, endpoint.owner_id) == {
        "endpoint": endpoint.pk,
        "tests": 3,
        "passed": 0,
        "failed": 3,
        "unfinished": 0,
    }
