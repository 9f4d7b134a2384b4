"""``GET /jobs/<name>/metrics.json``: a job's metric series, downsampled, for its charts and
for scripts.

``{"job", "status", "final", "metrics": {"<name>": {"points": [[step, unix_ms, value], …],
"count", "dropped", "last", "min", "max", "first_ms", "last_ms", "downsampled"}}}``
(``jobs.metrics.display_series``). Parameters, each bounded (a clear 400 otherwise):
``since`` (a step: only later points, for a live chart), ``points`` (per metric, 8-10,000,
default 1,000), ``metric`` (repeatable: only these metrics). Any signed-in team member may
read any job's metrics.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from jobs import metrics
from jobs.models import TrainingJob

MAX_STEP = 10**12


class BadParameter(ValueError):
    """A parameter out of its bounds; the message says which and why."""


def _int(request: HttpRequest, key: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.GET.get(key)
    if raw is None or raw == "":
        return default
    if len(raw) > 20 or not raw.isascii() or not raw.isdigit():
        raise BadParameter(f"{key} must be a whole number from {low:,} to {high:,}.")
    value = int(raw)
    if not low <= value <= high:
        raise BadParameter(f"{key} must be a whole number from {low:,} to {high:,}.")
    return value


def _names(request: HttpRequest) -> list[str] | None:
    names = request.GET.getlist("metric")
    if not names:
        return None
    if len(names) > metrics.MAX_DEFINITIONS:
        raise BadParameter(f"At most {metrics.MAX_DEFINITIONS} metric parameters.")
    if any(not n or len(n) > metrics.MAX_NAME for n in names):
        raise BadParameter(f"A metric parameter is a name of 1 to {metrics.MAX_NAME} characters.")
    return names


@login_required
@require_GET
def metrics_json(request: HttpRequest, name: str) -> JsonResponse:
    job = get_object_or_404(TrainingJob.objects.only("pk", "name", "status"), name=name)
    try:
        since = _int(request, "since", None, 0, MAX_STEP)
        low, high = metrics.MIN_DISPLAY_POINTS, metrics.MAX_DISPLAY_POINTS
        points = _int(request, "points", metrics.DISPLAY_POINTS, low, high)
        names = _names(request)
    except BadParameter as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    assert points is not None
    data = metrics.display_series(job, max_points=points, since_step=since, names=names)
    response = JsonResponse(
        {"job": job.name, "status": job.status, "final": job.status in TrainingJob.FINAL, **data},
        json_dumps_params={"separators": (",", ":")},
    )
    response["Cache-Control"] = "no-store"
    return response
