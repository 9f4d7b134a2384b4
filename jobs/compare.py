"""The compare page: 2 to 20 jobs side by side (``/compare/?jobs=a,b,c``).

What differs between them (hyperparameters, channels, resources, code, entry point, metrics; a
toggle shows everything), one overlaid chart per metric with a line per job (``metrics.json``
of the compare page, drawn by ``static/metrics.js``), and the hyperparameters in parallel
coordinates against a chosen metric. Everything is in the query string, so the URL is the view:
``jobs``, ``all=1`` (every row), ``metric`` and ``stat`` (the parallel coordinates' last axis),
and the charts' ``x``, ``log`` and ``smooth``.

Queries are constant whatever the number of jobs: the jobs in one, their metric series in one,
and for the overlays their chunks in two more (raw points for short series, the chunks'
bucket summaries for long ones: ``MetricChunk``'s documented packing).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode

from jobs.charts import direction_words, lower_is_better
from jobs.detail import shown
from jobs.metrics import CHUNK_POINTS, flat_points, flat_summary, summaries, summary_extremes
from jobs.models import MetricChunk, MetricSeries, TrainingJob

MIN_JOBS = 2
MAX_JOBS = 20
#: ``?jobs=`` longer than this is refused before it is split (20 names of 63 characters and commas).
MAX_PARAM = MAX_JOBS * 64 + 64
#: Points drawn in all per overlaid metric, shared by its lines (at most ``MAX_LINE_POINTS`` each).
OVERLAY_POINTS = 3000
MAX_LINE_POINTS = 1000
#: A series this short is read from its points; a longer one from its chunks' summaries.
RAW_SERIES = 4096
#: Category labels drawn on a parallel-coordinates axis (more are counted, not drawn).
MAX_CATEGORY_TICKS = 12
MAX_TICK_CHARS = 24
STATS = ("last", "min", "max")
#: The jobs' colours, in order (static/metrics.js draws the overlays in the same order).
PALETTE = [
    "#2458c6",
    "#d1495b",
    "#2a9d8f",
    "#e9a03b",
    "#7b4fc9",
    "#3d8b37",
    "#c2571a",
    "#1b998b",
    "#b5179e",
    "#5c6f84",
    "#ef476f",
    "#118ab2",
    "#8d6a00",
    "#6a4c93",
    "#06a77d",
    "#d62828",
    "#4361ee",
    "#9c6644",
    "#f77f00",
    "#2b2d42",
]


class CompareError(Exception):
    """A ``?jobs=`` that cannot be compared; ``message`` says why, for the page."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def requested_names(raw: str | None) -> list[str]:
    """The job names of ``?jobs=`` in order, or ``CompareError``: fewer than 2, more than 20,
    or a name listed twice (names are unique regardless of case, so ``a`` and ``A`` are one)."""
    raw = raw or ""
    if len(raw) > MAX_PARAM:
        raise CompareError(f"Too many jobs: compare at most {MAX_JOBS} at a time.")
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if len(names) < MIN_JOBS:
        raise CompareError(
            f"Pick at least {MIN_JOBS} jobs to compare (tick them in the history, then Compare)."
            if not names
            else f"Only one job given ({names[0]}): pick at least {MIN_JOBS} to compare."
        )
    if len(names) > MAX_JOBS:
        raise CompareError(f"{len(names)} jobs given: compare at most {MAX_JOBS} at a time.")
    seen: dict[str, str] = {}
    twice = []
    for n in names:
        if n.casefold() in seen:
            twice.append(n)
        seen.setdefault(n.casefold(), n)
    if twice:
        raise CompareError(f"Listed more than once: {', '.join(twice)}. Give each job once.")
    return names


def load_jobs(names: list[str]) -> list[TrainingJob]:
    """The jobs, in the order asked (one query), or ``CompareError`` (404) naming the unknown."""
    found = {j.name: j for j in TrainingJob.objects.select_related("owner", "parent").filter(name__in=names)}
    missing = [n for n in names if n not in found]
    if missing:
        raise CompareError(f"No such job: {', '.join(missing)}.", status=404)
    return [found[n] for n in names]


# --- the table of differences ------------------------------------------------------------------


@dataclass
class Row:
    section: str
    label: str
    cells: list[str]
    #: Index of the best job on a metric row (by the metric's direction), else None.
    best: int | None = None
    note: str = ""

    @property
    def differs(self) -> bool:
        return len(set(self.cells)) > 1


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.6g}"


def _hyperparameter(hp: dict[str, Any]) -> str:
    value = str(hp.get("value", ""))
    kind = hp.get("type") or "string"
    return value if kind in ("string", "number") else f"{value} ({kind})"


def _channel(ch: dict[str, Any]) -> str:
    parts = [str(ch.get("uri") or "")]
    if ch.get("content_type"):
        parts.append(str(ch["content_type"]))
    parts.append(str(ch.get("input_mode") or "File"))
    return " · ".join(parts)


def _keyed(items: Any, key: str) -> dict[str, dict[str, Any]]:
    return {str(i.get(key)): i for i in items if isinstance(i, dict)} if isinstance(items, list) else {}


def _union(maps: list[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for m in maps:
        keys.update(dict.fromkeys(m))
    return sorted(keys)


def table(jobs: list[TrainingJob], metrics: dict[int, dict[str, dict[str, Any]]]) -> list[Row]:
    """Every row of the comparison (``Row.differs`` tells the ones the page shows by default).
    ``jobs`` as shown (secrets redacted); ``metrics``: ``summaries()``'s shape."""
    rows = [
        Row("Code", "entry point", [j.entry_point for j in jobs]),
        Row("Code", "code sha256", [j.source_sha256 or "—" for j in jobs]),
        Row("Job", "status", [j.status for j in jobs]),
        Row("Job", "owner", [j.owner.get_username() for j in jobs]),
        Row("Job", "cloned from", [j.parent.name if j.parent_id and j.parent else "—" for j in jobs]),
    ]
    hps = [_keyed(j.hyperparameters, "key") for j in jobs]
    for key in _union(hps):
        rows.append(Row("Hyperparameters", key, [_hyperparameter(h[key]) if key in h else "—" for h in hps]))
    channels = [_keyed(j.channels, "name") for j in jobs]
    for name in _union(channels):
        rows.append(Row("Channels", name, [_channel(c[name]) if name in c else "—" for c in channels]))
    rows += [
        Row("Resources", "instance type", [j.instance_type for j in jobs]),
        Row("Resources", "instance count", [str(j.instance_count) for j in jobs]),
        Row("Resources", "volume", [f"{j.volume_size_gb} GB" for j in jobs]),
        Row("Resources", "max runtime", [f"{j.max_runtime_seconds} s" for j in jobs]),
    ]
    per_job = [metrics.get(j.pk, {}) for j in jobs]
    for name in _union(per_job):
        lower = lower_is_better(name)
        for stat in STATS:
            values = [m[name][stat] if name in m else None for m in per_job]
            known = [(v, i) for i, v in enumerate(values) if v is not None]
            best = (min(known) if lower else max(known, key=lambda p: (p[0], -p[1])))[1] if known else None
            rows.append(
                Row(
                    "Metrics",
                    f"{name} ({stat})",
                    [_number(v) for v in values],
                    best=best if len(known) > 1 else None,
                    note=direction_words(name) if stat == "last" else "",
                )
            )
    return rows


# --- parallel coordinates ------------------------------------------------------------------------


@dataclass
class Axis:
    name: str
    raw: list[Any]  # one value per job (None: the job has none)
    kind: str = "number"
    log: bool = False
    ticks: list[tuple[float, str]] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)


def _as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _scale(axis: Axis) -> Axis:
    """Scale the axis to 0..1: numbers on their own scale (log when all are positive and span
    two decades or more, as learning rates do), anything else as ordered categories."""
    present = [v for v in axis.raw if v is not None]
    numbers = [_as_float(v) for v in present]
    if present and all(n is not None for n in numbers):
        lo, hi = min(numbers), max(numbers)  # type: ignore[type-var]
        axis.log = lo > 0 and hi / lo >= 100
        f = math.log10 if axis.log else (lambda x: x)
        a, b = f(lo), f(hi)

        def place(x: float) -> float:
            return 0.5 if b == a else (f(x) - a) / (b - a)

        axis.values = [None if v is None else round(place(float(v)), 6) for v in axis.raw]
        axis.ticks = (
            [(place(lo), f"{lo:.4g}"), (place(hi), f"{hi:.4g}")] if lo != hi else [(0.5, f"{lo:.4g}")]
        )
        return axis
    axis.kind = "category"
    categories = sorted({str(v) for v in present}, key=lambda s: (_as_float(s) is None, _as_float(s) or 0, s))
    where = {
        c: (0.5 if len(categories) == 1 else i / (len(categories) - 1)) for i, c in enumerate(categories)
    }
    axis.values = [None if v is None else round(where[str(v)], 6) for v in axis.raw]
    step = max(1, math.ceil(len(categories) / MAX_CATEGORY_TICKS))
    axis.ticks = [(where[c], _short(c)) for c in categories[::step]]
    return axis


def _short(text: str) -> str:
    return text if len(text) <= MAX_TICK_CHARS else text[: MAX_TICK_CHARS - 1] + "…"


def parallel(
    jobs: list[TrainingJob], metrics: dict[int, dict[str, dict[str, Any]]], metric: str | None, stat: str
) -> dict[str, Any]:
    """The parallel-coordinates chart's data: an axis per hyperparameter that differs (every
    one when none does), then ``metric``'s ``stat``; a line per job, in the page's colours."""
    hps = [_keyed(j.hyperparameters, "key") for j in jobs]
    keys = _union(hps)
    differing = [k for k in keys if len({str(h[k].get("value")) if k in h else None for h in hps}) > 1]
    axes = [Axis(k, [h[k].get("value") if k in h else None for h in hps]) for k in differing or keys]
    if metric:
        axes.append(
            Axis(f"{metric} ({stat})", [metrics.get(j.pk, {}).get(metric, {}).get(stat) for j in jobs])
        )
    axes = [_scale(a) for a in axes]
    return {
        "axes": [{"name": a.name, "kind": a.kind, "log": a.log, "ticks": a.ticks} for a in axes],
        "lines": [
            {"job": j.name, "color": PALETTE[i % len(PALETTE)], "values": [a.values[i] for a in axes]}
            for i, j in enumerate(jobs)
        ],
    }


# --- the overlays' points ------------------------------------------------------------------


def overlay_points(series: list[MetricSeries], per_line: int) -> dict[int, list[list[Any]]]:
    """Series id → ``[[step, unix_ms, value], …]``, at most ``per_line`` points each: past that,
    each bucket of steps keeps its first, minimum, maximum and last point. Two queries whatever
    the number of series: the chunks of the short series by their points, the long ones by their
    summaries (already four points per 64 steps).

    A bucket is a power of two of steps wide, so buckets never straddle chunks (4,096 steps,
    from step 1) and each chunk is thinned on its own, on the tuples ``struct`` unpacks, without
    building the whole series first. A bucket as wide as a chunk or wider is cut at each chunk
    (four points a chunk: 100 for a full 100,000-point series)."""
    width = {s.pk: _bucket_width(s.count, per_line) for s in series}
    out: dict[int, list[list[Any]]] = {s.pk: [] for s in series}
    short = [s.pk for s in series if 0 < s.count <= RAW_SERIES]
    long = [s.pk for s in series if s.count > RAW_SERIES]
    if short:
        rows = MetricChunk.objects.filter(series_id__in=short).order_by("series_id", "seq")
        for sid, first, data in rows.values_list("series_id", "first_step", "points"):
            n, packed = flat_points(data)
            out[sid] += _thin(tuple(range(first, first + n)), packed[0::2], packed[1::2], width[sid])
    if long:
        rows = MetricChunk.objects.filter(series_id__in=long).order_by("series_id", "seq")
        for sid, data in rows.values_list("series_id", "summary"):
            if width[sid] >= CHUNK_POINTS:  # the chunk is one bucket: read its values only
                out[sid] += summary_extremes(data)
                continue
            _, packed = flat_summary(data)
            out[sid] += _thin(packed[0::3], packed[1::3], packed[2::3], width[sid])
    return out


def _bucket_width(count: int, per_line: int) -> int:
    """Steps per bucket: 1 (every point) when they fit, else the power of two that gives at
    most ``per_line // 4`` buckets."""
    if count <= per_line:
        return 1
    need = -(-count // max(1, per_line // 4))
    return 1 << (need - 1).bit_length()


def _thin(steps: Sequence[int], ms: Sequence[int], values: Sequence[float], width: int) -> list[list[Any]]:
    """The points of one chunk (ascending steps), each ``width``-step bucket (aligned from step
    1) as its first, minimum, maximum and last point."""
    if width == 1:
        return [[s, t, v] for s, t, v in zip(steps, ms, values, strict=True)]
    out: list[list[Any]] = []
    i, n = 0, len(steps)
    while i < n:
        boundary = ((steps[i] - 1) // width + 1) * width + 1
        j = bisect.bisect_left(steps, boundary, i + 1)
        part = values[i:j]
        lo = i + part.index(min(part))
        hi = i + part.index(max(part))
        out += [[steps[k], ms[k], values[k]] for k in sorted({i, lo, hi, j - 1})]
        i = j
    return out


# --- the views -----------------------------------------------------------------------------------


def _error(request: HttpRequest, error: CompareError) -> HttpResponse:
    return render(request, "jobs/compare.html", {"error": error.message}, status=error.status)


@login_required
def compare_jobs(request: HttpRequest) -> HttpResponse:
    """The compare page (see the module docstring)."""
    try:
        jobs = load_jobs(requested_names(request.GET.get("jobs")))
    except CompareError as error:
        return _error(request, error)
    jobs = [shown(j) for j in jobs]  # secret values hidden wherever they appear
    metrics = summaries([j.pk for j in jobs])
    rows = table(jobs, metrics)
    everything = request.GET.get("all") == "1"
    names = _union([metrics.get(j.pk, {}) for j in jobs])
    metric = request.GET.get("metric")
    if metric not in names:
        metric = names[0] if names else None
    stat = request.GET.get("stat") if request.GET.get("stat") in STATS else "last"
    joined = ",".join(j.name for j in jobs)
    state = {
        k: request.GET[k] for k in ("x", "log", "smooth") if k in request.GET and len(request.GET[k]) < 10
    }
    toggle = {"jobs": joined, **({} if everything else {"all": "1"}), **state}
    if metric:
        toggle.update(metric=metric, stat=stat)
    ctx = {
        "jobs": [{"job": j, "color": PALETTE[i % len(PALETTE)]} for i, j in enumerate(jobs)],
        "rows": rows if everything else [r for r in rows if r.differs],
        "same": sum(not r.differs for r in rows),
        "everything": everything,
        "toggle_url": reverse("compare_jobs") + "?" + urlencode(toggle),
        "joined": joined,
        "metric_names": names,
        "metric": metric,
        "stat": stat,
        "stats": STATS,
        "state": state,
        "parallel": parallel(jobs, metrics, metric, stat),
        "metrics_url": reverse("compare_metrics") + "?" + urlencode({"jobs": joined}),
    }
    return render(request, "jobs/compare.html", ctx)


@login_required
def compare_metrics(request: HttpRequest) -> HttpResponse:
    """The overlays' data: ``{"jobs": [{"name", "metrics": {name: {"points": [[step, unix_ms,
    value], …], "count", "last", "min", "max"}}}]}``, jobs in the order asked."""
    try:
        jobs = load_jobs(requested_names(request.GET.get("jobs")))
    except CompareError as error:
        return JsonResponse({"error": error.message}, status=error.status)
    series = list(MetricSeries.objects.filter(job_id__in=[j.pk for j in jobs]).order_by("name"))
    lines = max(1, len(jobs))
    points = overlay_points(series, max(64, min(MAX_LINE_POINTS, OVERLAY_POINTS // lines)))
    by_job: dict[int, dict[str, Any]] = {j.pk: {} for j in jobs}
    for s in series:
        by_job[s.job_id][s.name] = {
            "points": points.get(s.pk, []),
            "count": s.count,
            "last": s.last,
            "min": s.min,
            "max": s.max,
        }
    return JsonResponse(
        {"jobs": [{"name": j.name, "metrics": by_job[j.pk]} for j in jobs]},
        json_dumps_params={"separators": (",", ":")},
    )
