"""A SageMaker training job's metrics, read from CloudWatch Metrics as SageMaker publishes them.

SageMaker parses each job's log with its MetricDefinitions and publishes every metric in the
namespace ``/aws/sagemaker/TrainingJobs`` with the dimension ``TrainingJobName`` (as the
SageMaker SDK's ``TrainingJobAnalytics`` reads them: ``Average`` over a 60 s period). One
``GetMetricData`` call takes up to ``MAX_QUERIES`` metrics, so one poll cycle asks for every
running job's metrics in ``ceil(metrics / 500)`` calls (and their ``NextToken`` pages).

The watermark is the last point stored (``MetricsWanted.seen``): each metric gets only the
periods after it. A period is taken once it is over (a running job's current minute still
moves), so a stored point never changes; a job that ended gets its last periods up to a minute
after its end (CloudWatch rounds the end time down to the minute, as the SDK notes).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from jobs.backends.base import MetricsWanted, NewPoints

NAMESPACE = "/aws/sagemaker/TrainingJobs"
DIMENSION = "TrainingJobName"
PERIOD = 60
STAT = "Average"
MAX_QUERIES = 500
#: Pages of one call followed at most (a page holds up to 100,800 points).
MAX_PAGES = 20
#: How far back a job with no start time and no point yet is read.
LOOKBACK_MS = 3 * 3600 * 1000


def _now_ms() -> int:
    return int(time.time() * 1000)


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def metric_points(cloudwatch: Any, wanted: Sequence[MetricsWanted]) -> dict[str, dict[str, NewPoints]]:
    """``Backend.metric_points`` for SageMaker: every wanted metric in as few calls as fit."""
    now = _now_ms()
    queries: list[tuple[int, int, MetricsWanted, str]] = []  # (after ms, until ms, job, metric)
    for w in wanted:
        # The newest period start taken: a running job's last complete period; an ended job's
        # period holding its end.
        until = now - PERIOD * 1000 if w.end_ms is None else min(now, w.end_ms)
        for name in w.metrics:
            last = w.seen.get(name, (0, None))[1]
            after = last if last is not None else (w.start_ms or now - LOOKBACK_MS) - 1
            if after < until:
                queries.append((after, until, w, name))
    queries.sort(key=lambda q: (q[0], q[2].job, q[3]))  # calls of neighbouring start times
    out: dict[str, dict[str, NewPoints]] = {}
    for i in range(0, len(queries), MAX_QUERIES):
        _call(cloudwatch, queries[i : i + MAX_QUERIES], out)
    return out


def _call(cloudwatch: Any, queries: list[tuple[int, int, MetricsWanted, str]], out: dict[str, Any]) -> None:
    start = min(q[0] for q in queries) + 1
    # Whole minutes: CloudWatch aligns periods to them; the end is past the newest period taken.
    start_time = _time(start // 60_000 * 60_000)
    end_time = _time((max(q[1] for q in queries) // 60_000 + 1) * 60_000)
    params: dict[str, Any] = {
        "MetricDataQueries": [
            {
                "Id": f"m{n}",
                "MetricStat": {
                    "Metric": {
                        "Namespace": NAMESPACE,
                        "MetricName": name,
                        "Dimensions": [{"Name": DIMENSION, "Value": w.job}],
                    },
                    "Period": PERIOD,
                    "Stat": STAT,
                },
                "ReturnData": True,
            }
            for n, (_, _, w, name) in enumerate(queries)
        ],
        "StartTime": start_time,
        "EndTime": end_time,
        "ScanBy": "TimestampAscending",
    }
    found: dict[int, list[tuple[int, float]]] = {}
    for _ in range(MAX_PAGES):
        page = cloudwatch.get_metric_data(**params)
        for result in page.get("MetricDataResults", []):
            n = int(result["Id"][1:])
            stamps, values = result.get("Timestamps", []), result.get("Values", [])
            found.setdefault(n, []).extend((_ms(t), float(v)) for t, v in zip(stamps, values, strict=False))
        token = page.get("NextToken")
        if not token:
            break
        params["NextToken"] = token
    for n, points in found.items():
        after, until, w, name = queries[n]
        # A period's timestamp is its start: after the watermark, up to the newest one taken.
        fresh = [(ms, v) for ms, v in sorted(dict(points).items()) if after < ms <= until]
        if fresh:
            out.setdefault(w.job, {})[name] = NewPoints(points=fresh)
