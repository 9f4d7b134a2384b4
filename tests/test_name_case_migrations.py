"""Migrations jobs 0009 and endpoints 0003: names that differ only in case, already in the
database, are renamed (the oldest keeps its name) so the case-insensitive constraints can exist."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)
BEFORE = [
    ("jobs", "0008_artifact_manifests_and_stop_requests"),
    ("endpoints", "0002_secret_environment_and_test_names_any_case"),
]
AFTER = [("jobs", "0009_job_names_unique_any_case"), ("endpoints", "0003_endpoint_names_unique_any_case")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def old_apps():
    apps = migrate(BEFORE)
    yield apps
    executor = MigrationExecutor(connection)
    migrate(executor.loader.graph.leaf_nodes())


def test_twins_are_renamed_and_the_later_one_says_why(old_apps) -> None:
    User = old_apps.get_model("auth", "User")
    alice, bob = User.objects.create(username="alice"), User.objects.create(username="bob")
    Job = old_apps.get_model("jobs", "TrainingJob")
    Endpoint = old_apps.get_model("endpoints", "Endpoint")
    hers = Job.objects.create(owner=alice, name="long-run", entry_point="a.py", status="InProgress")
    his = Job.objects.create(owner=bob, name="LONG-RUN", entry_point="a.py", status="InProgress")
    done = Job.objects.create(owner=bob, name="Long-Run", entry_point="a.py", status="Completed")
    ep_hers = Endpoint.objects.create(
        name="echo-ep",
        job=hers,
        owner=alice,
        instance_type="ml.m5.large",
        inference_entry_point="a.py",
        status="InService",
    )
    ep_his = Endpoint.objects.create(
        name="ECHO-EP",
        job=his,
        owner=bob,
        instance_type="ml.m5.large",
        inference_entry_point="a.py",
        status="InService",
    )
    apps = migrate(AFTER)
    Job = apps.get_model("jobs", "TrainingJob")
    Endpoint = apps.get_model("endpoints", "Endpoint")
    assert Job.objects.get(pk=hers.pk).name == "long-run"
    renamed = Job.objects.get(pk=his.pk)
    assert renamed.name == f"LONG-RUN-dup{his.pk}" and renamed.status == "SubmitFailed"
    assert "'long-run' is another job's" in renamed.error
    assert Job.objects.get(pk=done.pk).name == f"Long-Run-dup{done.pk}"
    assert Job.objects.get(pk=done.pk).status == "Completed"
    assert Endpoint.objects.get(pk=ep_hers.pk).name == "echo-ep"
    twin = Endpoint.objects.get(pk=ep_his.pk)
    assert twin.name == f"ECHO-EP-dup{ep_his.pk}" and twin.status == "DeployFailed"
