"""The history sorted and filtered by metrics, read the fast ways (``jobs.history``: pages sliced
from the metric's index, counts from indexes, a rare search's few jobs read and sorted instead),
checked page by page against the order worked out here in Python from the rows themselves:
every combination of sort, metric filters and the other filters, both directions, every page."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs import views
from jobs.models import MetricSeries, TrainingJob
from tests.test_history import names

pytestmark = pytest.mark.django_db

OPS = {"lt": float.__lt__, "le": float.__le__, "gt": float.__gt__, "ge": float.__ge__}
PAGE = 7


@pytest.fixture
def signed_in(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def history(alice, bob) -> list[dict[str, Any]]:
    """300 jobs: two owners, three statuses, creation times out of id order (with ties), a loss
    for most (some rows without values yet: a metric defined, no point read), an accuracy for
    some; values rounded so that ties are common. Returns each job as the reference sees it."""
    rng = random.Random(12)
    base = datetime(2026, 11, 1, tzinfo=UTC)
    minutes = list(range(300))
    rng.shuffle(minutes)
    rows = TrainingJob.objects.bulk_create(
        TrainingJob(
            owner=alice if i % 3 else bob,
            name=f"{'cat' if i % 9 == 0 else 'dog'}-{i:03d}",
            search_text=f"{'cat' if i % 9 == 0 else 'dog'}-{i:03d}",
            entry_point="t.py",
            status=("Completed", "Failed", "Stopped")[i % 3 if i % 5 else 0],
            created_at=base + timedelta(minutes=minutes[i] // 2),
        )
        for i in range(300)
    )
    series, jobs = [], []
    for i, job in enumerate(rows):
        metrics: dict[str, dict[str, float | None]] = {}
        if i % 7:
            if i % 23 == 0:
                metrics["loss"] = {"last": None, "min": None, "max": None}
            else:
                low = round(rng.uniform(0, 1), 1)
                metrics["loss"] = {"last": round(low + rng.uniform(0, 0.3), 1), "min": low, "max": low + 1}
        if i % 4 == 0:
            metrics["acc"] = dict.fromkeys(("last", "min", "max"), round(rng.uniform(0, 1), 1))
        series += [MetricSeries(job=job, name=n, **stats) for n, stats in metrics.items()]
        jobs.append(
            {
                "id": job.pk,
                "name": job.name,
                "status": job.status,
                "owner": job.owner.username,
                "created": job.created_at,
                "metrics": metrics,
            }
        )
    MetricSeries.objects.bulk_create(series)
    return jobs


def value(job: dict[str, Any], name: str, stat: str) -> float | None:
    return job["metrics"].get(name, {}).get(stat)


def expected(jobs: list[dict[str, Any]], params: dict[str, Any]) -> list[str]:
    """The history's order, from the rows: filtered, then by the metric (ties by id, the other
    way when descending) with the jobs lacking it after them, newest first."""
    kept = []
    for job in jobs:
        if params.get("status") and job["status"] != params["status"]:
            continue
        if params.get("owner") and job["owner"] != params["owner"]:
            continue
        if params.get("q") and params["q"] not in job["name"]:
            continue
        meets = True
        for spec in params.get("mf", []):
            name, stat, op, limit = spec.split(":")
            found = value(job, name, stat)
            meets = meets and found is not None and OPS[op](float(found), float(limit))
        if meets:
            kept.append(job)
    newest = sorted(kept, key=lambda j: (j["created"], j["id"]), reverse=True)
    sort = params.get("sort", "-created")
    if sort.lstrip("-") == "name":
        return sorted((j["name"] for j in kept), reverse=sort.startswith("-"))
    if not sort.lstrip("-").startswith("metric:"):
        return [j["name"] for j in newest]
    descending = sort.startswith("-")
    _, name, stat = sort.lstrip("-").split(":")
    having = [j for j in kept if value(j, name, stat) is not None]
    having.sort(key=lambda j: (value(j, name, stat), j["id"]), reverse=descending)
    return [j["name"] for j in having] + [j["name"] for j in newest if value(j, name, stat) is None]


CASES = [
    {"sort": "metric:loss:min"},
    {"sort": "-metric:loss:min"},
    {"sort": "metric:acc:last"},  # most jobs lack it: most pages are the second part
    {"sort": "metric:loss:min", "status": "Completed"},
    {"sort": "-metric:loss:max", "owner": "bob"},
    {"sort": "metric:loss:last", "q": "cat"},  # a few jobs: read and sorted, not walked
    {"sort": "-metric:loss:min", "q": "dog", "status": "Failed"},
    {"sort": "metric:loss:min", "mf": ["loss:min:lt:0.5"]},
    {"sort": "metric:loss:min", "mf": ["loss:max:ge:1.5"]},  # same metric, another statistic
    {"sort": "-metric:loss:last", "mf": ["acc:min:gt:0.3"]},  # another metric: some lack the sorted one
    {"sort": "metric:loss:min", "mf": ["loss:min:lt:0.6"], "status": "Completed"},
    {"sort": "metric:acc:max", "mf": ["loss:min:le:0.4", "acc:last:ge:0.2"], "q": "dog"},
    {"mf": ["loss:min:lt:0.3"]},
    {"mf": ["loss:min:lt:0.5", "acc:max:gt:0.1"], "sort": "name"},
    {"mf": ["loss:last:gt:0.4"], "status": "Stopped", "owner": "alice"},
    {"mf": ["acc:min:lt:0.5"], "q": "cat", "sort": "-created"},
]


def query(params: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in params.items() if k != "mf"] + [f"mf={m}" for m in params.get("mf", [])]
    return "&".join(parts)


@pytest.mark.parametrize("params", CASES, ids=query)
def test_every_page_is_the_order_the_rows_give(signed_in, history, monkeypatch, params):
    monkeypatch.setattr(views, "PAGE_SIZE", PAGE)
    want = expected(history, params)
    pages = max(1, -(-len(want) // PAGE))
    seen = []
    for number in range(1, pages + 1):
        response = signed_in.get(f"/jobs/?{query(params)}&page={number}")
        assert response.status_code == 200
        assert response.context["page"].paginator.count == len(want), number
        seen += names(response)
    assert seen == want
    # Past the end: the last page (Django's get_page), the same rows as read above.
    response = signed_in.get(f"/jobs/?{query(params)}&page={pages + 3}")
    assert names(response) == want[(pages - 1) * PAGE :]


@pytest.mark.parametrize("params", [c for c in CASES if "mf" in c or "sort" in c], ids=query)
def test_exports_carry_the_same_order(signed_in, history, params):
    want = expected(history, params)
    response = signed_in.get(f"/jobs/?{query(params)}&format=json")
    rows = b"".join(response.streaming_content)
    assert [row["name"] for row in json.loads(rows)] == want


@pytest.mark.parametrize(
    "url",
    [
        "/jobs/?sort=metric:loss:min&status=Completed",
        "/jobs/?sort=metric:loss:min&status=Completed&page=9",  # past the jobs with the metric
        "/jobs/?sort=-metric:loss:min&q=dog&page=4",
        "/jobs/?sort=metric:loss:min&mf=loss:min:lt:0.5&status=Completed&page=3",
        "/jobs/?mf=loss:min:lt:0.5&status=Completed&page=2",
    ],
)
def test_queries_with_other_filters_do_not_grow_with_the_history(signed_in, alice, monkeypatch, url):
    """The other filters combined with the metric's: the same bounded number of queries at 300
    jobs and at 3,000, whichever plan (walk the index, or read the few jobs) each page takes."""
    monkeypatch.setattr(views, "PAGE_SIZE", PAGE)
    counts = []
    for count in (300, 3000):
        TrainingJob.objects.all().delete()
        jobs = TrainingJob.objects.bulk_create(
            TrainingJob(owner=alice, name=f"dog-{i:04d}", search_text=f"dog-{i:04d}", entry_point="t.py")
            for i in range(count)
        )
        MetricSeries.objects.bulk_create(
            MetricSeries(job=j, name="loss", last=i % 5 / 5, min=i % 11 / 11, max=2)
            for i, j in enumerate(jobs[: count * 2 // 3])
        )
        with CaptureQueriesContext(connection) as captured:
            assert signed_in.get(url).status_code == 200
        counts.append(len(captured))
    assert counts[0] == counts[1] and counts[1] <= 9, counts


def test_a_status_is_listed_from_its_own_small_index_on_sqlite(history):
    """The count of ``?sort=metric&mf=…&status=…`` lists the status's jobs from
    ``jobs_status_id_idx`` (ids only), not from an index holding every job's search text."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's plan")
    from jobs.forms import MetricFilter
    from jobs.history import filter_jobs

    ordered = filter_jobs(
        {"sort": "metric:loss:min", "status": "Completed", "mf": [MetricFilter.parse("loss:min:lt:0.5")]}
    )
    sql, params = ordered.series.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        cursor.execute("EXPLAIN QUERY PLAN SELECT COUNT(*) FROM (" + sql + ")", params)
        plan = " ".join(str(row[-1]) for row in cursor.fetchall())
    assert "jobs_metric_min_idx" in plan and "jobs_status_id_idx" in plan, plan
