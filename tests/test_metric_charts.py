"""The job page's metric charts: their markup and data URL, and the job's rank on each metric."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.charts import lower_is_better, ordinal, ranks
from jobs.metrics import append_points
from jobs.models import MetricSeries, TrainingJob

pytestmark = pytest.mark.django_db

T0 = 1_764_000_000_000


def make_job(
    owner, name: str, status: str = "Completed", entry_point: str = "train.py", **fields
) -> TrainingJob:
    return TrainingJob.objects.create(
        owner=owner, name=name, entry_point=entry_point, status=status, **fields
    )


def curve(job: TrainingJob, name: str, values: list[float]) -> None:
    append_points(job, name, [(T0 + 1000 * i, v) for i, v in enumerate(values)])


def figure(body: str, metric: str) -> str:
    return re.search(
        rf'<figure class="metric-chart" data-metric="{re.escape(metric)}">(.*?)</figure>', body, re.S
    ).group(1)


def test_the_page_has_a_chart_per_metric_and_the_data_url(client, alice, bob):
    job = make_job(
        alice,
        "charted",
        status="InProgress",
        metric_definitions=[
            {"name": "loss", "regex": r"loss=([-+0-9.eE]+)"},
            {"name": "accuracy", "regex": r"acc=([-+0-9.eE]+)"},
            {"name": "lr", "regex": r"lr=([-+0-9.eE]+)"},
        ],
    )
    curve(job, "loss", [0.9, 0.5, 7e-05])
    curve(job, "accuracy", [0.5, 0.75])
    client.force_login(bob)
    body = client.get("/jobs/charted/").content.decode()
    section = body.split('<section id="metric-charts"', 1)[1].split("</section>", 1)[0]
    assert 'data-metrics-url="/jobs/charted/metrics.json"' in section
    assert 'data-final="0"' in section  # followed while it runs
    assert re.findall(r'<figure class="metric-chart" data-metric="([^"]+)">', section) == [
        "accuracy",
        "loss",
        "lr",
    ]
    loss = figure(section, "loss")
    assert '<b data-stat="last">7e-05</b>' in loss  # the exponent kept
    assert '<b data-stat="min">7e-05</b>' in loss and '<b data-stat="max">0.9</b>' in loss
    assert '<span data-stat="count">3</span> points' in loss
    assert "lower is better" in loss
    assert "higher is better" in figure(section, "accuracy")
    assert '<b data-stat="last">—</b>' in figure(section, "lr")  # defined, no point yet
    for control in ("data-chart-x", "data-chart-log", "data-chart-smooth"):
        assert control in section
    assert "/static/vendor/uplot/uPlot.iife.min.js" in body and "/static/metrics.js" in body
    assert "rank" not in loss  # not ranked while it runs


def test_the_data_url_answers_the_charts(client, alice, bob):
    job = make_job(alice, "charted-data", status="InProgress")
    curve(job, "loss", [0.9, 0.5, 0.25])
    client.force_login(bob)
    data = client.get("/jobs/charted-data/metrics.json").json()
    assert data["final"] is False  # the charts follow it
    assert data["metrics"]["loss"]["points"] == [[1, T0, 0.9], [2, T0 + 1000, 0.5], [3, T0 + 2000, 0.25]]
    since = client.get("/jobs/charted-data/metrics.json?since=2").json()
    assert since["metrics"]["loss"]["points"] == [[3, T0 + 2000, 0.25]]


def test_a_job_without_metrics_says_how_to_get_them(client, alice, bob):
    make_job(alice, "no-metrics")
    client.force_login(bob)
    body = client.get("/jobs/no-metrics/").content.decode()
    assert 'id="metric-none"' in body
    assert "/static/metrics.js" not in body  # final, nothing to draw: no script


def test_metric_names_are_escaped(client, alice, bob):
    evil = '"><script>alert(1)</script>'
    job = make_job(alice, "evil-metric", metric_definitions=[{"name": evil, "regex": "x=(1)"}])
    curve(job, evil, [1.0])
    client.force_login(bob)
    body = client.get("/jobs/evil-metric/").content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "&quot;&gt;&lt;script&gt;" in body


@pytest.mark.parametrize(
    ("name", "lower"),
    [
        ("loss", True),
        ("val_loss", True),
        ("train:error", True),
        ("RMSE", True),
        ("mae", True),
        ("validation-err", True),
        ("perplexity", True),
        ("wer", True),
        ("accuracy", False),
        ("f1", False),
        ("answer_accuracy", False),  # "wer" inside a word is not WER
        ("auc", False),
    ],
)
def test_the_direction_of_a_metric(name, lower):
    assert lower_is_better(name) is lower


def test_ordinals():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111, 112)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th", "112th",
    ]  # fmt: skip


@pytest.fixture
def ranked(alice):
    """Five completed train.py jobs, one running, one of another entry point."""
    losses = {"r-a": 0.30, "r-b": 0.10, "r-c": 0.20, "r-d": 0.20, "r-e": 0.50}
    accuracy = {"r-a": 0.7, "r-b": 0.9, "r-c": 0.95, "r-d": 0.6, "r-e": 0.8}
    jobs = {}
    for name, loss in losses.items():
        jobs[name] = make_job(alice, name)
        curve(jobs[name], "loss", [1.0, loss])
        curve(jobs[name], "accuracy", [0.1, accuracy[name]])
    running = make_job(alice, "r-running", status="InProgress")
    curve(running, "loss", [0.01])  # better, but not finished: not counted
    other = make_job(alice, "r-other", entry_point="other.py")
    curve(other, "loss", [0.001])  # better, but another script
    return jobs


def test_the_rank_among_jobs_of_the_same_entry_point(ranked):
    job = ranked["r-c"]
    placed = ranks(job, list(MetricSeries.objects.filter(job=job)))
    assert placed["loss"].text == "2nd of 5 by lowest loss (last value)"  # tied with r-d
    assert placed["accuracy"].text == "1st of 5 by highest accuracy (last value)"
    worst = ranked["r-e"]
    placed = ranks(worst, list(MetricSeries.objects.filter(job=worst)))
    assert placed["loss"].text == "5th of 5 by lowest loss (last value)"
    tied = ranked["r-d"]
    assert ranks(tied, list(MetricSeries.objects.filter(job=tied)))["loss"].place == 2


def test_the_job_page_shows_the_rank(client, bob, ranked):
    client.force_login(bob)
    body = client.get("/jobs/r-b/").content.decode()
    assert '<span class="rank" data-rank>1st of 5 by lowest loss (last value)</span>' in figure(body, "loss")
    assert '<span class="rank" data-rank>2nd of 5 by highest accuracy (last value)</span>' in figure(
        body, "accuracy"
    )
    assert "data-rank" not in client.get("/jobs/r-running/").content.decode()


def test_the_rank_costs_one_query_whatever_the_jobs_and_metrics(alice, ranked):
    job = ranked["r-a"]
    series = list(MetricSeries.objects.filter(job=job))
    with CaptureQueriesContext(connection) as few:
        ranks(job, series)
    curve(job, "f1", [0.5])
    curve(job, "mae", [0.5])
    for i in range(30):
        extra = make_job(alice, f"r-more-{i}")
        for metric in ("loss", "accuracy", "f1", "mae"):
            curve(extra, metric, [i / 30])
    series = list(MetricSeries.objects.filter(job=job))
    assert len(series) == 4
    with CaptureQueriesContext(connection) as many:
        placed = ranks(job, series)
    assert len(few) == len(many) == 1
    assert placed["f1"].total == 31 and placed["mae"].total == 31
