from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from jobs.forms import HistoryFilterForm
from jobs.history import csv_lines, filter_jobs, json_chunks
from jobs.models import TrainingJob
from jobs.tasks import enqueue_stop

PAGE_SIZE = 50


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The start page is the job history."""
    return redirect("history")


@login_required
def history(request: HttpRequest) -> HttpResponse:
    """Every job, newest first, filtered by GET parameters; ``?format=csv|json`` exports."""
    form = HistoryFilterForm(request.GET)
    # Bad filter values: the form says which, and the list is shown unfiltered.
    jobs = filter_jobs(form.cleaned_data if form.is_valid() else None)
    fmt = request.GET.get("format")
    if fmt == "csv":
        response = StreamingHttpResponse(csv_lines(jobs), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="jobs.csv"'
        return response
    if fmt == "json":
        return StreamingHttpResponse(json_chunks(jobs), content_type="application/json")
    page = Paginator(jobs, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "jobs/history.html", {"form": form, "page": page})


def _timeline(transitions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``SecondaryStatusTransitions`` with each step's duration (``None`` while it lasts)."""
    steps = []
    for t in transitions:
        start, end = _parse(t.get("StartTime")), _parse(t.get("EndTime"))
        steps.append(
            {
                "status": t.get("Status", ""),
                "message": t.get("StatusMessage", ""),
                "start": start,
                "end": end,
                "duration": end - start if start and end else None,
            }
        )
    return steps


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _can_stop(user: Any, job: TrainingJob) -> bool:
    return user.is_staff or job.owner_id == user.pk


@login_required
def job_detail(request: HttpRequest, name: str) -> HttpResponse:
    job = get_object_or_404(TrainingJob.objects.select_related("owner", "parent"), name=name)
    ctx = {
        "job": job,
        "timeline": _timeline(job.transitions if isinstance(job.transitions, list) else []),
        "request_json": json.dumps(job.request, indent=2),
        "can_stop": _can_stop(request.user, job) and job.status not in TrainingJob.FINAL,
    }
    return render(request, "jobs/job_detail.html", ctx)


@login_required
@require_http_methods(["GET", "POST"])
def stop(request: HttpRequest, name: str) -> HttpResponse:
    """GET asks to confirm; POST sends ``stop_job`` (owner or staff only)."""
    job = get_object_or_404(TrainingJob, name=name)
    if not _can_stop(request.user, job):
        raise PermissionDenied
    if request.method == "POST":
        if job.status not in TrainingJob.FINAL:
            enqueue_stop(job)
        return redirect("job_detail", name=job.name)
    return render(request, "jobs/stop.html", {"job": job})
