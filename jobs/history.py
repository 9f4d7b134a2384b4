"""The job history query and its exports (CSV and JSON, streamed)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from jobs import metrics
from jobs.forms import DEFAULT_SORT, METRIC_STATS, SORTS, HistoryColumn, parse_sort
from jobs.models import SEARCH_TEXT_CUT, MetricSeries, TrainingJob

#: An export's columns (every matching job is a row: exports are streamed, never cut).
EXPORT_FIELDS = [
    "name",
    "status",
    "owner",
    "created_at",
    "duration_seconds",
    "instance_type",
    "instance_count",
    "entry_point",
    "model_artifacts",
]
#: Jobs read (and their metrics looked up) at a time by an export.
EXPORT_BATCH = 2000
#: Columns the page offers to add, at most.
MAX_SUGGESTIONS = 200
#: A spreadsheet reads a cell starting with one of these as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def filter_jobs(filters: dict[str, Any] | None) -> QuerySet[TrainingJob] | MetricOrdered:
    """All jobs (every user sees every job), narrowed by a valid filter form's ``cleaned_data``.

    The owners come in a second query rather than a join: with a join, SQLite reads every row
    an ``OFFSET`` skips (page 500: 25,000 rows), without one it walks the index only. Sorted by
    a metric, the jobs are a ``MetricOrdered`` (those with the metric, then those without).
    """
    jobs = TrainingJob.objects.prefetch_related("owner")
    filters = filters or {}
    if filters.get("status"):
        jobs = jobs.filter(status=filters["status"])
    if filters.get("owner"):
        jobs = jobs.filter(owner__username=filters["owner"])
    # Day bounds as created_at ranges (an index range), the days of the current time zone.
    if filters.get("created_from"):
        jobs = jobs.filter(created_at__gte=_day_start(filters["created_from"]))
    if filters.get("created_to"):
        jobs = jobs.filter(created_at__lt=_day_start(filters["created_to"] + timedelta(days=1)))
    if filters.get("q"):
        jobs = _search(jobs, filters["q"])
    for f in filters.get("mf") or []:
        lookup = {"lt": "lt", "le": "lte", "gt": "gt", "ge": "gte"}[f.op]
        jobs = jobs.filter(pk__in=_having(f.name, f.stat, **{f"{f.stat}__{lookup}": f.value}))
    sort, column, descending = parse_sort(filters.get("sort") or DEFAULT_SORT)
    if column is not None:
        return MetricOrdered(jobs, column.name, column.stat, descending=descending)
    return jobs.order_by(*SORTS[sort])


def _having(name: str, stat: str, **condition: Any) -> QuerySet[MetricSeries]:
    """The ids of the jobs whose metric ``name`` has a ``stat`` (meeting ``condition``): read
    in the ``(name, stat, job)`` index alone."""
    lookup = condition or {f"{stat}__isnull": False}
    return MetricSeries.objects.filter(name=name, **lookup).values("job_id")


class MetricOrdered:
    """The history sorted by a metric's statistic: the jobs that have it, by its value (ties:
    oldest id first, or newest when descending), then the jobs that do not, newest first —
    whichever the direction, a job without the metric is never "best".

    Each part is its own query, so that each reads in its own order from an index: the first
    walks ``MetricSeries``'s ``(name, stat, job)`` index and joins each job by its key (a page
    costs its rows, not the history's size), the second is the history's usual newest-first
    walk without those jobs. Django's ``Paginator`` takes it as a list (``count()`` and
    slices); a page costs the same queries whatever its number or size: one count (both parts
    in one aggregate) and at most two reads.
    """

    def __init__(self, jobs: QuerySet[TrainingJob], name: str, stat: str, *, descending: bool) -> None:
        having = _having(name, stat)
        order = F(f"metric_series__{stat}")
        self.with_metric = jobs.filter(
            metric_series__name=name, **{f"metric_series__{stat}__isnull": False}
        ).order_by(order.desc() if descending else order.asc(), "-id" if descending else "id")
        self.without = jobs.exclude(pk__in=having).order_by("-created_at", "-id")
        self.jobs, self.having = jobs, having
        self._with_count: int | None = None
        self._count: int | None = None

    def count(self) -> int:
        if self._count is None:
            totals = self.jobs.order_by().aggregate(
                total=Count("pk"), having=Count("pk", filter=Q(pk__in=self.having))
            )
            self._count, self._with_count = totals["total"], totals["having"]
        return self._count

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, key: slice) -> list[TrainingJob]:
        if not isinstance(key, slice) or key.step is not None:
            raise TypeError("MetricOrdered takes slices only")
        start, stop = key.start or 0, key.stop
        if stop is None:
            stop = self.count()
        if stop <= start:
            return []
        if self._with_count is None or start < self._with_count:
            rows = list(self.with_metric[start:stop])
            if len(rows) == stop - start:
                return rows
            if rows or start == 0:
                self._with_count = start + len(rows)  # the first part ends inside this slice
            else:
                self.count()
                if start < self._with_count:  # changed in between: read it as the count says
                    return rows
        else:
            rows = []
        offset = max(0, start - self._with_count)
        return rows + list(self.without[offset : offset + (stop - start - len(rows))])

    def iterator(self, chunk_size: int = 2000) -> Iterator[TrainingJob]:
        yield from self.with_metric.iterator(chunk_size=chunk_size)
        yield from self.without.iterator(chunk_size=chunk_size)


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def _search(jobs: QuerySet[TrainingJob], q: str) -> QuerySet[TrainingJob]:
    """Jobs whose name, hyperparameters or channels contain ``q`` (any case).

    The condition reads only ``search_text`` (lower case) and the id, which the indexes the
    pages are read in hold (``TrainingJob.Meta``): SQLite checks it there and reads only the
    rows shown. A job whose text was cut (rare: see ``SEARCH_TEXT_MAX_BYTES``) is also searched
    in its JSON fields, by a subquery on its own row.
    """
    as_text = {
        "hyperparameters_text": Cast("hyperparameters", TextField()),
        "channels_text": Cast("channels", TextField()),
    }
    in_json = Q(hyperparameters_text__icontains=q) | Q(channels_text__icontains=q)
    if connection.vendor == "postgresql":
        # PostgreSQL reads each side of the OR in an index (the trigram index, and the partial
        # index of cut texts: migration 0007) and checks the JSON of the few cut rows only; as
        # a subquery, it would scan every row's JSON once per search.
        cut = Q(search_text__startswith=SEARCH_TEXT_CUT) & in_json
        return jobs.alias(**as_text).filter(Q(search_text__contains=q.lower()) | cut)
    in_own_row = TrainingJob.objects.filter(pk=OuterRef("pk")).alias(**as_text).filter(in_json)
    cut = Q(search_text__startswith=SEARCH_TEXT_CUT) & Q(Exists(in_own_row))
    return jobs.filter(Q(search_text__contains=q.lower()) | cut)


def export_row(job: TrainingJob) -> dict[str, Any]:
    duration = job.duration
    return {
        "name": job.name,
        "status": job.status,
        "owner": job.owner.get_username(),
        "created_at": job.created_at,
        "duration_seconds": int(duration.total_seconds()) if duration is not None else None,
        "instance_type": job.instance_type,
        "instance_count": job.instance_count,
        "entry_point": job.entry_point,
        "model_artifacts": job.model_artifacts,
    }


def _exported(jobs: Any, columns: Sequence[HistoryColumn] = ()) -> Iterator[dict[str, Any]]:
    """Every matching job, however many: read 2,000 rows at a time and streamed, never cut; each
    with its metrics (one query a batch) and the chosen columns."""
    batch: list[TrainingJob] = []
    for job in jobs.iterator(chunk_size=EXPORT_BATCH):
        batch.append(job)
        if len(batch) == EXPORT_BATCH:
            yield from _export_batch(batch, columns)
            batch = []
    yield from _export_batch(batch, columns)


def _export_batch(batch: list[TrainingJob], columns: Sequence[HistoryColumn]) -> Iterator[dict[str, Any]]:
    found = metrics.summaries(job.pk for job in batch) if batch else {}
    for job in batch:
        row = export_row(job)
        series = found.get(job.pk, {})
        for column in columns:
            row[column.spec] = cell(job, series, column)
        row["metrics"] = {
            name: {"last": s["last"], "min": s["min"], "max": s["max"]} for name, s in sorted(series.items())
        }
        yield row


def safe_cell(value: Any) -> Any:
    """Prefix text a spreadsheet would run as a formula with a single quote."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_lines(jobs: Any, columns: Sequence[HistoryColumn] = ()) -> Iterable[str]:
    """The export as CSV: the usual fields, then one column per chosen column (its spec as
    header: ``metric:loss:min``, ``hp:lr``). A column's header is text the user chose: guarded
    like every cell."""
    writer = csv.writer(_Echo())
    names = [*EXPORT_FIELDS, *(c.spec for c in columns)]
    yield writer.writerow([safe_cell(n) for n in names])
    for row in _exported(jobs, columns):
        yield writer.writerow([safe_cell("" if row[f] is None else row[f]) for f in names])


def json_chunks(jobs: Any, columns: Sequence[HistoryColumn] = ()) -> Iterable[str]:
    """The export as a JSON list: each job's fields, the chosen columns by spec, and ``metrics``
    (``{"<name>": {"last", "min", "max"}}``, every metric of the job)."""
    yield "["
    for i, row in enumerate(_exported(jobs, columns)):
        yield ("," if i else "") + json.dumps(row, cls=DjangoJSONEncoder)
    yield "]\n"


# --- the page's table --------------------------------------------------------------------------


def cell(job: TrainingJob, series: dict[str, dict[str, Any]], column: HistoryColumn) -> Any:
    """A job's value in a chosen column: the metric's statistic (``None`` without it), or the
    hyperparameter's value as typed (``None`` when the job has no such key)."""
    if column.kind == "metric":
        return (series.get(column.name) or {}).get(column.stat)
    for hp in job.hyperparameters if isinstance(job.hyperparameters, list) else []:
        if isinstance(hp, dict) and hp.get("key") == column.name:
            return hp.get("value")
    return None


def shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def table(page: Any, columns: Sequence[HistoryColumn], sort: str) -> dict[str, Any]:
    """The history table's extra context: each job of the page gets ``cells`` (its values in the
    chosen columns, in one query for the whole page), each column a header to sort by, and the
    columns the page could add (its jobs' metrics and hyperparameters)."""
    page.object_list = list(page.object_list)
    # The metrics are read only for a metric column (one query); the columns offered come from
    # the rows as read: the metrics each job defines, its hyperparameters.
    wanted = any(c.kind == "metric" for c in columns)
    found = metrics.summaries(job.pk for job in page.object_list) if wanted else {}
    suggestions: dict[str, None] = {}
    for job in page.object_list:
        series = found.get(job.pk, {})
        job.cells = [shown(cell(job, series, c)) for c in columns]
        definitions = job.metric_definitions if isinstance(job.metric_definitions, list) else []
        for name in [d.get("name") for d in definitions if isinstance(d, dict)] + sorted(series):
            for stat in METRIC_STATS:
                suggestions[f"metric:{name}:{stat}"] = None
        for hp in job.hyperparameters if isinstance(job.hyperparameters, list) else []:
            if isinstance(hp, dict) and hp.get("key"):
                suggestions[f"hp:{hp['key']}"] = None
    chosen = {c.spec for c in columns}
    headers = []
    for column in columns:
        arrow, next_sort = "", column.spec
        if column.sortable and sort == column.spec:
            arrow, next_sort = "▲", f"-{column.spec}"
        elif column.sortable and sort == f"-{column.spec}":
            arrow = "▼"
        headers.append({"column": column, "sort": next_sort if column.sortable else None, "arrow": arrow})
    return {
        "columns": headers,
        "column_suggestions": [s for s in suggestions if s not in chosen][:MAX_SUGGESTIONS],
    }
