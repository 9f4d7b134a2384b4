"""What the local emulator answers for a job's metrics: the points its log writer stored
(``LocalMetricBatch``, written as the log is read: ``logs.py``), after what the dashboard has.

The dashboard says how many steps of each metric it has (``MetricsWanted.seen``); a batch is
written whole by one flush, so the new points are those of the batches past that step, plus
the metric's bounded row (past ``jobs.metrics.MAX_POINTS``) when it grew. A few queries for
every running job of a poll cycle: one per ``JOBS_PER_QUERY`` jobs.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db.models import Q

from jobs import metrics
from jobs.backends.base import MetricsWanted, NewPoints
from jobs.backends.local.models import LocalMetricBatch, LocalTrainingJob

#: Jobs asked for in one query (each adds a term per metric it has: SQLite bounds a
#: statement's expression depth).
JOBS_PER_QUERY = 100


def metric_points(wanted: Sequence[MetricsWanted]) -> dict[str, dict[str, NewPoints]]:
    out: dict[str, dict[str, NewPoints]] = {}
    for i in range(0, len(wanted), JOBS_PER_QUERY):
        _read(wanted[i : i + JOBS_PER_QUERY], out)
    return out


def _read(wanted: Sequence[MetricsWanted], out: dict[str, dict[str, NewPoints]]) -> None:
    by_key = {w.job.lower(): w for w in wanted}
    ids = dict(LocalTrainingJob.objects.filter(key__in=list(by_key)).values_list("id", "key"))
    if not ids:
        return
    bounded = metrics.MAX_POINTS + 1  # first_step of a metric's bounded row
    where = Q()
    for job_id, key in ids.items():
        seen = by_key[key].seen
        where |= Q(job_id=job_id) & ~Q(name__in=list(seen))
        for name, (steps, _) in seen.items():
            where |= Q(job_id=job_id, name=name) & (Q(first_step__gt=steps) | Q(first_step=bounded))
    rows = (
        LocalMetricBatch.objects.filter(where)
        .order_by("job_id", "name", "first_step")
        .values_list("job_id", "name", "first_step", "count", "dropped", "points")
    )
    for job_id, name, first, count, dropped, data in rows:
        w = by_key[ids[job_id]]
        done = w.seen.get(name, (0, None))[0]
        if first + dropped + count - 1 <= done:
            continue  # the bounded row, unchanged since
        new = out.setdefault(w.job, {}).setdefault(name, NewPoints())
        new.dropped += max(0, first + dropped - 1 - max(done, first - 1))
        start = first + dropped  # the step of the batch's first point
        new.points += metrics.unpack_points(data)[max(0, done + 1 - start) :]
