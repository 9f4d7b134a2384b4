"""The sagemaker backend's metrics: CloudWatch ``GetMetricData`` under Stubber with
``expected_params`` (every request also checked against the service model), batched across
jobs, paged, with a watermark; the poller and the importer storing what it reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import Stubber

from jobs import metrics
from jobs.backends import cloudwatch_metrics
from jobs.backends.base import MetricsWanted
from jobs.backends.sagemaker import SageMakerBackend
from jobs.importer import import_jobs
from jobs.models import MetricSeries, PollState, TrainingJob
from jobs.tasks import poll_jobs
from tests.aws.conftest import REGION
from tests.aws.test_sagemaker_backend import ARN, described

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=10, seconds=30)


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def query(n: int, job: str, metric: str) -> dict:
    return {
        "Id": f"m{n}",
        "MetricStat": {
            "Metric": {
                "Namespace": "/aws/sagemaker/TrainingJobs",
                "MetricName": metric,
                "Dimensions": [{"Name": "TrainingJobName", "Value": job}],
            },
            "Period": 60,
            "Stat": "Average",
        },
        "ReturnData": True,
    }


def result(n: int, *points: tuple[float, float]) -> dict:
    return {
        "Id": f"m{n}",
        "Label": f"m{n}",
        "Timestamps": [at(m) for m, _ in points],
        "Values": [v for _, v in points],
        "StatusCode": "Complete",
    }


@pytest.fixture
def cloudwatch(stubs, monkeypatch):
    """A stubbed CloudWatch client in the backend the tasks and the importer use; the clock
    at ``NOW``."""
    client = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    ).client("cloudwatch")
    backend = SageMakerBackend(sagemaker=stubs.sagemaker_client, logs=stubs.logs_client, cloudwatch=client)
    for module in ("jobs.tasks", "jobs.importer"):
        monkeypatch.setattr(f"{module}.get_backend", lambda: backend)
    monkeypatch.setattr(cloudwatch_metrics, "_now_ms", lambda: ms(NOW))
    stub = Stubber(client)
    stub.backend = backend
    with stub:
        yield stub
    stub.assert_no_pending_responses()


def test_one_call_for_many_jobs_paged_and_after_each_watermark(cloudwatch):
    wanted = [
        MetricsWanted(
            job="a-1", metrics=("loss", "acc"), seen={"loss": (3, ms(at(2)))}, start_ms=ms(T0), end_ms=None
        ),
        MetricsWanted(job="b-1", metrics=("loss",), start_ms=ms(at(1)), end_ms=ms(at(5.33))),
    ]
    # Sorted by watermark: a-1/acc (none: from its start), b-1/loss (from its start), a-1/loss.
    params = {
        "MetricDataQueries": [query(0, "a-1", "acc"), query(1, "b-1", "loss"), query(2, "a-1", "loss")],
        "StartTime": T0,
        "EndTime": at(10),  # past the newest complete minute (10:09) of the running job
        "ScanBy": "TimestampAscending",
    }
    cloudwatch.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                result(0, (0, 0.5), (1, 0.6)),
                result(1, (1, 9.0)),
                result(2, (2, 3.0), (3, 2.5)),  # 10:02 is the watermark: not again
            ],
            "NextToken": "page-2",
        },
        params,
    )
    cloudwatch.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                result(0, (9, 0.9)),
                result(1, (5, 7e-05), (6, 1.0)),  # 10:06 is after b-1's end
                result(2, (9, 1.5), (10, 1.25)),  # 10:10 is still running: taken next time
            ]
        },
        {**params, "NextToken": "page-2"},
    )
    got = cloudwatch.backend.metric_points(wanted)
    plain = {job: {m: (p.points, p.dropped) for m, p in per.items()} for job, per in got.items()}
    assert plain == {
        "a-1": {
            "acc": ([(ms(at(0)), 0.5), (ms(at(1)), 0.6), (ms(at(9)), 0.9)], 0),
            "loss": ([(ms(at(3)), 2.5), (ms(at(9)), 1.5)], 0),
        },
        "b-1": {"loss": ([(ms(at(1)), 9.0), (ms(at(5)), 7e-05)], 0)},
    }


def test_more_than_500_metrics_take_more_calls_of_500(cloudwatch):
    wanted = [MetricsWanted(job=f"job-{i:03d}", metrics=("acc", "loss"), start_ms=ms(T0)) for i in range(260)]
    order = [(w.job, m) for w in wanted for m in ("acc", "loss")]
    for first, size in ((0, 500), (500, 20)):
        queries = [query(n, *order[first + n]) for n in range(size)]
        params = {
            "MetricDataQueries": queries,
            "StartTime": T0,
            "EndTime": at(10),
            "ScanBy": "TimestampAscending",
        }
        cloudwatch.add_response(
            "get_metric_data",
            {"MetricDataResults": [result(n, (n % 9, float(first + n))) for n in range(size)]},
            params,
        )
    got = cloudwatch.backend.metric_points(wanted)
    assert len(got) == 260
    assert got["job-000"]["acc"].points == [(ms(at(0)), 0.0)]
    assert got["job-259"]["loss"].points == [(ms(at(19 % 9)), 519.0)]  # the second call's m19


def test_nothing_to_ask_makes_no_call(cloudwatch):
    assert cloudwatch.backend.metric_points([]) == {}
    # The running job's newest complete minute is already stored: nothing newer can be asked.
    seen = {"loss": (9, ms(at(9.5)))}
    assert cloudwatch.backend.metric_points([MetricsWanted(job="a-1", metrics=("loss",), seen=seen)]) == {}


def running(alice, name: str, **fields) -> TrainingJob:
    defaults = {
        "entry_point": "train.py",
        "status": "InProgress",
        "last_modified": T0,
        "training_start_time": T0,
        "metric_definitions": [{"name": "loss", "regex": r"loss=([-+0-9.eE]+)"}],
    }
    return TrainingJob.objects.create(owner=alice, name=name, **{**defaults, **fields})


def listing(stubs, *summaries) -> None:
    stubs.sagemaker.add_response(
        "list_training_jobs",
        {"TrainingJobSummaries": list(summaries)},
        {"LastModifiedTimeAfter": T0 - timedelta(seconds=60), "MaxResults": 100},
    )


def summary(name: str, status: str, modified: datetime) -> dict:
    return {
        "TrainingJobName": name,
        "TrainingJobArn": ARN + name,
        "CreationTime": T0,
        "TrainingJobStatus": status,
        "LastModifiedTime": modified,
    }


def test_the_poller_stores_new_points_once_a_minute_and_once_more_when_a_job_ends(stubs, cloudwatch, alice):
    job = running(alice, "r-1")
    running(alice, "quiet-1", metric_definitions=[])  # no definitions: never asked for
    PollState.objects.update_or_create(pk=1, defaults={"watermark": T0})
    listing(stubs, summary("r-1", "InProgress", T0))
    params = {
        "MetricDataQueries": [query(0, "r-1", "loss")],
        "StartTime": T0,
        "EndTime": at(10),
        "ScanBy": "TimestampAscending",
    }
    cloudwatch.add_response(
        "get_metric_data", {"MetricDataResults": [result(0, (0, 2.0), (1, 7e-05), (2, 1.0))]}, params
    )
    poll_jobs()
    s = MetricSeries.objects.get(job=job, name="loss")
    assert (s.count, s.min, s.max, s.last, s.last_ms) == (3, 7e-05, 2.0, 1.0, ms(at(2)))

    # Within the minute: the status is polled, CloudWatch is not asked (no response stubbed).
    listing(stubs, summary("r-1", "InProgress", T0))
    poll_jobs()

    # A minute later the job has ended: asked from the watermark, up to its end.
    PollState.objects.filter(pk=1).update(metrics_at=PollState.get().metrics_at - timedelta(seconds=61))
    end = at(4.5)
    listing(stubs, summary("r-1", "Completed", end))
    stubs.sagemaker.add_response(
        "describe_training_job",
        described("r-1", "Completed", end, TrainingStartTime=T0, TrainingEndTime=end),
        {"TrainingJobName": "r-1"},
    )
    cloudwatch.add_response(
        "get_metric_data",
        {"MetricDataResults": [result(0, (3, 0.5), (4, 0.25))]},
        {**params, "StartTime": at(2), "EndTime": at(5)},
    )
    poll_jobs()
    s.refresh_from_db()
    assert (s.count, s.last, s.last_ms) == (5, 0.25, ms(at(4)))
    assert str(job.pk) in PollState.get().metrics_final  # read again for a while (CloudWatch lags)
    shown = metrics.display_series(job)["metrics"]["loss"]["points"]
    assert shown == [[i + 1, ms(at(i)), v] for i, v in enumerate([2.0, 7e-05, 1.0, 0.5, 0.25])]


def test_a_metrics_failure_leaves_the_status_poll_alone(stubs, cloudwatch, alice):
    job = running(alice, "r-2")
    PollState.objects.update_or_create(pk=1, defaults={"watermark": T0})
    listing(stubs, summary("r-2", "InProgress", T0))
    cloudwatch.add_client_error("get_metric_data", "Throttling", "Rate exceeded", http_status_code=400)
    poll_jobs()
    assert not MetricSeries.objects.filter(job=job).exists()
    assert PollState.get().metrics_at is None  # asked again at the next cycle, from the same watermark


def test_imported_jobs_bring_their_metrics(stubs, cloudwatch, charlie):
    spec = {
        "TrainingImage": "x",
        "TrainingInputMode": "File",
        "MetricDefinitions": [{"Name": "val:loss", "Regex": "val_loss=([0-9.eE-]+)"}],
    }
    stubs.sagemaker.add_response(
        "list_training_jobs",
        {"TrainingJobSummaries": [summary("outside-9", "Completed", at(3))]},
        {"MaxResults": 100, "SortBy": "CreationTime", "SortOrder": "Descending"},
    )
    stubs.sagemaker.add_response(
        "describe_training_job",
        described(
            "outside-9",
            "Completed",
            at(3),
            AlgorithmSpecification=spec,
            TrainingStartTime=T0,
            TrainingEndTime=at(3),
        ),
        {"TrainingJobName": "outside-9"},
    )
    cloudwatch.add_response(
        "get_metric_data",
        {"MetricDataResults": [result(0, (0, 0.9), (1, 0.7), (2, 0.8))]},
        {
            "MetricDataQueries": [query(0, "outside-9", "val:loss")],
            "StartTime": T0,
            "EndTime": at(4),
            "ScanBy": "TimestampAscending",
        },
    )
    result_ = import_jobs(charlie)
    assert result_.points == 3 and "3 metric points" in str(result_)
    job = TrainingJob.objects.get(name="outside-9")
    assert job.metric_definitions == [{"name": "val:loss", "regex": "val_loss=([0-9.eE-]+)"}]
    assert metrics.summaries([job.pk]) == {
        job.pk: {"val:loss": {"last": 0.8, "min": 0.7, "max": 0.9, "count": 3}}
    }
