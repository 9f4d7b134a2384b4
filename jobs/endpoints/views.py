"""Endpoint pages: deploy from a job, the endpoints list, an endpoint with its invocation tests."""

from __future__ import annotations

import csv
import io
import json
import pprint
import re
import secrets
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from jobs import api_limits, bundles, storage, uploads
from jobs.backends import get_backend
from jobs.backends.local.backend import model_s3_shaped
from jobs.endpoints import deploy, tasks
from jobs.endpoints.forms import CONTENT_TYPES, DeployForm, InvokeForm
from jobs.endpoints.models import Endpoint, Invocation, SavedTest
from jobs.forms import EnvironmentFormSet
from jobs.models import TrainingJob
from jobs.views import may_change

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
            candidates = uploads.entry_points(m.name for m in storage.list_tar_members(uri) if not m.is_dir)
        except (storage.StorageError, ValueError):
            candidates = []
    candidates = candidates or [job.entry_point]
    preferred = [c for c in candidates if c.rsplit("/", 1)[-1] in ("inference.py", "serve.py", "predict.py")]
    return preferred + [c for c in candidates if c not in preferred]


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
    if request.method == "POST":
        form = DeployForm(request.POST, entry_points=scripts)
        env = EnvironmentFormSet(request.POST, prefix="env")
        if form.is_valid() & env.is_valid():
            endpoint = Endpoint(
                name=form.cleaned_data["name"],
                job=job,
                owner=request.user,
                inference_entry_point=form.cleaned_data["inference_entry_point"],
                instance_type=form.cleaned_data["instance_type"],
                instance_count=form.cleaned_data["instance_count"],
                environment={r["key"]: r["value"] for _, r in env.rows()},
                ttl_minutes=form.cleaned_data.get("ttl_minutes"),
            )
            _check_requests(form, env, endpoint, job)
            if not form.errors and not env.total_error_count():
                if endpoint.ttl_minutes:
                    endpoint.expires_at = timezone.now() + timedelta(minutes=endpoint.ttl_minutes)
                try:
                    with transaction.atomic():
                        endpoint.save()
                        tasks.enqueue_deploy(endpoint)
                except IntegrityError:
                    form.add_error("name", f"An endpoint called {endpoint.name!r} exists already.")
                else:
                    messages.success(request, f"Deploying {endpoint.name}.")
                    return redirect("endpoint_detail", name=endpoint.name)
    else:
        form = DeployForm(initial={"name": generate_name(job)}, entry_points=scripts)
        env = EnvironmentFormSet(prefix="env")
    return render(request, "endpoints/deploy.html", {"job": job, "form": form, "env": env})


def _check_requests(form: DeployForm, env: Any, endpoint: Endpoint, job: TrainingJob) -> None:
    """The API's limits on the three requests, next to the fields (as the new-job page does)."""
    if Endpoint.objects.filter(name=endpoint.name).exists():
        form.add_error("name", f"An endpoint called {endpoint.name!r} exists already.")
    env_rows = {r["key"]: i for i, r in env.rows()}
    seen: set[tuple[str, str]] = set()
    for call, request in deploy.requests_for(endpoint, job, settings).items():
        if call == "CreateModel":  # file:// model data (local backend) checked in S3's shape
            request = model_s3_shaped(request)
        for problem in api_limits.validate(call, request):
            key = (problem.path, problem.message)
            if key in seen:
                continue
            seen.add(key)
            if problem.path in FIELDS:
                form.add_error(FIELDS[problem.path], problem.message)
            elif problem.path.startswith("PrimaryContainer.Environment.") and (
                problem.path.split(".", 2)[2] in env_rows
            ):
                index = env_rows[problem.path.split(".", 2)[2]]
                env.forms[index].add_error(api_limits.entry_field(problem), problem.message)
            else:
                form.add_error(None, f"{problem.path}: {problem.message}")


@login_required
def endpoint_list(request: HttpRequest) -> HttpResponse:
    endpoints = Endpoint.objects.select_related("job", "owner").order_by("-created_at")
    if request.GET.get("all") != "1":
        endpoints = endpoints.exclude(status=Endpoint.Status.DELETED)
    page = Paginator(endpoints, 50).get_page(request.GET.get("page"))
    return render(request, "endpoints/list.html", {"page": page, "show_all": request.GET.get("all") == "1"})


def _detail_context(
    request: HttpRequest, endpoint: Endpoint, form: InvokeForm | None = None
) -> dict[str, Any]:
    tests = list(SavedTest.objects.filter(job_id=endpoint.job_id))
    last = {}
    for run in Invocation.objects.filter(endpoint=endpoint, test__in=tests).order_by("-created_at")[:500]:
        last.setdefault(run.test_id, run)
    return {
        "endpoint": endpoint,
        "can_change": may_change(request.user, endpoint.owner_id),
        "form": form or InvokeForm(),
        "content_types": CONTENT_TYPES,
        "invocations": [
            invocation_context(i)
            for i in endpoint.invocations.select_related("test", "owner", "endpoint").order_by("-created_at")[
                :30
            ]
        ],
        "tests": [(t, last.get(t.pk)) for t in tests],
        "requests_json": json.dumps(endpoint.requests, indent=2) if endpoint.requests else "",
    }


@login_required
def endpoint_detail(request: HttpRequest, name: str) -> HttpResponse:
    endpoint = get_object_or_404(Endpoint.objects.select_related("job", "owner"), name=name)
    return render(request, "endpoints/detail.html", _detail_context(request, endpoint))


@login_required
def endpoint_status(request: HttpRequest, name: str) -> HttpResponse:
    """The status fragment: polls until the endpoint settles (InService or final)."""
    endpoint = get_object_or_404(Endpoint, name=name)
    return render(request, "endpoints/_status.html", {"endpoint": endpoint})


@login_required
def endpoint_log(request: HttpRequest, name: str) -> HttpResponse:
    endpoint = get_object_or_404(Endpoint, name=name)
    events: list[dict[str, Any]] = []
    error = ""
    try:
        events, _, _ = get_backend().tail_endpoint_logs(endpoint.name, LOG_LINES)
    except (ClientError, BotoCoreError, ValueError) as exc:
        error = str(exc)
    return render(request, "endpoints/_log.html", {"endpoint": endpoint, "events": events, "error": error})


@login_required
@require_POST
def invoke(request: HttpRequest, name: str) -> HttpResponse:
    """Send a request (any signed-in teammate); with a test name, save it as a test of the job."""
    endpoint = get_object_or_404(Endpoint.objects.select_related("job"), name=name)
    form = InvokeForm(request.POST, request.FILES)
    if endpoint.status != Endpoint.Status.IN_SERVICE:
        form.add_error(None, f"The endpoint is {endpoint.status}: it takes requests once it is InService.")
    if not form.is_valid():
        return render(request, "endpoints/detail.html", _detail_context(request, endpoint, form), status=200)
    data = form.cleaned_data
    test = None
    with transaction.atomic():
        if data.get("save_as"):
            test, _ = SavedTest.objects.update_or_create(
                job=endpoint.job,
                name=data["save_as"].strip(),
                defaults={
                    "owner": request.user,
                    "body": data["raw_body"],
                    "content_type": data["content_type"],
                    "accept": data.get("accept") or "",
                    "custom_attributes": data.get("custom_attributes") or "",
                    "expect": data["expect"],
                    "expected_status": data.get("expected_status") or 200,
                    "json_path": data.get("json_path") or "",
                    "expected_value": data.get("expected_value") or "",
                    "tolerance": data.get("tolerance"),
                    "pattern": data.get("pattern") or "",
                },
            )
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


def copy_as_code(invocation: Invocation) -> dict[str, str]:
    body = bytes(invocation.body)
    shown_body: Any = body.decode("utf-8") if body and b"\x00" not in body and len(body) < 4096 else body[:64]
    kwargs: dict[str, Any] = {
        "EndpointName": invocation.endpoint.name,
        "ContentType": invocation.content_type,
    }
    if invocation.accept:
        kwargs["Accept"] = invocation.accept
    if invocation.custom_attributes:
        kwargs["CustomAttributes"] = invocation.custom_attributes
    kwargs["Body"] = shown_body
    code = (
        "import boto3\n\n"
        f'runtime = boto3.client("sagemaker-runtime", region_name={settings.ANYJOB_REGION!r})\n'
        f"response = runtime.invoke_endpoint(**{pprint.pformat(kwargs, sort_dicts=False, width=100)})\n"
        'print(response["Body"].read())\n'
    )
    parts = [
        "aws sagemaker-runtime invoke-endpoint",
        f"--endpoint-name {invocation.endpoint.name}",
        f"--content-type '{invocation.content_type}'",
    ]
    if invocation.accept:
        parts.append(f"--accept '{invocation.accept}'")
    if invocation.custom_attributes:
        parts.append("--custom-attributes '" + invocation.custom_attributes.replace("'", "'\\''") + "'")
    parts += ["--body fileb://request.body", "response.out"]
    return {"boto3_code": code, "cli": " \\\n  ".join(parts)}


@login_required
@require_POST
def run_tests(request: HttpRequest, name: str, pk: int | None = None) -> HttpResponse:
    """Re-run one saved test (``pk``) or the whole suite of the endpoint's job."""
    endpoint = get_object_or_404(Endpoint, name=name)
    if endpoint.status != Endpoint.Status.IN_SERVICE:
        messages.error(request, f"The endpoint is {endpoint.status}: tests run once it is InService.")
        return redirect("endpoint_detail", name=endpoint.name)
    tests = SavedTest.objects.filter(job_id=endpoint.job_id)
    if pk is not None:
        tests = tests.filter(pk=pk)
        if not tests.exists():
            return redirect("endpoint_detail", name=endpoint.name)
    with transaction.atomic():
        for test in tests:
            tasks.enqueue_invocation(tasks.new_run(endpoint, test, request.user.pk))
    return redirect("endpoint_detail", name=endpoint.name)


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
