"""The job history query and its exports (CSV and JSON, streamed)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import date, datetime, time, timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from jobs.forms import DEFAULT_SORT, SORTS
from jobs.models import SEARCH_TEXT_CUT, TrainingJob

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
#: A spreadsheet reads a cell starting with one of these as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def filter_jobs(filters: dict[str, Any] | None) -> QuerySet[TrainingJob]:
    """All jobs (every user sees every job), narrowed by a valid filter form's ``cleaned_data``.

    The owners come in a second query rather than a join: with a join, SQLite reads every row
    an ``OFFSET`` skips (page 500: 25,000 rows), without one it walks the index only.
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
    return jobs.order_by(*SORTS[filters.get("sort") or DEFAULT_SORT])


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


def _exported(jobs: QuerySet[TrainingJob]) -> Iterator[dict[str, Any]]:
    """Every matching job, however many: read 2,000 rows at a time and streamed, never cut."""
    for job in jobs.iterator(chunk_size=2000):
        yield export_row(job)


def safe_cell(value: Any) -> Any:
    """Prefix text a spreadsheet would run as a formula with a single quote."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_lines(jobs: QuerySet[TrainingJob]) -> Iterable[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_FIELDS)
    for row in _exported(jobs):
        yield writer.writerow([safe_cell("" if row[f] is None else row[f]) for f in EXPORT_FIELDS])


def json_chunks(jobs: QuerySet[TrainingJob]) -> Iterable[str]:
    yield "["
    for i, row in enumerate(_exported(jobs)):
        yield ("," if i else "") + json.dumps(row, cls=DjangoJSONEncoder)
    yield "]\n"
