import io
import re
from datetime import datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone

from jobs.api_limits import validate
from jobs.models import TrainingJob

pytestmark = pytest.mark.django_db

#: TrainingJobName as botocore's model spells it.
NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


@pytest.fixture(autouse=True)
def s3_artifact_store(settings):
    # With an s3:// store the requests are valid for AWS itself, not only for the local backend.
    settings.ANYJOB_ARTIFACT_STORE = "s3://anyjob-test-artifacts"


def seed(**options):
    out = io.StringIO()
    call_command("seed_jobs", stdout=out, **{"count": 300, "users": 4, "seed": 7, **options})
    return out.getvalue()


def content():
    """What a seed decides, without the times (they are relative to now)."""
    return list(
        TrainingJob.objects.order_by("name").values_list(
            "name", "status", "owner__username", "hyperparameters", "channels", "failure_reason", "error"
        )
    )


def test_it_creates_the_users_and_the_jobs():
    assert "300 jobs created" in seed()
    users = get_user_model().objects.filter(username__startswith="demo-user-")
    assert sorted(u.username for u in users) == [f"demo-user-{i}" for i in range(1, 5)]
    assert not any(u.has_usable_password() for u in users)
    assert TrainingJob.objects.count() == 300
    assert set(TrainingJob.objects.values_list("owner__username", flat=True)) == {u.username for u in users}


def test_every_status_appears_mostly_completed():
    seed()
    counts = {s: TrainingJob.objects.filter(status=s).count() for s in TrainingJob.Status.values}
    assert counts.pop("Pending") == counts.pop("Submitting") == 0  # what the workers would send
    assert all(counts.values()), counts
    assert counts["Completed"] > 300 / 2
    assert counts["Failed"] > counts["Stopped"] > counts["InProgress"]


def test_names_and_requests_are_valid_for_sagemaker():
    seed()
    for job in TrainingJob.objects.all():
        assert NAME.match(job.name) and job.name.startswith("demo-"), job.name
        if job.status == "Pending":
            assert job.request == {}
            continue
        assert job.request["TrainingJobName"] == job.name
        assert validate("CreateTrainingJob", job.request) == [], job.name
        assert {hp["key"] for hp in job.hyperparameters} <= set(job.request["HyperParameters"])
        for hp in job.hyperparameters:
            assert set(hp) == {"key", "value", "type"} and hp["type"] in (
                "string",
                "number",
                "boolean",
                "json",
            )
        for channel in job.channels:
            assert set(channel) == {"name", "uri", "content_type", "input_mode"}
            assert channel["uri"].startswith("s3://")


def test_transitions_are_secondary_status_transitions():
    seed()
    now = timezone.now()
    for job in TrainingJob.objects.all():
        steps = job.transitions
        if job.status in ("Pending", "Submitting", "SubmitFailed"):
            assert steps == [] and job.training_start_time is None
            continue
        assert steps[0]["Status"] == "Starting"
        assert job.secondary_status == steps[-1]["Status"]
        previous_end = None
        for step in steps:
            start = datetime.fromisoformat(step["StartTime"])
            assert start.tzinfo is not None and step["StatusMessage"]
            assert previous_end is None or start == previous_end
            if "EndTime" in step:
                previous_end = datetime.fromisoformat(step["EndTime"])
                assert previous_end >= start
        assert start >= job.created_at
        if job.status in TrainingJob.FINAL:
            assert "EndTime" in steps[-1]
            assert job.training_end_time == previous_end <= now
            assert job.billable_seconds == int(
                (job.training_end_time - job.training_start_time).total_seconds()
            )
        else:
            assert "EndTime" not in steps[-1] and job.training_end_time is None
            assert job.duration is not None
        if job.status == "Failed":
            assert job.failure_reason and steps[-1]["Status"] == "Failed"
        if job.status == "Completed":
            assert job.final_metrics and job.model_artifacts.endswith(f"/{job.name}/output/model.tar.gz")


def test_failed_jobs_say_why_and_refused_ones_too():
    seed()
    failed = TrainingJob.objects.filter(status="Failed")
    assert all(job.failure_reason for job in failed)
    assert any(job.failure_reason.startswith("AlgorithmError: ") and job.failure_text for job in failed)
    assert all(job.error for job in TrainingJob.objects.filter(status="SubmitFailed"))


def test_jobs_are_spread_over_a_year_running_ones_recent():
    seed()
    now = timezone.now()
    created = sorted(TrainingJob.objects.values_list("created_at", flat=True))
    assert created[-1] <= now
    assert now - created[0] > timedelta(days=250)  # set by the command, not auto_now_add
    running = TrainingJob.objects.filter(status__in=["Pending", "Submitting", "InProgress", "Stopping"])
    assert all(now - job.created_at < timedelta(hours=7) for job in running)
    assert TrainingJob.objects.filter(created_at__lt=now - timedelta(days=30)).count() > 100


def test_some_jobs_are_clones_of_older_ones():
    seed()
    clones = TrainingJob.objects.exclude(parent=None).select_related("parent")
    assert clones
    for job in clones:
        assert job.parent.created_at <= job.created_at
        assert job.parent.entry_point == job.entry_point


def test_a_rerun_creates_nothing_and_a_larger_count_tops_up():
    seed()
    before = content()
    assert "0 jobs created, 300 already there" in seed()
    assert content() == before
    assert "50 jobs created" in seed(count=350)
    assert TrainingJob.objects.count() == 350
    assert len(set(TrainingJob.objects.values_list("name", flat=True))) == 350


def test_the_same_seed_gives_the_same_jobs_another_seed_others():
    seed()
    first = content()
    TrainingJob.objects.all().delete()
    seed()
    assert content() == first
    TrainingJob.objects.all().delete()
    seed(seed=8)
    assert content() != first


def test_search_text_is_filled_as_save_fills_it():
    seed()
    for job in TrainingJob.objects.all()[:50]:
        stored = job.search_text
        job.save()
        assert job.search_text == stored and job.name in stored


def test_it_seeds_nothing_the_workers_would_act_on():
    from unittest.mock import patch

    from jobs import tasks

    seed(count=1000)
    TrainingJob.objects.update(updated_at=timezone.now() - timedelta(days=1))  # long since
    with patch("jobs.tasks.submit_job_task.delay") as delay:
        assert tasks.sweep_pending() == 0
    assert not delay.called


def test_it_refuses_a_database_with_real_jobs_unless_forced(alice):
    TrainingJob.objects.create(owner=alice, name="real-work-1", entry_point="train.py")
    with pytest.raises(CommandError, match=r"holds 1 real jobs .* pass --force"):
        seed()
    assert TrainingJob.objects.count() == 1
    seed(force=True)
    assert TrainingJob.objects.count() == 301
