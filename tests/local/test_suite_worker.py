"""The saved-test suite on a real Redis and Celery worker: one task per test, side by side, and
the suite's result assembled and stored by the chord's callback once the last test has ended."""

from __future__ import annotations

import time
from types import SimpleNamespace
from unittest.mock import patch

import pytest
from celery.result import AsyncResult
from django.contrib.auth.models import User
from django.utils import timezone

from jobs.endpoints import tasks
from jobs.endpoints.forms import InvokeForm
from jobs.endpoints.models import MAX_SAVED_TESTS, Endpoint, Invocation, SavedTest, SuiteRun
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
    before = timezone.now()
    started = tasks.run_suite_task.delay(endpoint.pk, endpoint.owner_id).get(timeout=60)
    assert started["tests"] == 5 and started["suite"] and started["suite_run"]
    summary = AsyncResult(started["suite"]).get(timeout=60)
    assert summary == {
        "endpoint": endpoint.pk,
        "suite_run": started["suite_run"],
        "tests": 5,
        "passed": 0,
        "failed": 5,
        "unfinished": 0,
    }
    runs = Invocation.objects.filter(endpoint=endpoint)
    assert runs.count() == 5 and all(r.status == "Error" and r.finished_at for r in runs)
    # Each test ran as a task of its own (the chord's header), not inside run_suite.
    assert len(set(started["runs"])) == 5
    assert [AsyncResult(task).get(timeout=10) for task in started["runs"]] == ["Error"] * 5
    # The result is stored by the chord's callback: the counts, and when the last test ended.
    suite = SuiteRun.objects.get(endpoint=endpoint)
    assert suite.pk == started["suite_run"] and set(runs.values_list("suite", flat=True)) == {suite.pk}
    assert (suite.tests, suite.passed, suite.failed, suite.unfinished) == (5, 0, 5, 0)
    assert before <= suite.started_at <= min(r.created_at for r in runs)
    assert suite.finished_at == max(r.finished_at for r in runs) and suite.note == ""


@using_workers
def test_run_all_on_the_page_runs_the_suite_and_stores_its_result(client, endpoint) -> None:
    """The page's "Run all" goes through ``run_suite`` on the real worker: the suite run shows
    at once, polls while it runs, and then shows the stored result."""
    for i in range(3):
        SavedTest.objects.create(
            job=endpoint.job, owner=endpoint.owner, name=f"t{i}", body=b"[]", expect="none"
        )
    bob = User.objects.create_user("bob", password="x")  # any teammate may run the tests
    client.force_login(bob)
    response = client.post(f"/endpoints/{endpoint.name}/tests/run/")
    suite = SuiteRun.objects.get(endpoint=endpoint)
    assert response.status_code == 302 and response["Location"].endswith(f"#suite-{suite.pk}")
    fragment = f"/endpoints/{endpoint.name}/suites/{suite.pk}/"
    deadline = time.monotonic() + 60
    while b'hx-trigger="every 1s"' in (page := client.get(fragment).content):
        assert time.monotonic() < deadline, page.decode()
        time.sleep(0.2)
    suite.refresh_from_db()
    assert (suite.owner, suite.tests, suite.passed, suite.failed, suite.unfinished) == (bob, 3, 0, 3, 0)
    runs = Invocation.objects.filter(suite=suite)
    assert runs.count() == 3 and all(r.owner == bob and r.finished_at for r in runs)
    finished = timezone.localtime(suite.finished_at).strftime("%H:%M:%S")
    assert f"0 of 3 passed, 3 failed — finished {finished}" in page.decode()
    assert (
        f"0 of 3 passed, 3 failed — finished {finished}"
        in client.get(f"/endpoints/{endpoint.name}/").content.decode()
    )


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
    summary = tasks.run_suite(endpoint.pk, endpoint.owner_id)
    suite = SuiteRun.objects.get(endpoint=endpoint)
    assert summary == {
        "endpoint": endpoint.pk,
        "suite_run": suite.pk,
        "tests": 3,
        "passed": 0,
        "failed": 3,
        "unfinished": 0,
    }
    assert (suite.tests, suite.passed, suite.failed, suite.unfinished) == (3, 0, 3, 0) and suite.done


def test_past_the_bound_the_suite_says_which_tests_ran(endpoint) -> None:
    SavedTest.objects.bulk_create(
        SavedTest(job=endpoint.job, owner=endpoint.owner, name=f"t{i:02d}", body=b"[]", expect="none")
        for i in range(MAX_SAVED_TESTS + 2)  # saved before the bound existed
    )
    with patch.object(tasks, "run_invocation"):  # the requests themselves are not the point
        tasks.run_suite(endpoint.pk, endpoint.owner_id)
    suite = SuiteRun.objects.get(endpoint=endpoint)
    assert suite.tests == MAX_SAVED_TESTS == suite.runs.count()
    assert suite.unfinished == MAX_SAVED_TESTS  # none was sent here
    assert f"The first {MAX_SAVED_TESTS} of {MAX_SAVED_TESTS + 2} saved tests ran" in suite.note


def test_a_suite_that_cannot_run_is_closed_with_the_reason(endpoint) -> None:
    suite = SuiteRun.objects.create(endpoint=endpoint, owner=endpoint.owner)
    assert tasks.run_suite(endpoint.pk, endpoint.owner_id, suite.pk)["tests"] == 0  # no saved tests
    suite.refresh_from_db()
    assert suite.done and suite.note == "No test ran: the model has no saved tests."
    Endpoint.objects.filter(pk=endpoint.pk).update(status=Endpoint.Status.DELETING)
    late = SuiteRun.objects.create(endpoint=endpoint, owner=endpoint.owner)
    tasks.run_suite(endpoint.pk, endpoint.owner_id, late.pk)
    late.refresh_from_db()
    assert late.done and late.note == "No test ran: the endpoint is Deleting."
    # The suite after a deploy makes no row when the endpoint is gone meanwhile.
    assert tasks.run_suite(endpoint.pk, endpoint.owner_id)["suite_run"] is None
    assert SuiteRun.objects.count() == 2


def test_a_broken_test_task_still_closes_the_suite(endpoint) -> None:
    """When a test's task raises, Celery calls the callback's error callback instead of the
    callback (with the callback's arguments): the suite closes, the never-ended test counted."""
    for i in range(2):
        SavedTest.objects.create(
            job=endpoint.job, owner=endpoint.owner, name=f"t{i}", body=b"[]", expect="none"
        )
    with patch.object(tasks, "chord") as sent:
        # Run as a task (not called directly): the chord is built, and caught here.
        result = tasks.run_suite_task.apply(args=(endpoint.pk, endpoint.owner_id)).get()
    suite = SuiteRun.objects.get(endpoint=endpoint)
    callback = sent.return_value.call_args.args[0]
    assert callback.task == "endpoints.suite_result" and list(callback.args) == [endpoint.pk, suite.pk]
    (errback,) = callback.options["link_error"]
    assert errback["task"] == "endpoints.suite_broken" and result["suite_run"] == suite.pk
    first = suite.runs.first()
    tasks.run_invocation(first.pk)
    tasks.suite_broken(SimpleNamespace(args=callback.args), RuntimeError("lost"), None)
    suite.refresh_from_db()
    assert (suite.tests, suite.failed, suite.unfinished) == (2, 1, 1) and suite.done
