"""bench/metrics: the metric charts' data and the compare page, with jobs of 100,000 points a metric.

Seeds a throwaway SQLite database (bench/dashboard.py's settings and helpers: the same
environment, ``p95``, a new connection per request as ``DATABASE_CONN_MAX_AGE=0`` serves) with
``manage.py seed_jobs`` (1,000 jobs: the baseline's history) and 20 completed jobs of the same
entry point, each with three metrics of ``--points`` points (100,000 by default: the bound a
metric keeps). The first job's series are written through ``jobs.metrics.append_points`` in
batches of 1,000 points, as the poller writes them; the other 19 get copies of its rows (chunk
for chunk: same storage, seeded in seconds rather than minutes).

Timed through Django's test client (the whole request: session, auth, view, template, JSON):

- ``metrics.json`` of one job, whole (what the job page loads first: downsampled, each bucket's
  first/min/max/last kept), and ``?since=`` the last 50 steps (what a running job's page asks
  for every 3 s); the response size of each;
- the job page of one of them (its charts' markup, rank among the 20 on each metric);
- the compare page of the 20, the overlays' ``metrics.json`` it loads (20 lines a metric), and
  the two in a row (the page as a browser loads it: the issue's target applies to this one).

Each against the history's first page (``/jobs/``, 1,000 jobs) measured in the same rounds
through the same client: round-robin, so a moment of load on the shared machine touches every
page alike. Queries are counted per page, and for the compare page at 2 and at 20 jobs (they
must not grow).

Targets (issue #12): ``metrics.json`` p95 ≤ 100 ms and ≤ 250 KB; the compare page of 20 such
jobs p95 ≤ 300 ms. A miss is reported, not an error (exit 0).

Run: ``make bench`` or ``.venv/bin/python bench/metrics.py [--points N] [--runs N]``.
"""

from __future__ import annotations

import argparse
import atexit
import io
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dashboard  # sets the environment: the settings, a throwaway VAR

METRICS_JSON_P95_MS = 100
METRICS_JSON_MAX_BYTES = 250 * 1024
COMPARE_P95_MS = 300
JOBS = 20
METRICS = ("loss", "val_loss", "accuracy")
BATCH = 1000
T0 = 1_764_000_000_000


def values(metric: str, n: int, job: int) -> list[tuple[int, float]]:
    """A noisy training curve (deterministic), one point every 50 ms."""
    import math

    out = []
    for k in range(n):
        noise = math.sin(k * 12.9898 + job) * 0.02
        base = 1 / (1 + k / 2000) + noise if "loss" in metric else 1 - 0.5 / (1 + k / 3000) + noise
        out.append((T0 + 50 * k, base * (1 + job / 100)))
    return out


def seed(points: int) -> list[str]:
    """The 20 jobs with three metrics of ``points`` points each; their names."""
    from django.contrib.auth import get_user_model

    from jobs.metrics import append_points
    from jobs.models import MetricChunk, MetricSeries, TrainingJob

    owner = get_user_model().objects.get(username="bench")
    names = [f"bench-metrics-{i:02d}" for i in range(JOBS)]
    jobs = [
        TrainingJob.objects.create(
            owner=owner,
            name=name,
            entry_point="train.py",
            status="Completed",
            source_sha256=f"{i:064x}",
            hyperparameters=[
                {"key": "learning-rate", "value": str(10 ** -(1 + i % 4)), "type": "number"},
                {"key": "batch-size", "value": str(32 * (1 + i % 3)), "type": "number"},
                {"key": "optimizer", "value": ["adam", "sgd", "adamw"][i % 3], "type": "string"},
                {"key": "epochs", "value": "10", "type": "number"},
            ],
            channels=[{"name": "train", "uri": "s3://bench/train/", "content_type": "text/csv"}],
        )
        for i, name in enumerate(names)
    ]
    first = jobs[0]
    for metric in METRICS:
        series = values(metric, points, 0)
        for start in range(0, len(series), BATCH):
            append_points(first, metric, series[start : start + BATCH])
    originals = list(MetricSeries.objects.filter(job=first))
    chunks = {s.pk: list(MetricChunk.objects.filter(series=s)) for s in originals}
    for i, job in enumerate(jobs[1:], 1):
        for s in originals:
            copy = MetricSeries.objects.create(
                job=job,
                name=s.name,
                count=s.count,
                dropped=s.dropped,
                last=s.last * (1 + i / 100),
                min=s.min * (1 + i / 100),
                max=s.max * (1 + i / 100),
                first_ms=s.first_ms,
                last_ms=s.last_ms,
            )
            MetricChunk.objects.bulk_create(
                MetricChunk(
                    series=copy,
                    seq=c.seq,
                    first_step=c.first_step,
                    count=c.count,
                    points=c.points,
                    summary=c.summary,
                )
                for c in chunks[s.pk]
            )
    return names


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=100_000, help="points per metric (default 100,000)")
    parser.add_argument("--runs", type=int, default=30, help="timed rounds over the pages, after 3 warm-ups")
    args = parser.parse_args()
    atexit.register(shutil.rmtree, dashboard.VAR, ignore_errors=True)

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, connections
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment

    setup_test_environment()
    Path(dashboard.VAR, "static").mkdir(exist_ok=True)  # whitenoise looks there too
    call_command("migrate", verbosity=0)
    client = Client()
    client.force_login(get_user_model().objects.create_user("bench"))
    call_command("seed_jobs", count=dashboard.SMALL, stdout=io.StringIO())
    started = time.perf_counter()
    names = seed(args.points)
    seed_s = time.perf_counter() - started

    def get(url: str | tuple[str, ...]) -> bytes:
        if isinstance(url, tuple):  # a page as a browser loads it: the page, then its data
            return b"".join(get(part) for part in url)
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        return b"".join(response.streaming_content) if response.streaming else response.content

    def queries(url: str | tuple[str, ...]) -> int:
        connections.close_all()
        with CaptureQueriesContext(connection) as captured:
            get(url)
        return len(captured)

    one = names[0]
    since = max(0, args.points - 50)
    joined = ",".join(names)
    urls = {
        "baseline: history first page": "/jobs/",
        "metrics.json (whole, downsampled)": f"/jobs/{one}/metrics.json",
        "metrics.json ?since= (last 50 steps)": f"/jobs/{one}/metrics.json?since={since}",
        "job page (charts' markup, rank)": f"/jobs/{one}/",
        f"compare page, {JOBS} jobs": f"/compare/?jobs={joined}",
        f"compare overlays' metrics.json, {JOBS} jobs": f"/compare/metrics.json?jobs={joined}",
    }
    urls[f"compare page as loaded, {JOBS} jobs (both)"] = (
        urls[f"compare page, {JOBS} jobs"],
        urls[f"compare overlays' metrics.json, {JOBS} jobs"],
    )
    missing = []
    for label, url in list(urls.items()):
        for part in url if isinstance(url, tuple) else (url,):
            status = client.get(part).status_code
            if status != 200:
                missing.append(f"{label} ({part}: HTTP {status})")
                urls.pop(label, None)
    sizes = {label: len(get(url)) for label, url in urls.items()}
    counts = {label: queries(url) for label, url in urls.items()}
    two = ",".join(names[:2])
    compare_counts = {
        n: (queries(f"/compare/?jobs={j}"), queries(f"/compare/metrics.json?jobs={j}"))
        for n, j in ((2, two), (JOBS, joined))
    }

    # What the web server does once before its first request: importing its WSGI module
    # settles the process (webapp.wsgi.settle).
    import webapp.wsgi  # noqa: F401

    timings: dict[str, list[float]] = {label: [] for label in urls}
    for run in range(3 + args.runs):
        for label, url in urls.items():
            connections.close_all()  # a new connection per request, as CONN_MAX_AGE=0 serves
            start = time.perf_counter()
            get(url)
            if run >= 3:
                timings[label].append((time.perf_counter() - start) * 1000)

    print(
        f"metrics: {JOBS} jobs × {len(METRICS)} metrics × {args.points:,} points (+ {dashboard.SMALL:,}"
        f" seeded jobs), SQLite, {args.runs} timed requests a page, round-robin; seeded in {seed_s:.1f} s"
    )
    base = statistics.median(timings["baseline: history first page"])
    print(f"  {'page':44} {'median ms':>9} {'p95 ms':>7} {'x base':>7} {'KB':>7} {'queries':>7}  target")
    result = {}
    for label, samples in timings.items():
        median, tail = statistics.median(samples), dashboard.p95(samples)
        kb = sizes[label] / 1024
        target, verdict = "", ""
        if label.startswith("metrics.json"):
            ok = tail <= METRICS_JSON_P95_MS and sizes[label] <= METRICS_JSON_MAX_BYTES
            target = f"p95 <= {METRICS_JSON_P95_MS} ms, <= {METRICS_JSON_MAX_BYTES // 1024} KB"
            verdict = "PASS" if ok else "MISS"
        elif label.startswith("compare page as loaded"):
            target = f"p95 <= {COMPARE_P95_MS} ms"
            verdict = "PASS" if tail <= COMPARE_P95_MS else "MISS"
        elif label.startswith("compare page"):
            steady = compare_counts[2][0] == compare_counts[JOBS][0]
            target = f"p95 <= {COMPARE_P95_MS} ms, queries constant"
            verdict = "PASS" if tail <= COMPARE_P95_MS and steady else "MISS"
        cells = f"{median:9.1f} {tail:7.1f} {median / base:6.1f}x {kb:7.1f} {counts[label]:>7}"
        print(f"  {label:44} {cells}  {target} {verdict}")
        result[label] = {"median_ms": round(median, 1), "p95_ms": round(tail, 1), "bytes": sizes[label]}
    for n, (page_q, data_q) in compare_counts.items():
        print(f"  queries at {n:2d} jobs: compare page {page_q}, overlays' metrics.json {data_q}")
    steady = compare_counts[2] == compare_counts[JOBS]
    print(f"  compare queries {'constant' if steady else 'GROW'} from 2 to {JOBS} jobs")
    for line in missing:
        print(f"  not measured (not there yet): {line}")
    print(json.dumps({"points": args.points, "pages": result, "compare_queries": compare_counts}))


if __name__ == "__main__":
    main()
