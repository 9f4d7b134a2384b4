"""The job history query and its exports (CSV and JSON, streamed)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.models import Exists, F, OuterRef, Q, QuerySet, Subquery, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from jobs import metrics
from jobs.forms import DEFAULT_SORT, METRIC_STATS, SORTS, HistoryColumn, MetricFilter, parse_sort
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


#: A search on PostgreSQL lists at most this many cut texts' ids matching in their JSON
#: (``_search``), past it a subquery.
MAX_CUT_IDS = 1000
#: ``?mf=`` operators as Django lookups.
LOOKUPS = {"lt": "lt", "le": "lte", "gt": "gt", "ge": "gte"}


def filter_jobs(filters: dict[str, Any] | None) -> Counted | MetricOrdered:
    """All jobs (every user sees every job), narrowed by a valid filter form's ``cleaned_data``.

    The owners come in a second query rather than a join: with a join, SQLite reads every row
    an ``OFFSET`` skips (page 500: 25,000 rows), without one it walks the index only. Sorted by
    a metric, the jobs are a ``MetricOrdered`` (those with the metric, then those without).

    A metric filter is a correlated ``EXISTS`` on the job's own ``(job, name)`` row: the page is
    still read in the history's index, in order, each job checked by one index probe, and it
    stops at the page's last row (as ``id IN (…)``, SQLite read every matching job's whole row
    by its key and sorted them all). The count is read in the metric's index (``Counted``).
    """
    jobs = TrainingJob.objects.prefetch_related("owner")
    filters = filters or {}
    narrowed = any(filters.get(k) for k in ("status", "owner", "created_from", "created_to", "q"))
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
    conditions = list(filters.get("mf") or [])
    sort, column, descending = parse_sort(filters.get("sort") or DEFAULT_SORT)
    if column is not None:
        return MetricOrdered(
            jobs, column.name, column.stat, descending=descending, conditions=conditions, narrowed=narrowed
        )
    if not conditions:
        jobs = jobs.order_by(*SORTS[sort])
        return Counted(jobs, jobs)
    rows = _series_meeting(conditions)
    if narrowed:  # the other filters' jobs as a list of ids (status: a small index of its own)
        rows = rows.filter(job_id__in=jobs.order_by().values("pk"))
    return Counted(_meeting(jobs, conditions).order_by(*SORTS[sort]), rows)


def _by_keys(ids: Sequence[int]) -> list[TrainingJob]:
    """The jobs ``ids``, read by key with their owners joined, in the order of ``ids``."""
    rows = TrainingJob.objects.select_related("owner").in_bulk(ids) if ids else {}
    return [rows[pk] for pk in ids if pk in rows]


def _page_by_keys(jobs: QuerySet[TrainingJob], key: slice) -> list[TrainingJob]:
    """A slice of ``jobs`` in two reads: its ids, in the order's index alone (each index the
    history's orders are read in holds the order's columns, ``search_text`` and the id:
    ``TrainingJob.Meta``), then its rows by key (``_by_keys``).

    As one query, PostgreSQL reads a job's row before it checks the search on it (a filter on a
    plain index scan is checked on the row), so a page 500 fetched 25,000 rows it skipped, and a
    search sorted by name fetched every row before the first match (a team's ``resnet-imagenet-…``
    jobs all sort after the others). Its index-only scans read neither. (As ``id IN (a LIMIT …
    OFFSET … subquery)`` in one query, PostgreSQL without statistics, a table just filled,
    planned the subquery once per job of the history.)"""
    return _by_keys(list(jobs.values_list("pk", flat=True)[key]))


def _condition(f: MetricFilter) -> dict[str, Any]:
    return {f"{f.stat}__{LOOKUPS[f.op]}": f.value}


def _meeting(jobs: QuerySet[TrainingJob], conditions: Sequence[MetricFilter]) -> QuerySet[TrainingJob]:
    """``jobs`` whose metrics meet every condition: one ``EXISTS`` on the job's row of each."""
    for f in conditions:
        own = MetricSeries.objects.filter(job_id=OuterRef("pk"), name=f.name, **_condition(f))
        jobs = jobs.filter(Exists(own))
    return jobs


def _series_meeting(conditions: Sequence[MetricFilter]) -> QuerySet[MetricSeries]:
    """One ``MetricSeries`` row per job meeting every condition (the first condition's metric;
    a job has one row per metric name): a range of that metric's index, the others checked on
    the same row (same metric) or by an ``EXISTS`` on the job's row of theirs."""
    first, *rest = conditions
    series = MetricSeries.objects.filter(name=first.name, **_condition(first))
    return _also_meeting(series, first.name, rest)


def _also_meeting(series: QuerySet[MetricSeries], name: str, conditions: Sequence[MetricFilter]):
    for f in conditions:
        if f.name == name:
            series = series.filter(**_condition(f))
        else:
            own = MetricSeries.objects.filter(job_id=OuterRef("job_id"), name=f.name, **_condition(f))
            series = series.filter(Exists(own))
    return series


class Counted:
    """The history in one of its own orders (``SORTS``): each page read by ``_page_by_keys``,
    counted as ``rows`` (the jobs themselves; or, filtered by metrics, their rows in the
    metric's index, one per job, the other filters' jobs as a list of ids, instead of a probe
    per job of the history), iterated and exported as ``jobs``."""

    def __init__(self, jobs: QuerySet[TrainingJob], rows: QuerySet[Any]) -> None:
        self.jobs, self.rows = jobs, rows
        self._count: int | None = None

    def count(self) -> int:
        if self._count is None:
            self._count = self.rows.count()
        return self._count

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, key: slice) -> list[TrainingJob]:
        return _page_by_keys(self.jobs, key)

    def __iter__(self) -> Iterator[TrainingJob]:
        return iter(self.jobs)

    def iterator(self, chunk_size: int = 2000) -> Iterator[TrainingJob]:
        return self.jobs.iterator(chunk_size=chunk_size)

    def order_by(self, *fields: Any) -> QuerySet[TrainingJob]:
        return self.jobs.order_by(*fields)


class MetricOrdered:
    """The history sorted by a metric's statistic: the jobs that have it, by its value (ties:
    oldest id first, or newest when descending), then the jobs that do not, newest first —
    whichever the direction, a job without the metric is never "best".

    Each part is its own query, so that each reads in its own order from an index. The first
    part's page is a slice of ``MetricSeries``'s ``(name, stat, job)`` index alone
    (``with_metric``: an ``OFFSET`` skips index entries, never job rows), its jobs then read by
    key in the same query (``id IN (that slice)``, with their owners). The metric filters are
    checked on the same row (the sorted metric) or by one probe of the job's row of theirs; the
    other filters (status, owner, dates, search) by ``job IN (their jobs' ids)``, listed once.
    When those filters keep so few jobs that the walk would probe more index entries than they
    are (a rare search term), their jobs are read and sorted instead (``_with_ids``). The second
    part is the history's usual newest-first walk, each job probed for the metric's row.

    Counts (``count``) come from indexes, never from a probe per job of the history; how many
    jobs have the metric (where the first part ends) is read only when needed. Django's
    ``Paginator`` takes it as a list (``count()`` and slices); a page costs the same queries
    whatever its number or size: at most two counts and two reads.
    """

    def __init__(
        self,
        jobs: QuerySet[TrainingJob],
        name: str,
        stat: str,
        *,
        descending: bool,
        conditions: Sequence[MetricFilter] = (),
        narrowed: bool = False,
    ) -> None:
        self.name, self.stat, self.descending = name, stat, descending
        self.conditions, self.narrowed = list(conditions), narrowed
        series = MetricSeries.objects.filter(name=name, **{f"{stat}__isnull": False})
        series = _also_meeting(series, name, self.conditions)
        self.narrowing = jobs.order_by().values("pk")
        self.series = self._narrow(series)
        if narrowed:
            # The walk stops at the page's end: each job it meets is probed by its key (listing
            # the filters' jobs, as the counts do, would cost a list of all of them per page).
            series = series.filter(Exists(jobs.order_by().filter(pk=OuterRef("job_id"))))
        order = (F(stat).desc(), F("job_id").desc()) if descending else (F(stat).asc(), F("job_id").asc())
        self.with_metric = series.order_by(*order).values_list("job_id", flat=True)
        # Each job probed for its row of the metric (as ``NOT IN``, every read listed the
        # metric's 90,000 rows first, even for a search's three jobs).
        self.without = _meeting(jobs, self.conditions).filter(~Exists(self._own_value()))
        self.without = self.without.order_by("-created_at", "-id")
        # A condition on the sorted statistic itself: every job meeting it has the statistic.
        self.none_without = any(f.name == name and f.stat == stat for f in self.conditions)
        self.jobs = _meeting(jobs, self.conditions)
        self._with_count: int | None = None
        self._count: int | None = None

    def _rows(self, ids: QuerySet[Any]) -> QuerySet[TrainingJob]:
        """The jobs of ``ids`` (the whole first part, for an export), with their owners, in its
        order (the value looked up in ``ORDER BY`` only, once per row read). A page's are read by
        key in the order its ids came in (``_by_keys``)."""
        value = Subquery(
            MetricSeries.objects.filter(job_id=OuterRef("pk"), name=self.name).values(self.stat)[:1]
        )
        return (
            TrainingJob.objects.select_related("owner")
            .filter(pk__in=ids)
            .order_by(value.desc() if self.descending else value.asc(), "-id" if self.descending else "id")
        )

    def count(self) -> int:
        """Every matching job, read in indexes: with metric filters, the rows of the first one's
        metric (one per job) that meet them all; without filters, the jobs' ``COUNT(*)`` and the
        metric's rows; with other filters alone, those jobs. How many of those have the metric
        is otherwise read only for a page past them (``with_count``)."""
        if self._count is None:
            if self.none_without:
                self._count = self._with_count = self.series.count()
            elif self.conditions:
                self._count = self._narrow(_series_meeting(self.conditions)).count()
            elif not self.narrowed:
                # Where the first part ends, too: a page past it then costs what one inside does.
                self._with_count = self.series.count()
                self._count = TrainingJob.objects.count()
            else:
                self._count = self.jobs.order_by().count()
        return self._count

    def with_count(self) -> int:
        """How many match and have the metric: its rows in its index (the other filters' jobs
        as a list of ids)."""
        if self._with_count is None:
            self._with_count = self.series.count()
        return self._with_count

    def _narrow(self, series: QuerySet[MetricSeries]) -> QuerySet[MetricSeries]:
        """``series`` of the jobs the other filters (status, owner, dates, search) keep: a list
        of their ids, read once (a status's in an index of its own: ``jobs_status_id_idx``)."""
        return series.filter(job_id__in=self.narrowing) if self.narrowed else series

    def _own_value(self) -> QuerySet[MetricSeries]:
        """A job's (``OuterRef("pk")``) row of the sorted metric, holding its statistic."""
        return MetricSeries.objects.filter(
            job_id=OuterRef("pk"), name=self.name, **{f"{self.stat}__isnull": False}
        ).values(self.stat)[:1]

    def _with_ids(self, start: int, stop: int) -> QuerySet[Any]:
        """The ids of the slice of the first part. Walking the metric's index checks each job met
        against the other filters and stops at the slice's end: about ``stop * jobs / matching``
        probes. When that is more than the matching jobs themselves (a rare search term, a deep
        page), those are read instead, each with its value, and sorted."""
        if self.narrowed:
            matching, everyone = self.count(), TrainingJob.objects.count()
            if stop * everyone > matching * matching:
                direction = F("sorted_value").desc() if self.descending else F("sorted_value").asc()
                return (
                    self.jobs.order_by()
                    .annotate(sorted_value=Subquery(self._own_value()))
                    .filter(sorted_value__isnull=False)
                    .order_by(direction, "-id" if self.descending else "id")
                    .values_list("pk", flat=True)[start:stop]
                )
        return self.with_metric[start:stop]

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
            rows = _by_keys(list(self._with_ids(start, stop)))
            if len(rows) == stop - start or self.none_without:
                return rows
            if rows or start == 0:
                self._with_count = start + len(rows)  # the first part ends inside this slice
            elif start < self.with_count():  # changed in between: read it as the count says
                return rows
            if self._count is not None and self._count <= self._with_count:
                return rows  # as counted, no job lacks the metric (a search's few matches)
        else:
            rows = []
        if self.none_without:
            return rows
        offset = max(0, start - self._with_count)
        # The OFFSET skips entries of the index the ids are read in, never rows (as a join,
        # SQLite would read every row skipped).
        return rows + _page_by_keys(self.without, slice(offset, offset + (stop - start - len(rows))))

    def __iter__(self) -> Iterator[TrainingJob]:
        return self.iterator()

    def iterator(self, chunk_size: int = 2000) -> Iterator[TrainingJob]:
        yield from self._rows(self.with_metric).iterator(chunk_size=chunk_size)
        if not self.none_without:
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
        # The few cut rows whose JSON matches are looked up first (the partial index of cut
        # texts: migration 0007), and the search is then ``search_text`` or one of their ids:
        # columns the history's indexes hold, so a page's ids are read in an index alone
        # (``_page_by_keys``) and a count in the trigram index (with the ids' keys, when any).
        # With the JSON test in the same condition, every row read had to be fetched whole.
        cut = TrainingJob.objects.filter(search_text__startswith=SEARCH_TEXT_CUT).alias(**as_text)
        cut = cut.filter(in_json).values_list("pk", flat=True)
        ids = list(cut[: MAX_CUT_IDS + 1])
        if len(ids) > MAX_CUT_IDS:  # very many cut texts match: a subquery, read once (hashed)
            return jobs.filter(Q(search_text__contains=q.lower()) | Q(pk__in=cut))
        return jobs.filter(Q(search_text__contains=q.lower()) | Q(pk__in=ids))
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
