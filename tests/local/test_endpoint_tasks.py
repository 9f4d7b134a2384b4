"""Endpoints end to end on the local backend through the dashboard's own tasks (called as
functions): train the example, deploy it, InService, a passing and a failing saved test, delete."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from jobs.backends.local.models import LocalEndpoint
from jobs.endpoints import tasks
from jobs.endpoints.models import Endpoint, Invocation, SavedTest, SuiteRun
from jobs.models import TrainingJob
from jobs.tasks import submit_job
from tests.local.test_tasks import poll_until
from tests.servers import alive
from tests.test_new_job import form, submit, upload

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
EXAMPLE = Path(__file__).resolve().parents[2] / "container" / "examples" / "linear"


def poll_endpoint(endpoint: Endpoint, statuses: set[str], timeout: float = 60) -> Endpoint:
    deadline = time.monotonic() + timeout
    while True:
        tasks.poll_endpoints()
        endpoint.refresh_from_db()
        if endpoint.status in statuses:
            return endpoint
        assert time.monotonic() < deadline, f"{endpoint.name} still {endpoint.status}"
        time.sleep(0.2)


def test_deploy_test_and_delete_a_trained_model(client, image_python, monkeypatch) -> None:
    alice = User.objects.create_user("alice", password="x")
    client.force_login(alice)
    response, _ = submit(
        client,
        form(
            name="linear-serve-1",
            entry_point="train.py",
            channels=[{"name": "train", "uri": (EXAMPLE / "data").as_uri()}],
            hyperparameters=[{"key": "epochs", "value": "50", "type": "number"}],
        ),
        [
            upload("train.py", (EXAMPLE / "train.py").read_bytes()),
            upload("inference.py", (EXAMPLE / "inference.py").read_bytes()),
        ],
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    job = TrainingJob.objects.get(name="linear-serve-1")
    assert submit_job(job.pk) == "submitted"
    job = poll_until(job, set(TrainingJob.FINAL))
    assert job.status == "Completed", job.failure_reason

    SavedTest.objects.create(job=job, owner=alice, name="answers", body=b"[[1.0, 2.0]]", expect="status")
    SavedTest.objects.create(
        job=job,
        owner=alice,
        name="wrong",
        body=b"[[1.0, 2.0]]",
        expect="json",
        json_path="[0]",
        expected_value="12345",
    )
    endpoint = Endpoint.objects.create(
        name="linear-serve-1-ep",
        job=job,
        owner=alice,
        inference_entry_point="inference.py",
        instance_type="ml.m5.large",
    )
    assert tasks.deploy_endpoint(endpoint.pk) == "creating"
    # InService starts the job's suite (here run in place of the queue).
    monkeypatch.setattr(tasks.run_suite_task, "delay", lambda pk, owner: tasks.run_suite(pk, owner))
    endpoint = poll_endpoint(endpoint, {"InService", "Failed"})
    assert endpoint.status == "InService", endpoint.failure_reason
    runs = {r.test.name: r for r in Invocation.objects.filter(endpoint=endpoint)}
    assert runs["answers"].passed is True and runs["answers"].status_code == 200
    assert runs["wrong"].passed is False and "expected 12345" in runs["wrong"].verdict
    assert runs["answers"].latency_ms > 0
    # The suite after a deploy is a run_suite: its result is stored like "Run all"'s.
    suite = SuiteRun.objects.get(endpoint=endpoint)
    assert (suite.owner, suite.tests, suite.passed, suite.failed, suite.unfinished) == (alice, 2, 1, 1, 0)
    assert set(suite.runs.all()) == set(runs.values())
    assert suite.finished_at == max(r.finished_at for r in runs.values())
    # The model's own refusal comes back with its status and message; the endpoint serves on.
    bad = Invocation.objects.create(
        endpoint=endpoint, owner=alice, body=b'[["a", "b"]]', content_type="application/json"
    )
    assert tasks.run_invocation(bad.pk) == "Error"
    bad.refresh_from_db()
    assert bad.status_code == 400 and b"not a number" in bytes(bad.response_body)
    again = Invocation.objects.create(
        endpoint=endpoint, owner=alice, body=b"[[3.0, 4.0]]", content_type="application/json"
    )
    assert tasks.run_invocation(again.pk) == "Done"
    # Delete: Deleted once the backend forgets it, and its processes are gone.
    host = LocalEndpoint.objects.get(name=endpoint.name)
    pids = [int(host.host.rsplit(":", 1)[1])] if host.host else []
    monkeypatch.setattr(tasks.delete_endpoint_task, "delay", lambda pk: None)  # run below instead
    assert tasks.start_delete(endpoint)
    tasks.delete_endpoint(endpoint.pk)
    endpoint = poll_endpoint(endpoint, {"Deleted"}, timeout=30)
    for pid in pids:
        deadline = time.monotonic() + 15
        while alive(pid):
            assert time.monotonic() < deadline, f"host {pid} still running"
            time.sleep(0.1)
