"""bench/poll_cost: API calls one polling cycle makes with 1,000 active jobs, 10 of them changed.

anyjob's poller (``jobs.tasks.poll_jobs``) makes one ``ListTrainingJobs`` sweep for what changed
since its watermark and describes only the jobs whose status or ``LastModifiedTime`` moved.
The baseline, in the same run, is what following each job with the SDK's ``wait()`` does: one
``DescribeTrainingJob`` per active job per cycle. Both run against a real botocore client whose
answers come from botocore's ``Stubber`` (the control plane cannot be reached from here); a
``before-parameter-build`` event hook counts the requests each makes. Target: ≤ 20 calls per cycle.

Run: ``make bench`` or ``.venv/bin/python bench/poll_cost.py [--jobs N --changed K]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "ANYJOB_VAR_DIR": tempfile.mkdtemp(prefix="anyjob-bench-"),
        "DJANGO_SECRET_KEY": "bench",
        "ANYJOB_BACKEND": "sagemaker",
        "AWS_REGION": "us-east-1",
    }
)
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
ARN = "arn:aws:sagemaker:us-east-1:123456789012:training-job/"
TARGET = 20


def summary(name: str, status: str, modified: datetime) -> dict:
    return {
        "TrainingJobName": name,
        "TrainingJobArn": ARN + name,
        "CreationTime": T0,
        "TrainingJobStatus": status,
        "LastModifiedTime": modified,
    }


def described(name: str, status: str, modified: datetime) -> dict:
    return {
        "TrainingJobName": name,
        "TrainingJobArn": ARN + name,
        "TrainingJobStatus": status,
        "SecondaryStatus": "Completed" if status == "Completed" else "Training",
        "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "x"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "CreationTime": T0,
        "LastModifiedTime": modified,
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://bucket/output/{name}/output/model.tar.gz"},
    }


def counted_client():
    import boto3
    from botocore.stub import Stubber

    client = boto3.session.Session(
        aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
    ).client("sagemaker")
    calls: Counter[str] = Counter()
    client.meta.events.register(
        "before-parameter-build.sagemaker", lambda model, **_: calls.update([model.name])
    )
    return client, Stubber(client), calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--changed", type=int, default=10)
    args = parser.parse_args()

    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from jobs import tasks
    from jobs.backends.sagemaker import SageMakerBackend
    from jobs.models import PollState, TrainingJob

    call_command("migrate", verbosity=0)
    owner = User.objects.create_user("bench")
    names = [f"job-{i:04d}" for i in range(args.jobs)]
    TrainingJob.objects.bulk_create(
        TrainingJob(owner=owner, name=n, entry_point="train.py", status="InProgress", last_modified=T0)
        for n in names
    )
    PollState.objects.update_or_create(pk=1, defaults={"watermark": T0})
    later = T0 + timedelta(minutes=3)
    changed = names[: args.changed]

    # anyjob's cycle: the list answers what changed since the watermark (ListTrainingJobs'
    # own filter), in pages of 100; only those are described.
    client, stubber, calls = counted_client()
    pages = [changed[i : i + 100] for i in range(0, len(changed), 100)] or [[]]
    for i, page in enumerate(pages):
        answer: dict = {"TrainingJobSummaries": [summary(n, "Completed", later) for n in page]}
        if i + 1 < len(pages):
            answer["NextToken"] = f"page-{i + 1}"
        stubber.add_response("list_training_jobs", answer)
    for name in changed:
        stubber.add_response(
            "describe_training_job", described(name, "Completed", later), {"TrainingJobName": name}
        )
    tasks.get_backend = lambda: SageMakerBackend(sagemaker=client)
    started = time.perf_counter()
    with stubber:
        described_count = tasks.poll_jobs()
    ours_s = time.perf_counter() - started
    stubber.assert_no_pending_responses()
    ours = sum(calls.values())
    assert described_count == args.changed, described_count
    assert TrainingJob.objects.filter(status="Completed").count() == args.changed

    # The baseline: every active job described once per cycle, as estimator.wait() does.
    client, stubber, base_calls = counted_client()
    for name in names:
        status = "Completed" if name in changed else "InProgress"
        stubber.add_response(
            "describe_training_job", described(name, status, later), {"TrainingJobName": name}
        )
    started = time.perf_counter()
    with stubber:
        for name in names:
            client.describe_training_job(TrainingJobName=name)
    base_s = time.perf_counter() - started
    baseline = sum(base_calls.values())

    print(f"poll_cost: {args.jobs:,} active jobs, {args.changed} changed since the last cycle")
    print(f"  anyjob poll_jobs:         {ours:5d} calls ({dict(calls)}), {ours_s * 1000:7.1f} ms in-process")
    print(f"  one describe per job:     {baseline:5d} calls, {base_s * 1000:7.1f} ms in-process")
    print(f"  ratio baseline/anyjob:    {baseline / ours:.0f}x fewer calls")
    print(f"  target <= {TARGET} calls per cycle: {'PASS' if ours <= TARGET else 'MISS'}")


if __name__ == "__main__":
    main()
