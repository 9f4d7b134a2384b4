"""Endpoint pages: deploy from a job, the endpoints list, an endpoint with its invocation tests."""

from __future__ import annotations

import copy as _copy
import csv
import io
import json
import re
import secrets
import shlex
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from jobs import api_limits, artifacts, bundles, storage, uploads
from jobs.backends import get_backend
from jobs.checks import configuration_problems
from jobs.endpoints import deploy, tasks
from jobs.endpoints.forms import CONTENT_TYPES, DeployForm, InvokeForm
from jobs.endpoints.models import Endpoint, Invocation, SavedTest, SuiteRun
from jobs.forms import EnvironmentFormSet, environment_of
from jobs.models import TrainingJob
from jobs.permissions import may_change
from jobs.redact import SECRET_NOTE, secrets_of

LOG_LINES = 200
FIELDS = {
    "EndpointName": "name",
    "ModelName": "name",
    "EndpointConfigName": "name",
    "ProductionVariants[0].InstanceType": "instance_type",
    "ProductionVariants[0].InitialInstanceCount": "instance_count",
}


def generate_name(job: TrainingJob) -> str:
    stem = re.sub(r"[^A-Za-z0-9]+", "-", job.name)[:40].strip("-") or "endpoint"
    return f"{stem}-ep-{secrets.token_hex(2)}"


def inference_scripts(job: TrainingJob) -> list[str]:
    """The job's runnable files, the usual inference script names first (the bundle is
    streamed for its member names; no file is kept in memory)."""
    candidates: list[str] = []
    if job.source_sha256:
        uri = bundles.uri_for(job.source_sha256, settings.ANYJOB_ARTIFACT_STORE)
        try:
            candidates = uploads.entry_points(m.name for m in artifacts.manifest(uri).members if not m.is_dir)
        except (storage.StorageError, ValueError):
            candidates = []
    candidates = candidates or [job.entry_point]
    preferred = [c for c in candidates if c.rsplit("/", 1)[-1] in ("inference.py", "serve.py", "predict.py")]
    return preferred + [c for c in candidates if c not in preferred]


@sensitive_post_parameters()  # secret environment values: never in an error report
@login_required
@require_http_methods(["GET", "POST"])
def deploy_job(request: HttpRequest, name: str) -> HttpResponse:
    """Deploy a completed job's model behind an endpoint (owner or staff)."""
    job = get_object_or_404(TrainingJob, name=name)
    if not may_change(request.user, job.owner_id):
        raise PermissionDenied("Only the owner of a job (or staff) can deploy it.")
    if job.status != TrainingJob.Status.COMPLETED or not job.model_artifacts:
        messages.error(request, "Only a completed job with a model can be deployed.")
        return redirect("job_detail", name=job.name)
    scripts = inference_scripts(job)
    config = configuration_problems()  # the system checks' findings: shown, and nothing deploys
    if request.method == "POST":
        form = DeployForm(request.POST, entry_points=scripts)
        env = EnvironmentFormSet(request.POST, prefix="env")
        if form.is_valid() & env.is_valid():
            environment, secret_environment = environment_of(env)
            endpoint = Endpoint(
                name=form.cleaned_data["name"],
                job=job,
                owner=request.user,
                inference_entry_point=form.cleaned_data["inference_entry_point"],
                instance_type=form.cleaned_data["instance_type"],
                instance_count=form.cleaned_data["instance_count"],
                environment=environment,
                secret_environment=secret_environment,
                ttl_minutes=form.cleaned_data.get("ttl_minutes"),
            )
            _check_requests(form, env, endpoint, job)
            if config:
                form.add_error(None, "anyjob is not configured to deploy endpoints: see the problems above.")
            if not form.errors and not env.total_error_count():
                if endpoint.ttl_minutes:
                    endpoint.expires_at = timezone.now() + timedelta(minutes=endpoint.ttl_minutes)
                try:
                    with transaction.atomic():
                        endpoint.save()
                        tasks.enqueue_deploy(endpoint)
                except IntegrityError:
                    form.add_error("name", endpoint_name_taken(endpoint.name) or "The name is taken.")
                else:
                    messages.success(request, f"Deploying {endpoint.name}.")
                    return redirect("endpoint_detail", name=endpoint.name)
    else:
        form = DeployForm(initial={"name": generate_name(job)}, entry_points=scripts)
        env = EnvironmentFormSet(prefix="env")
    ctx = {"job": job, "form": form, "env": env, "config_problems": config}
    return render(request, "endpoints/deploy.html", ctx)


def _check_requests(form: DeployForm, env: Any, endpoint: Endpoint, job: TrainingJob) -> None:
    """The API's limits on the three requests, next to the fields (as the new-job page does)."""
    if taken := endpoint_name_taken(endpoint.name):
        form.add_error("name", taken)
    env_rows = {r["key"]: i for i, r in env.rows()}
    hidden = secrets_of(endpoint)  # a message quoting a value never quotes a secret one
    seen: set[tuple[str, str]] = set()
    backend = get_backend()
    for call, request in deploy.requests_for(endpoint, job, settings).items():
        # The service's rules on the request in AWS's shape, then the backend's own.
        problems = [
            (p.path, p.message, api_limits.entry_field(p))
            for p in api_limits.validate(call, backend.api_shaped(call, request))
        ]
        problems += [(path, message, "value") for path, message in backend.preflight(request, call)]
        for path, text, entry_field in problems:
            key = (path, text)
            if key in seen:
                continue
            seen.add(key)
            message = hidden.redact(text)
            if path in FIELDS:
                form.add_error(FIELDS[path], message)
            elif path.startswith("PrimaryContainer.Environment.") and path.split(".", 2)[2] in env_rows:
                env.forms[env_rows[path.split(".", 2)[2]]].add_error(entry_field, message)
            else:
                form.add_error(None, f"{path}: {message}")


def endpoint_name_taken(name: str) -> str | None:
    """Why ``name`` cannot be used, or None: endpoint names are unique regardless of case."""
    existing = Endpoint.objects.filter(name__iexact=name).values_list("name", flat=True).first()
    if existing is None:
        return None
    if existing == name:
        return f"An endpoint called {name!r} exists already."
    return (
        f"An endpoint called {existing!r} exists already, and endpoint names are unique regardless of case."
    )


@login_required
def endpoint_list(request: HttpRequest) -> HttpResponse:
    endpoints = Endpoint.objects.select_related("job", "owner").order_by("-created_at")
    if request.GET.get("all") != "1":
        endpoints = endpoints.exclude(status=Endpoint.Status.DELETED)
    page = Paginator(endpoints, 50).get_page(request.GET.get("page"))
    return render(request, "endpoints/list.html", {"page": page, "show_all": request.GET.get("all") == "1"})


def shown(endpoint: Endpoint) -> Endpoint:
    """A copy of ``endpoint`` for a page: what it shows passed through the redaction (never
    saved)."""
    hidden = secrets_of(endpoint)
    if not hidden:
        return endpoint
    copy = _copy.copy(endpoint)
    copy.environment = hidden.environment(endpoint.environment or {})
    for field in ("requests", "error", "failure_reason"):
        setattr(copy, field, hidden.redact(getattr(endpoint, field)))
    return copy


def _detail_context(
    request: HttpRequest, endpoint: Endpoint, form: InvokeForm | None = None
) -> dict[str, Any]:
    tests = list(SavedTest.objects.filter(job_id=endpoint.job_id))
    last = {}
    for run in Invocation.objects.filter(endpoint=endpoint, test__in=tests).order_by("-created_at")[:500]:
        last.setdefault(run.test_id, run)
    page = shown(endpoint)
    return {
        "endpoint": page,
        "secret_keys": sorted(endpoint.secret_environment or []),
        "secret_note": SECRET_NOTE,
        "can_change": may_change(request.user, endpoint.owner_id),
        "form": form or InvokeForm(job=endpoint.job, user=request.user),
        "content_types": CONTENT_TYPES,
        "invocations": [
            invocation_context(i)
            for i in endpoint.invocations.select_related("test", "owner", "endpoint").order_by("-created_at")[
                :30
            ]
        ],
        "tests": [(t, last.get(t.pk)) for t in tests],
        **suite_context(endpoint.suite_runs.select_related("owner").order_by("-started_at", "-pk").first()),
        "requests_json": json.dumps(page.requests, indent=2) if page.requests else "",
    }


@login_required
def endpoint_detail(request: HttpRequest, name: str) -> HttpResponse:
    endpoint = get_object_or_404(Endpoint.objects.select_related("job", "owner"), name=name)
    return render(request, "endpoints/detail.html", _detail_context(request, endpoint))


@login_required
def endpoint_status(request: HttpRequest, name: str) -> HttpResponse:
    """The status fragment: polls until the endpoint settles (InService or final)."""
    endpoint = get_object_or_404(Endpoint, name=name)
    return render(request, "endpoints/_status.html", {"endpoint": shown(endpoint)})


@login_required
def endpoint_log(request: HttpRequest, name: str) -> HttpResponse:
    endpoint = get_object_or_404(Endpoint, name=name)
    events: list[dict[str, Any]] = []
    error = ""
    try:
        events, _, _ = get_backend().tail_endpoint_logs(endpoint.name, LOG_LINES)
    except (ClientError, BotoCoreError, ValueError) as exc:
        error = str(exc)
    hidden = secrets_of(endpoint)
    ctx = {"endpoint": endpoint, "events": hidden.redact(events), "error": hidden.redact(error)}
    return render(request, "endpoints/_log.html", ctx)


@login_required
@require_POST
def invoke(request: HttpRequest, name: str) -> HttpResponse:
    """Send a request (any signed-in teammate); with a test name, save it as a test of the job."""
    endpoint = get_object_or_404(Endpoint.objects.select_related("job"), name=name)
    form = InvokeForm(request.POST, request.FILES, job=endpoint.job, user=request.user)
    if endpoint.status != Endpoint.Status.IN_SERVICE:
        form.add_error(None, f"The endpoint is {endpoint.status}: it takes requests once it is InService.")
    if not form.is_valid():
        return render(request, "endpoints/detail.html", _detail_context(request, endpoint, form), status=200)
    data = form.cleaned_data
    try:
        with transaction.atomic():
            test = form.save_test() if data.get("save_as") else None
            invocation = Invocation.objects.create(
                endpoint=endpoint,
                test=test,
                owner=request.user,
                body=data["raw_body"],
                content_type=data["content_type"],
                accept=data.get("accept") or "",
                custom_attributes=data.get("custom_attributes") or "",
            )
            tasks.enqueue_invocation(invocation)
    except IntegrityError:  # someone saved a test of that name meanwhile
        form.add_error("save_as", form.name_taken(data["save_as"]))
        return render(request, "endpoints/detail.html", _detail_context(request, endpoint, form), status=200)
    return redirect(f"/endpoints/{endpoint.name}/#invocation-{invocation.pk}")


@login_required
def invocation_fragment(request: HttpRequest, name: str, pk: int) -> HttpResponse:
    invocation = get_object_or_404(
        Invocation.objects.select_related("endpoint", "test"), pk=pk, endpoint__name=name
    )
    return render(request, "endpoints/_invocation.html", invocation_context(invocation))


def invocation_context(invocation: Invocation) -> dict[str, Any]:
    body = bytes(invocation.response_body or b"")
    shown: dict[str, Any] = {"kind": "none"}
    text = body.decode("utf-8", errors="replace") if b"\x00" not in body[:4096] else None
    content_type = (invocation.response_headers.get("Content-Type") or "").lower()
    if text is None:
        shown = {"kind": "binary", "size": len(body)}
    elif text:
        try:
            shown = {"kind": "json", "text": json.dumps(json.loads(text), indent=2)}
        except ValueError:
            if "csv" in content_type:
                rows = list(csv.reader(io.StringIO(text)))[:100]
                shown = {"kind": "csv", "rows": [r[:20] for r in rows]}
            else:
                shown = {"kind": "text", "text": text}
    return {"inv": invocation, "shown": shown, **copy_as_code(invocation)}


#: Text bodies up to this size are written into the snippets; others are read from BODY_FILE.
INLINE_BODY_CHARS = 4096
BODY_FILE = "request.body"
RESPONSE_FILE = "response.out"


def _inline_text(body: bytes) -> str | None:
    """The body as text to write into a snippet, or None (binary, not UTF-8, or too long)."""
    if not body or b"\x00" in body or len(body) >= INLINE_BODY_CHARS:
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def copy_as_code(invocation: Invocation) -> dict[str, str]:
    """The invocation as boto3 code and as an AWS CLI command line. Every value is a Python
    literal (``repr``) or quoted for the shell (``shlex.quote``): pasted, it sends exactly
    this request and runs nothing else, whatever the headers hold."""
    body = bytes(invocation.body)
    text = _inline_text(body)
    region = settings.ANYJOB_REGION
    values = [
        ("EndpointName", "--endpoint-name", invocation.endpoint.name),
        ("ContentType", "--content-type", invocation.content_type),
    ]
    if invocation.accept:
        values.append(("Accept", "--accept", invocation.accept))
    if invocation.custom_attributes:
        values.append(("CustomAttributes", "--custom-attributes", invocation.custom_attributes))
    unshown = f"the request's {len(body):,} bytes, not shown here"
    code = ["import boto3", "", f"runtime = boto3.client({'sagemaker-runtime'!r}, region_name={region!r})"]
    if text is None:
        code += [f"with open({BODY_FILE!r}, 'rb') as f:  # {unshown}", "    body = f.read()"]
    else:
        code.append(f"body = {text!r}")
    code.append("response = runtime.invoke_endpoint(")
    code += [f"    {argument}={value!r}," for argument, _, value in values]
    code += ["    Body=body,", ")", "print(response['Body'].read())"]
    cli = (
        [f"printf %s {shlex.quote(text)} > {shlex.quote(BODY_FILE)}"]
        if text is not None
        else [f"# {BODY_FILE}: {unshown}"]
    )
    parts = ["aws sagemaker-runtime invoke-endpoint", f"--region {shlex.quote(region)}"]
    parts += [f"{option} {shlex.quote(value)}" for _, option, value in values]
    parts += [f"--body {shlex.quote('fileb://' + BODY_FILE)}", shlex.quote(RESPONSE_FILE)]
    cli.append(" \\\n  ".join(parts))
    return {"boto3_code": "\n".join(code) + "\n", "cli": "\n".join(cli)}


@login_required
@require_POST
def run_tests(request: HttpRequest, name: str, pk: int | None = None) -> HttpResponse:
    """Re-run one saved test (``pk``) or the whole suite of the endpoint's job."""
    endpoint = get_object_or_404(Endpoint, name=name)
    if endpoint.status != Endpoint.Status.IN_SERVICE:
        messages.error(request, f"The endpoint is {endpoint.status}: tests run once it is InService.")
        return redirect("endpoint_detail", name=endpoint.name)
    tests = SavedTest.objects.filter(job_id=endpoint.job_id)
    if pk is None:  # the suite: one task per test, its result stored once the last one ends
        if not tests.exists():
            messages.error(request, "The model has no saved tests to run.")
            return redirect("endpoint_detail", name=endpoint.name)
        with transaction.atomic():
            suite = tasks.enqueue_suite(endpoint, request.user.pk)
        return redirect(f"/endpoints/{endpoint.name}/#suite-{suite.pk}")
    test = tests.filter(pk=pk).first()
    if test is None:
        return redirect("endpoint_detail", name=endpoint.name)
    with transaction.atomic():
        tasks.enqueue_invocation(tasks.new_run(endpoint, test, request.user.pk))
    return redirect("endpoint_detail", name=endpoint.name)


@login_required
def suite_fragment(request: HttpRequest, name: str, pk: int) -> HttpResponse:
    suite = get_object_or_404(
        SuiteRun.objects.select_related("endpoint", "owner"), pk=pk, endpoint__name=name
    )
    return render(request, "endpoints/_suite.html", suite_context(suite))


def _clock(moment: Any) -> str:
    return timezone.localtime(moment).strftime("%H:%M:%S")


def suite_context(suite: SuiteRun | None) -> dict[str, Any]:
    """A suite run for the page: its stored result once it has finished ("5 of 6 passed,
    1 failed — finished 12:03:04"), its progress so far while it runs."""
    if suite is None:
        return {"suite": None}
    if suite.done:
        if not suite.tests:
            line = suite.note or "No test ran."
            outcome = "none"
        else:
            unjudged = suite.tests - suite.passed - suite.failed - suite.unfinished  # test deleted meanwhile
            extra = [f"{suite.failed} failed"]
            extra += [
                f"{n} {what}" for n, what in ((suite.unfinished, "unfinished"), (unjudged, "not judged")) if n
            ]
            finished = _clock(suite.finished_at)
            line = f"{suite.passed} of {suite.tests} passed, {', '.join(extra)} — finished {finished}"
            outcome = "passed" if suite.passed == suite.tests else "failed"
    else:
        counts = suite.runs.aggregate(
            ended=Count("pk", filter=~Q(status=Invocation.Status.PENDING)),
            n_passed=Count("pk", filter=Q(passed=True)),
            n_failed=Count("pk", filter=Q(passed=False)),
        )
        if not suite.tests:
            line = "Starting…"
        else:
            line = (
                f"Running: {counts['ended']} of {suite.tests} ended so far "
                f"({counts['n_passed']} passed, {counts['n_failed']} failed)"
            )
        outcome = "running"
    return {"suite": suite, "suite_line": line, "suite_outcome": outcome}


@login_required
@require_POST
def delete_test(request: HttpRequest, name: str, pk: int) -> HttpResponse:
    endpoint = get_object_or_404(Endpoint, name=name)
    test = get_object_or_404(SavedTest, pk=pk, job_id=endpoint.job_id)
    if not may_change(request.user, test.owner_id):
        raise PermissionDenied("Only who saved a test (or staff) can delete it.")
    test.delete()
    return redirect("endpoint_detail", name=endpoint.name)


@login_required
@require_http_methods(["GET", "POST"])
def delete_endpoint(request: HttpRequest, name: str) -> HttpResponse:
    """GET asks to confirm; POST deletes (owner or staff)."""
    endpoint = get_object_or_404(Endpoint, name=name)
    if not may_change(request.user, endpoint.owner_id):
        raise PermissionDenied("Only the owner of an endpoint (or staff) can delete it.")
    if request.method == "POST":
        with transaction.atomic():
            if tasks.start_delete(endpoint):
                messages.info(request, f"Deleting {endpoint.name}.")
        return redirect("endpoint_detail", name=endpoint.name)
    return render(request, "endpoints/delete.html", {"endpoint": endpoint})
