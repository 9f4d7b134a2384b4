from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.functional import cached_property
from django.utils.http import content_disposition_header
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import trigger_client_event

from jobs import artifacts as manifests
from jobs import detail, metric_tester, newjob, storage, uploads
from jobs.backends import get_backend
from jobs.backends.base import ARTIFACTS
from jobs.checks import configuration_problems
from jobs.forms import DEFAULT_SORT, HistoryFilterForm
from jobs.history import csv_lines, filter_jobs, json_chunks
from jobs.history import table as history_table
from jobs.models import TrainingJob
from jobs.permissions import may_change
from jobs.redact import SECRET_NOTE, Secrets, secrets_of
from jobs.tasks import enqueue_stop, enqueue_submit, import_jobs_task

PAGE_SIZE = 50
#: A file inside an artifact larger than this is offered as a download only.
MAX_SHOWN_FILE = 16 * 1024**2
#: The largest file inside an artifact streamed on its own (past it: the whole archive).
MAX_MEMBER_DOWNLOAD = 2 * 1024**3


class HistoryPaginator(Paginator):
    """Reads the first page before counting: when it holds every match (a rare search term at
    100,000 jobs), ``COUNT(*)`` is skipped, and otherwise its rows are reused for the page, so
    a page costs at most the same number of queries whatever the history's size."""

    def __init__(self, object_list: Any, per_page: int) -> None:
        super().__init__(object_list, per_page)
        self._first: list[Any] | None = None
        self._probe = False

    def get_page(self, number: Any) -> Any:
        self._probe = number in (None, "", "1", 1)
        return super().get_page(number)

    @cached_property
    def count(self) -> int:
        if self._probe:
            first = list(self.object_list[: self.per_page + 1])
            self._first = first[: self.per_page]
            if len(first) <= self.per_page:
                return len(first)
        return super().count

    def page(self, number: Any) -> Any:
        number = self.validate_number(number)
        if number == 1 and self._first is not None:
            return self._get_page(self._first, number, self)
        return super().page(number)


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The start page is the job history."""
    return redirect("history")


@login_required
def history(request: HttpRequest) -> HttpResponse:
    """Every job, newest first, filtered by GET parameters; ``?format=csv|json`` exports."""
    form = HistoryFilterForm(request.GET)
    # Bad filter values: the form says which, and the list is shown unfiltered (the columns
    # that are valid are still shown).
    valid = form.is_valid()
    jobs = filter_jobs(form.cleaned_data if valid else None)
    columns = form.cleaned_data.get("col") or []
    fmt = request.GET.get("format")
    if fmt == "csv":
        response = StreamingHttpResponse(csv_lines(jobs, columns), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="jobs.csv"'
        return response
    if fmt == "json":
        return StreamingHttpResponse(json_chunks(jobs, columns), content_type="application/json")
    page = HistoryPaginator(jobs, PAGE_SIZE).get_page(request.GET.get("page"))
    sort = form.cleaned_data.get("sort", DEFAULT_SORT) if valid else DEFAULT_SORT
    ctx = {
        "form": form,
        "page": page,
        "live": any(j.status not in TrainingJob.FINAL for j in page),
        **history_table(page, columns, sort),
    }
    if request.htmx:  # the live refresh of the table
        return render(request, "jobs/_history_table.html", ctx)
    return render(request, "jobs/history.html", ctx)


@login_required
def job_detail(request: HttpRequest, name: str) -> HttpResponse:
    """The job: live status, failure first, log, what was submitted, artifacts, code."""
    job = get_object_or_404(TrainingJob.objects.select_related("owner", "parent"), name=name)
    hidden = secrets_of(job)  # everything below is shown through it
    events, token, older = detail.log_tail(job)
    events = hidden.redact(events)
    job_request = hidden.redact(detail.request_for(job))
    ctx = {
        **_status_context(request, job, hidden),
        "events": events,
        "log_token": token,
        "log_older": older,
        "log_more": job.status not in TrainingJob.FINAL,
        "failure_lines": detail.last_lines(events),
        "boto3_code": detail.as_boto3(job_request, secret=bool(hidden)) if job_request else "",
        "cli_json": detail.as_cli_json(job_request) if job_request else "",
        "cli_command": detail.cli_command(job),
        "cli_file": detail.cli_file(job),
        "secret_keys": sorted(hidden.keys),
        "secret_note": SECRET_NOTE,
        "changes": detail.changes(job.parent, job) if job.parent else [],
        "clones": list(job.clones.order_by("-created_at").values_list("name", flat=True)[:20]),
        "endpoints": list(job.endpoints.order_by("-created_at").only("name", "status")[:20]),
        "notes": hidden.redact(_notes(job)),
    }
    return render(request, "jobs/job_detail.html", ctx)


def _status_context(request: HttpRequest, job: TrainingJob, hidden: Secrets | None = None) -> dict[str, Any]:
    allowed = may_change(request.user, job.owner_id)
    return {
        "job": detail.shown(job, hidden),
        "timeline": detail.timeline(job.transitions),
        "final": job.status in TrainingJob.FINAL,
        "can_stop": allowed and job.status not in TrainingJob.FINAL,
        "can_clone": allowed,
        "can_resubmit": allowed and job.status == TrainingJob.Status.SUBMIT_FAILED,
    }


def _notes(job: TrainingJob) -> list[str]:
    if job.status in (TrainingJob.Status.PENDING, TrainingJob.Status.SUBMIT_FAILED):
        return []
    try:
        return get_backend().job_notes(job.name)
    except (ClientError, BotoCoreError):
        return []


@login_required
def job_status(request: HttpRequest, name: str) -> HttpResponse:
    """The status fragment the job page polls. It stops polling once the job is final; when a
    watched job has just finished it also brings the failure panel and the artifacts."""
    job = get_object_or_404(TrainingJob, name=name)
    hidden = secrets_of(job)
    ctx = _status_context(request, job, hidden)
    if ctx["final"] and request.GET.get("was") not in TrainingJob.FINAL:
        events, _, _ = detail.log_tail(job, detail.FAILURE_LOG_LINES)
        return render(request, "jobs/_job_final.html", {**ctx, "failure_lines": hidden.redact(events)})
    return render(request, "jobs/_job_status.html", ctx)


@login_required
def job_log(request: HttpRequest, name: str) -> HttpResponse:
    """New log lines after ``?token=`` (follow mode); ``?format=text`` downloads the whole log."""
    job = get_object_or_404(TrainingJob, name=name)
    hidden = secrets_of(job)
    if request.GET.get("format") == "text":
        chunks = (hidden.redact(chunk) for chunk in detail.full_log(job))
        response = StreamingHttpResponse(chunks, content_type="text/plain; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{job.name}.log"'
        return response
    token = request.GET.get("token") or None
    if token is not None and len(token) > 8192:
        return HttpResponseBadRequest("The log token is not valid.")
    events, new_token = detail.log_after(job, token)
    events = hidden.redact(events)
    # A final job's log is followed until a poll brings nothing new (CloudWatch lags a little).
    more = job.status not in TrainingJob.FINAL or bool(events)
    ctx = {"job": job, "events": events, "log_token": new_token, "log_more": more}
    return render(request, "jobs/_job_log_poll.html", ctx)


@login_required
def artifacts(request: HttpRequest, name: str) -> HttpResponse:
    """The artifacts panel (loaded after the page, since reading archives takes a moment)."""
    job = get_object_or_404(TrainingJob, name=name)
    template = "jobs/_artifacts.html" if request.htmx else "jobs/artifacts.html"
    return render(request, template, {"job": job, "artifacts": detail.artifact_listing(job)})


@login_required
def artifact_download(request: HttpRequest, name: str, which: str) -> HttpResponse:
    """``model.tar.gz`` or ``output.tar.gz`` itself, streamed."""
    job = get_object_or_404(TrainingJob, name=name)
    if which not in ARTIFACTS or detail.never_sent(job):
        raise Http404("No such artifact.")
    backend = get_backend()
    filename = f"{job.name}-{ARTIFACTS[which]}"
    try:
        uri = backend.artifact_uri(job.name, which)
        if not uri:
            raise Http404("The job has no artifacts (yet).")
        url = backend.download_url(uri, filename)
        if url:  # S3: the browser fetches it from S3 directly, with a short-lived link
            return redirect(url)
        stream = storage.open_read(uri)
    except (ClientError, BotoCoreError, storage.StorageError) as exc:
        raise Http404(f"The artifact cannot be read: {exc}") from None
    return FileResponse(stream, as_attachment=True, filename=filename)


@login_required
def artifact_file(request: HttpRequest, name: str, which: str, member: str) -> HttpResponse:
    """One file inside an artifact: shown as text, or downloaded (``?download=1`` or binary),
    streamed out of the archive; its manifest says first whether it is there and how big."""
    job = get_object_or_404(TrainingJob, name=name)
    if which not in ARTIFACTS or detail.never_sent(job):
        raise Http404("No such artifact.")
    download = bool(request.GET.get("download"))
    try:
        uri = get_backend().artifact_uri(job.name, which)
        if not uri:
            raise Http404("The job has no artifacts (yet).")
        listed = manifests.manifest(uri)
        entry = next((m for m in listed.members if m.name == member.removeprefix("./")), None)
        if entry is None and not listed.truncated:
            raise Http404(f"{ARTIFACTS[which]} has no file {member}.")
        if entry is not None and entry.size > MAX_MEMBER_DOWNLOAD:
            limit = MAX_MEMBER_DOWNLOAD // 2**30
            return _error_page(
                request, job, f"{member} is larger than {limit} GiB: download {ARTIFACTS[which]}.", 413
            )
        if entry is not None and entry.size > MAX_SHOWN_FILE and not download:
            return _error_page(
                request, job, f"{member} is larger than {MAX_SHOWN_FILE // 2**20} MiB: download it.", 413
            )
        stream = storage.open_tar_member(uri, member, MAX_MEMBER_DOWNLOAD if download else MAX_SHOWN_FILE)
    except storage.TooLarge:
        return _error_page(request, job, f"{member} is too large to show: download it.", 413)
    except (ClientError, BotoCoreError, storage.StorageError) as exc:
        raise Http404(f"{member} cannot be read: {exc}") from None
    filename = member.rsplit("/", 1)[-1] or "file"
    if download or b"\x00" in stream.peek(8192)[:8192]:
        response = FileResponse(
            stream, as_attachment=True, filename=filename, content_type="application/octet-stream"
        )
        response["Content-Length"] = str(stream.size)
        return response
    with stream:
        text = stream.read().decode("utf-8", "replace")
    ctx = {"job": job, "title": f"{ARTIFACTS[which]}: {member}", "text": text, "download": "?download=1"}
    return render(request, "jobs/file.html", ctx)


def _attachment(data: bytes, filename: str) -> HttpResponse:
    response = HttpResponse(data, content_type="application/octet-stream")
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=filename)
    return response


def _error_page(request: HttpRequest, job: TrainingJob | None, message: str, status: int) -> HttpResponse:
    return render(request, "jobs/error.html", {"job": job, "message": message}, status=status)


@login_required
def code_file(request: HttpRequest, sha256: str, path: str = "") -> HttpResponse:
    """An uploaded code bundle: its files, and one file's source."""
    code = newjob.load_code(sha256)
    if code is None:
        raise Http404("No such code bundle.")
    if request.htmx:  # the entry point's source on the new-job page
        path = path or request.GET.get("entry_point", "")
        return render(request, "jobs/_source.html", {"name": path, "source": code.source(path)})
    if path and path not in code.files:
        raise Http404("No such file in the code.")
    if path and request.GET.get("download"):
        return _attachment(code.files[path], path.rsplit("/", 1)[-1])
    ctx = {"code": code, "path": path, "source": code.source(path) if path else None}
    return render(request, "jobs/code.html", ctx)


@sensitive_post_parameters()  # secret environment values: never in an error report
@login_required
@require_http_methods(["GET", "POST"])
def new_job(request: HttpRequest) -> HttpResponse:
    """The new-job form; a valid POST creates the job and goes to its page."""
    if request.method == "POST":
        page = newjob.NewJob(request.POST, request.FILES)
        config = configuration_problems()
        if config:
            page.form.add_error(None, "anyjob is not configured to submit jobs: see the problems above.")
        if page.is_valid(request.user) and not config:
            try:
                job = page.save(request.user)
            except ValidationError:
                pass
            else:
                _say_submitted(request, job)
                return redirect("job_detail", name=job.name)
        status = 200
    else:
        page = newjob.NewJob(initial={"name": newjob.generate_name()})
        status = 200
    return render(request, "jobs/new_job.html", _new_job_context(page), status=status)


def _say_submitted(request: HttpRequest, job: TrainingJob) -> None:
    messages.success(request, f"Job {job.name} submitted.")
    if job.parent:
        changed = detail.changes(job.parent, job)
        summary = "; ".join(changed) if changed else "nothing changed"
        messages.info(request, f"Changes against {job.parent.name}: {summary}.")


def _new_job_context(page: newjob.NewJob) -> dict[str, Any]:
    parent_name = (
        page.data.get("parent") if page.data is not None else page.form.initial.get("parent")
    ) or ""
    if parent_name and not TrainingJob.objects.filter(name=parent_name).exists():
        parent_name = ""  # the hidden field as sent: linked only when it names a job
    return {
        "config_problems": configuration_problems(),
        "page": page,
        "form": page.form,
        "code": page.code,
        "entry_point": page.entry_point,
        "source": page.source_preview(),
        "parent_name": parent_name,
        "default_output_path": newjob.default_output_path(),
        "preview": newjob.preview(page.data) if page.data is not None else None,
        **metric_tester.form_context(parent_name),
    }


@login_required
@require_POST
def upload_code(request: HttpRequest) -> HttpResponse:
    """htmx: the code panel for freshly uploaded files (stored at once, so nothing is lost)."""
    error = ""
    code = None
    try:
        files = uploads.read_uploads([f for f in request.FILES.getlist("code") if f], newjob.upload_limits())
        code = newjob.code_from_files(files)
    except uploads.UploadError as exc:
        error = str(exc)
    except storage.StorageError as exc:
        error = f"The code could not be stored: {exc}. Try again."
    entry = uploads.default_entry_point(code.candidates) if code else ""
    ctx = {
        "code": code,
        "entry_point": entry,
        "source": code.source(entry) if code and entry else None,
        "upload_error": error,
    }
    response = render(request, "jobs/_code_panel.html", ctx)
    return trigger_client_event(response, "code-uploaded") if code else response


@login_required
@require_POST
def preview(request: HttpRequest) -> HttpResponse:
    """htmx: the ``HyperParameters`` map and the command line, as typed so far."""
    return render(request, "jobs/_preview.html", {"preview": newjob.preview(request.POST)})


@login_required
def clone(request: HttpRequest, name: str) -> HttpResponse:
    """A new-job form pre-filled from this job (owner or staff)."""
    job = get_object_or_404(TrainingJob, name=name)
    if not may_change(request.user, job.owner_id):
        raise PermissionDenied("Only the owner of a job (or staff) can clone it.")
    initial, rows = detail.clone_initial(job)
    page = newjob.NewJob(initial=initial, rows=rows)
    return render(request, "jobs/new_job.html", _new_job_context(page))


@login_required
@require_POST
def import_history(request: HttpRequest) -> HttpResponse:
    """Staff: import the account's jobs (also those started outside anyjob), in the background."""
    if not request.user.is_staff:
        raise PermissionDenied("Only staff can import the account's jobs.")
    user_id = request.user.pk
    transaction.on_commit(lambda: import_jobs_task.delay(user_id))
    messages.info(request, "Importing the account's training jobs: they appear in the history as they come.")
    return redirect("history")


@login_required
@require_POST
def resubmit(request: HttpRequest, name: str) -> HttpResponse:
    """Send a job the backend refused again (owner or staff)."""
    job = get_object_or_404(TrainingJob, name=name)
    if not may_change(request.user, job.owner_id):
        raise PermissionDenied("Only the owner of a job (or staff) can resubmit it.")
    if job.status == TrainingJob.Status.SUBMIT_FAILED:
        enqueue_submit(job)
        messages.success(request, f"Job {job.name} sent again.")
    return redirect("job_detail", name=job.name)


@login_required
@require_http_methods(["GET", "POST"])
def stop(request: HttpRequest, name: str) -> HttpResponse:
    """GET asks to confirm; POST sends ``stop_job`` (owner or staff only)."""
    job = get_object_or_404(TrainingJob, name=name)
    if not may_change(request.user, job.owner_id):
        raise PermissionDenied
    if request.method == "POST":
        if job.status not in TrainingJob.FINAL:
            enqueue_stop(job)
        return redirect("job_detail", name=job.name)
    return render(request, "jobs/stop.html", {"job": job})
