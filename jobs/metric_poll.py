"""The poller's metrics pass: new points of every running job (and, a little longer, of jobs
that just ended) from the backend in one batched request, stored with ``jobs.metrics``.

Called by ``jobs.tasks.poll_jobs`` after its status pass. Its cost per cycle is bounded: two
queries to know what is stored, one ``Backend.metric_points`` (the backend batches: local, a
query per 100 jobs; SageMaker, a ``GetMetricData`` per 500 metrics, at most every
``metrics_interval`` seconds), one transaction per metric that has new points. A failure
to read metrics is logged and leaves the status pass alone; the next pass asks again from the
same watermark, so nothing is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db.models import Q
from django.utils import timezone

from jobs import metrics
from jobs.backends.base import Backend, MetricsWanted
from jobs.models import MetricSeries, PollState, TrainingJob

log = logging.getLogger("anyjob.metrics")

RUNNING = (TrainingJob.Status.IN_PROGRESS, TrainingJob.Status.STOPPING)
#: A job that ended is read again for this long after (CloudWatch publishes its last minute
#: late); at least once in any case.
AFTER_END_SECONDS = 180
#: Jobs read in one pass at most (the oldest watermarks first would need a sort: this bounds a
#: pass instead; the rest are read in the next).
MAX_JOBS = 2000


def _ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def _names(definitions: Any) -> tuple[str, ...]:
    out = []
    for d in definitions if isinstance(definitions, list) else []:
        if isinstance(d, dict):
            name = d.get("name", d.get("Name"))
            if isinstance(name, str) and name and name not in out:
                out.append(name)
    return tuple(out[: metrics.MAX_DEFINITIONS])


def wanted_for(jobs: Iterable[TrainingJob]) -> list[MetricsWanted]:
    """What to ask the backend for these jobs, from what is stored (one query)."""
    jobs = [j for j in jobs if _names(j.metric_definitions)]
    seen: dict[int, dict[str, tuple[int, int | None]]] = {}
    rows = MetricSeries.objects.filter(job_id__in=[j.pk for j in jobs]).values_list(
        "job_id", "name", "count", "dropped", "last_ms"
    )
    for job_id, name, count, dropped, last_ms in rows:
        seen.setdefault(job_id, {})[name] = (count + dropped, last_ms)
    out = []
    for j in jobs:
        ended = j.status in TrainingJob.FINAL
        out.append(
            MetricsWanted(
                job=j.name,
                metrics=_names(j.metric_definitions),
                seen=seen.get(j.pk, {}),
                start_ms=_ms(j.training_start_time or j.submitted_at or j.created_at),
                end_ms=_ms(j.training_end_time or j.last_modified or timezone.now()) if ended else None,
            )
        )
    return out


def store(backend: Backend, jobs: list[TrainingJob]) -> int:
    """Fetch and store the new points of ``jobs``; returns how many points were kept."""
    by_name = {j.name: j for j in jobs}
    wanted = wanted_for(jobs)
    if not wanted:
        return 0
    new = backend.metric_points(wanted)
    kept = 0
    for job_name, per_metric in new.items():
        job = by_name.get(job_name)
        if job is None:
            continue
        for name, update in per_metric.items():
            if update.points or update.dropped:
                kept += metrics.append_points(job, name, update.points, dropped=update.dropped)
    return kept


def poll_metrics(backend: Backend, refreshed: Iterable[int] = ()) -> int:
    """One metrics pass (see the module); ``refreshed``: ids of the jobs the status pass just
    described (those now ended are read once more, and for ``AFTER_END_SECONDS``)."""
    state = PollState.get()
    now = time.time()
    pending = {str(k): float(v) for k, v in (state.metrics_final or {}).items()}
    ended = TrainingJob.objects.filter(pk__in=list(refreshed), status__in=TrainingJob.FINAL)
    for pk in ended.values_list("pk", flat=True):
        pending[str(pk)] = now + (AFTER_END_SECONDS if backend.metrics_interval else 0)
    due = state.metrics_at is None or now - state.metrics_at.timestamp() >= backend.metrics_interval
    if not due:
        if pending != state.metrics_final:
            PollState.objects.filter(pk=state.pk).update(metrics_final=pending)
        return 0
    jobs = list(
        TrainingJob.objects.filter(Q(status__in=RUNNING) | Q(pk__in=[int(k) for k in pending]))
        .exclude(metric_definitions=[])
        .order_by("pk")[:MAX_JOBS]
    )
    kept = 0
    try:
        kept = store(backend, jobs)
    except Exception:
        # The status pass has done its work; metrics are asked for again from the same watermark.
        log.warning("metrics pass failed; retried in the next poll", exc_info=True)
        PollState.objects.filter(pk=state.pk).update(metrics_final=pending)
        return 0
    pending = {k: v for k, v in pending.items() if v > now}
    PollState.objects.filter(pk=state.pk).update(metrics_at=timezone.now(), metrics_final=pending)
    return kept
