"""bench/poll_cost: API calls of the poller's cycles for 1,000 running jobs whose state moves.

anyjob's poller (``jobs.tasks.poll_jobs``, every 2 s from beat) lists what changed since its
watermark minus a margin (``ListTrainingJobs`` with ``LastModifiedTimeAfter``, following
``NextToken``) and describes only the jobs whose status or ``LastModifiedTime`` moved. Here it
runs, unchanged, with the ``sagemaker`` backend on a real botocore client, against a simulated
account: a ``before-send`` event handler takes each serialized request (the client's own
parameter validation and JSON serialization ran), answers it from the account and lets botocore
parse the answer. Nothing is scripted per call; the account answers whatever is asked:

- ``ListTrainingJobs``: every filter of the API (``LastModifiedTimeAfter``/``Before``,
  ``CreationTimeAfter``/``Before``, ``StatusEquals``, ``NameContains``), ``SortBy``/``SortOrder``
  (the service's default when absent: CreationTime, Descending), ``MaxResults`` 1-100 (default
  10) and ``NextToken`` (ours only, and only with the same filters, else ValidationException).
  The list is eventually consistent: a modification shows there after a lag (most under 0.5 s,
  one in five up to 10 s), so some jobs surface already older than the watermark, within its
  margin; until then the list shows the job's previous state.
- ``DescribeTrainingJob``: the job's current state (strongly consistent).

The account holds 1,000 running jobs. Every cycle (2 s of account time) ``--changed`` of them
move (default 10): one completes and a new job is submitted in its place (its row as
``submit_job`` leaves it), the others move on to their next secondary status. After the
warm-up (the margin's worth of cycles) the measured cycles run; then cycles without changes
until every modification is visible, and every row must equal the account (a missed change is
reported). The baseline, in the same run on sampled cycles, is what following each job with
the SDK's ``wait()`` does: one ``DescribeTrainingJob`` per running job per cycle, through the
same client and account. Target: ≤ 20 calls per cycle.

Run: ``make bench`` or ``.venv/bin/python bench/poll_cost.py [--jobs N --changed K --cycles N]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
STEPS = ["Starting", "Downloading", "Training", "Uploading"]
FILTERS = (
    "LastModifiedTimeAfter",
    "LastModifiedTimeBefore",
    "CreationTimeAfter",
    "CreationTimeBefore",
    "StatusEquals",
    "NameContains",
    "SortBy",
    "SortOrder",
)


class Refused(Exception):
    """What the service answers with a 400 and this error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Version:
    status: str
    secondary: str
    modified: datetime
    visible_at: datetime


@dataclass
class Job:
    name: str
    created: datetime
    versions: list[Version] = field(default_factory=list)

    def current(self, now: datetime) -> Version:
        return [v for v in self.versions if v.modified <= now][-1]

    def listed(self, now: datetime) -> Version | None:
        shown = [v for v in self.versions if v.visible_at <= now]
        return shown[-1] if shown else None


class Account:
    """A SageMaker account's training jobs, answering the wire requests botocore sends."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.now = T0
        self.calls: Counter[str] = Counter()
        self.list_params: Counter[str] = Counter()
        self.listed = 0  # summaries returned, all list calls

    def add(self, job: Job) -> None:
        self.jobs[job.name] = job

    # -- the wire ----------------------------------------------------------------------------
    def handler(self, request: Any, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        operation = request.headers["X-Amz-Target"].decode().split(".", 1)[1]
        self.calls[operation] += 1
        params = json.loads(request.body or b"{}")
        operations = {
            "ListTrainingJobs": self.list_training_jobs,
            "DescribeTrainingJob": self.describe_training_job,
        }
        try:
            if operation not in operations:
                raise Refused("UnknownOperationException", f"{operation} is not simulated")
            status, body = 200, json.dumps(operations[operation](params)).encode()
        except Refused as refused:
            status, body = 400, json.dumps({"__type": refused.code, "message": refused.message}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "bench"}
        return AWSResponse(request.url, status, headers, Raw(body))

    # -- the operations ------------------------------------------------------------------------
    def list_training_jobs(self, params: dict[str, Any]) -> dict[str, Any]:
        self.list_params.update(params.keys())
        unknown = set(params) - set(FILTERS) - {"MaxResults", "NextToken"}
        if unknown:
            raise Refused("ValidationException", f"unexpected parameters {sorted(unknown)}")
        limit = params.get("MaxResults", 10)
        if not 1 <= limit <= 100:
            raise Refused("ValidationException", "MaxResults must be between 1 and 100")
        filters = {k: params[k] for k in FILTERS if k in params}
        fingerprint = hashlib.sha256(json.dumps(filters, sort_keys=True).encode()).hexdigest()[:16]
        offset = 0
        if "NextToken" in params:
            try:
                token = json.loads(base64.urlsafe_b64decode(params["NextToken"]))
            except ValueError:
                raise Refused("ValidationException", "Invalid pagination token") from None
            if token.get("f") != fingerprint:
                raise Refused("ValidationException", "The pagination token's request had other filters")
            offset = token["o"]
        rows = []
        for job in self.jobs.values():
            shown = job.listed(self.now)
            if shown is None or not _matches(job, shown, params):
                continue
            rows.append((job, shown))
        sort_by = params.get("SortBy", "CreationTime")
        key = {
            "CreationTime": lambda r: (r[0].created, r[0].name),
            "Name": lambda r: r[0].name,
            "Status": lambda r: (r[1].status, r[0].name),
        }[sort_by]
        rows.sort(key=key, reverse=params.get("SortOrder", "Descending") == "Descending")
        page = rows[offset : offset + limit]
        self.listed += len(page)
        answer: dict[str, Any] = {
            "TrainingJobSummaries": [
                {
                    "TrainingJobName": job.name,
                    "TrainingJobArn": ARN + job.name,
                    "CreationTime": job.created.timestamp(),
                    "LastModifiedTime": shown.modified.timestamp(),
                    "TrainingJobStatus": shown.status,
                    **(
                        {"TrainingEndTime": shown.modified.timestamp()}
                        if shown.status != "InProgress"
                        else {}
                    ),
                }
                for job, shown in page
            ]
        }
        if offset + limit < len(rows):
            token = json.dumps({"o": offset + limit, "f": fingerprint}).encode()
            answer["NextToken"] = base64.urlsafe_b64encode(token).decode()
        return answer

    def describe_training_job(self, params: dict[str, Any]) -> dict[str, Any]:
        job = self.jobs.get(params["TrainingJobName"])
        if job is None:
            raise Refused("ValidationException", "Requested resource not found.")
        v = job.current(self.now)
        answer = {
            "TrainingJobName": job.name,
            "TrainingJobArn": ARN + job.name,
            "TrainingJobStatus": v.status,
            "SecondaryStatus": v.secondary,
            "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "x"},
            "RoleArn": "arn:aws:iam::123456789012:role/bench",
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "CreationTime": job.created.timestamp(),
            "TrainingStartTime": (job.created + timedelta(seconds=30)).timestamp(),
            "LastModifiedTime": v.modified.timestamp(),
            "SecondaryStatusTransitions": [
                {"Status": step, "StartTime": job.created.timestamp()}
                for step in STEPS[: STEPS.index(v.secondary) + 1 if v.secondary in STEPS else len(STEPS)]
            ],
            "ModelArtifacts": {"S3ModelArtifacts": f"s3://bucket/output/{job.name}/output/model.tar.gz"},
        }
        if v.status != "InProgress":
            answer["TrainingEndTime"] = v.modified.timestamp()
            answer["BillableTimeInSeconds"] = int((v.modified - job.created).total_seconds())
        return answer


class Raw:
    """The body of an answer, as botocore reads a urllib3 response."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any):
        yield self.body


def _matches(job: Job, v: Version, params: dict[str, Any]) -> bool:
    def at(key: str) -> datetime:
        return datetime.fromtimestamp(params[key], UTC)

    return not (
        ("LastModifiedTimeAfter" in params and not v.modified > at("LastModifiedTimeAfter"))
        or ("LastModifiedTimeBefore" in params and not v.modified < at("LastModifiedTimeBefore"))
        or ("CreationTimeAfter" in params and not job.created > at("CreationTimeAfter"))
        or ("CreationTimeBefore" in params and not job.created < at("CreationTimeBefore"))
        or ("StatusEquals" in params and v.status != params["StatusEquals"])
        or ("NameContains" in params and params["NameContains"].lower() not in job.name.lower())
    )


def ms(value: datetime) -> datetime:
    """SageMaker's timestamps have millisecond precision."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def client_for(account: Account):
    import boto3

    client = boto3.session.Session(
        aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
    ).client("sagemaker")
    client.meta.events.register("before-send.sagemaker", account.handler)
    return client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--changed", type=int, default=10, help="jobs that move each cycle")
    parser.add_argument("--cycles", type=int, default=30, help="measured cycles, after the warm-up")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from jobs import tasks
    from jobs.backends.sagemaker import SageMakerBackend
    from jobs.models import PollState, TrainingJob

    call_command("migrate", verbosity=0)
    interval = timedelta(seconds=settings.CELERY_BEAT_SCHEDULE["poll-jobs"]["schedule"])
    margin = tasks.WATERMARK_MARGIN
    warmup = int(margin / interval) + 5
    max_lag = timedelta(seconds=10)

    account = Account()
    owner = User.objects.create_user("bench")
    rows = []
    for i in range(args.jobs):
        created = ms(T0 - timedelta(seconds=rng.uniform(600, 6 * 3600)))
        modified = ms(max(created, T0 - timedelta(seconds=rng.uniform(0, 3600))))
        step = rng.choice(STEPS[1:3])
        account.add(Job(f"job-{i:05d}", created, [Version("InProgress", step, modified, modified)]))
        rows.append(
            TrainingJob(
                owner=owner,
                name=f"job-{i:05d}",
                entry_point="train.py",
                status="InProgress",
                secondary_status=step,
                submitted_at=created,
                last_modified=modified,
            )
        )
    TrainingJob.objects.bulk_create(rows)
    PollState.objects.update_or_create(pk=1, defaults={"watermark": max(r.last_modified for r in rows)})
    running = [job.name for job in account.jobs.values()]
    serial = args.jobs

    def lag() -> timedelta:
        late = rng.random() < 0.2
        return timedelta(seconds=rng.uniform(1, max_lag.total_seconds()) if late else rng.uniform(0, 0.5))

    def move(changed: int) -> dict[str, int]:
        """``changed`` modifications during the last interval; returns what kind they were."""
        nonlocal serial
        kinds = Counter()
        start = account.now
        account.now += interval
        for n in range(changed):
            at = ms(start + timedelta(seconds=rng.uniform(0, interval.total_seconds())))
            seen = lag()
            kinds["late (surface under the watermark)"] += seen > interval
            if n == 0:  # one completes, a new one is submitted in its place
                name = running.pop(rng.randrange(len(running)))
                account.jobs[name].versions.append(Version("Completed", "Completed", at, at + seen))
                new = f"job-{serial:05d}"
                serial += 1
                account.add(Job(new, at, [Version("InProgress", "Starting", at, at + lag())]))
                TrainingJob.objects.create(
                    owner=owner, name=new, entry_point="train.py", status="InProgress", submitted_at=at
                )
                running.append(new)
                kinds["completed + submitted"] += 1
                continue
            job = account.jobs[rng.choice(running)]
            last = job.versions[-1]
            if last.modified >= at:
                at = last.modified + timedelta(milliseconds=1)
            step = (
                STEPS[(STEPS.index(last.secondary) + 1) % len(STEPS)]
                if last.secondary in STEPS
                else "Training"
            )
            job.versions.append(Version("InProgress", step, at, at + seen))
            kinds["secondary status moved"] += 1
        return kinds

    backend = SageMakerBackend(sagemaker=client_for(account))
    tasks.get_backend = lambda: backend
    baseline_client = client_for(account)
    cycles: list[dict[str, Any]] = []
    kinds: Counter[str] = Counter()
    total = warmup + args.cycles
    sampled = {warmup, warmup + args.cycles // 2, total - 1}
    for cycle in range(total):
        moved = move(args.changed)
        before = Counter(account.calls)
        listed_before = account.listed
        started = time.perf_counter()
        described = tasks.poll_jobs()
        took = time.perf_counter() - started
        calls = account.calls - before
        entry = {
            "list": calls["ListTrainingJobs"],
            "describe": calls["DescribeTrainingJob"],
            "described": described,
            "listed": account.listed - listed_before,
            "ms": took * 1000,
        }
        if cycle >= warmup:
            kinds.update(moved)
            if cycle in sampled:  # the baseline: every running job described, as wait() does
                before = account.calls["DescribeTrainingJob"]
                started = time.perf_counter()
                for name in running:
                    baseline_client.describe_training_job(TrainingJobName=name)
                entry["baseline"] = account.calls["DescribeTrainingJob"] - before
                entry["baseline_ms"] = (time.perf_counter() - started) * 1000
            cycles.append(entry)

    # Cycles without changes until every modification is visible, then the rows must match.
    settle = 0
    while settle * interval <= max_lag + interval:
        account.now += interval
        tasks.poll_jobs()
        settle += 1
    missed = []
    for row in TrainingJob.objects.all():
        v = account.jobs[row.name].current(account.now)
        if (row.status, row.last_modified, row.secondary_status) != (v.status, v.modified, v.secondary):
            missed.append(row.name)

    per = [c["list"] + c["describe"] for c in cycles]
    base = [c for c in cycles if "baseline" in c]
    ours = statistics.median(per)
    baseline = statistics.median(c["baseline"] for c in base)
    every, margin_s = interval.total_seconds(), margin.total_seconds()
    print(
        f"poll_cost: {args.jobs:,} running jobs, {args.changed} move every {every:g} s cycle;"
        f" {args.cycles} cycles measured after {warmup} warm-up (margin {margin_s:g} s)"
    )
    print(f"  modifications measured: {dict(kinds)}")
    print(
        f"  ListTrainingJobs parameters sent: {dict(account.list_params)} (no SortBy: the service's default,"
        " CreationTime Descending)"
    )
    print(
        f"  summaries listed per cycle: median {statistics.median(c['listed'] for c in cycles):.0f}"
        f" (everything modified within the margin), jobs described per cycle: median"
        f" {statistics.median(c['described'] for c in cycles):.0f}"
    )
    print(f"  {'per cycle':34} {'median':>7} {'max':>5} {'ms median':>10}")
    took = statistics.median(c["ms"] for c in cycles)
    print(f"  {'anyjob poll_jobs: calls':34} {ours:7.0f} {max(per):5d} {took:10.1f}")
    print(f"  {'  ListTrainingJobs pages':34} {statistics.median(c['list'] for c in cycles):7.0f}")
    print(f"  {'  DescribeTrainingJob':34} {statistics.median(c['describe'] for c in cycles):7.0f}")
    print(
        f"  {'one describe per job (baseline)':34} {baseline:7.0f} {max(c['baseline'] for c in base):5d}"
        f" {statistics.median(c['baseline_ms'] for c in base):10.1f}   ({len(base)} sampled cycles)"
    )
    print(f"  ratio baseline/anyjob:    {baseline / ours:.0f}x fewer calls")
    seen = "yes" if not missed else "NO"
    print(f"  every change seen (rows equal the account after {settle} quiet cycles): {seen}")
    if missed:
        print(f"  MISSED {len(missed)} jobs, e.g. {missed[:5]}")
    verdict = "PASS" if max(per) <= TARGET and not missed else "MISS"
    print(f"  target <= {TARGET} calls per cycle (max {max(per)}): {verdict}")


if __name__ == "__main__":
    main()
