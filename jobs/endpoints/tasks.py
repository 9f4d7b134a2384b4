"""Celery tasks of endpoints: short, ids in, state in the database (as ``jobs.tasks``).

- ``deploy_endpoint``: Pending → Creating (CreateModel, CreateEndpointConfig, CreateEndpoint;
  a name already taken after a lost answer continues once the thing by that name is proved
  this row's by its ``anyjob:endpoint-id`` tag) or DeployFailed with one line (also when the
  name, in any case, is someone else's).
- ``poll_endpoints`` (beat): describe the endpoints the backend has; InService starts the job's
  saved suite; an endpoint past its time-to-live is deleted; the local backend re-attaches
  endpoints whose host process died.
- ``delete_endpoint``: → Deleting, then Deleted once the backend no longer has it.
- ``run_invocation``: send one request, store the answer, judge it against its saved test.
- ``run_suite``: the job's saved tests, one ``run_invocation`` task each (a chord), then
  ``suite_result`` once the last one ends, which stores the counts on the ``SuiteRun``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from celery import chord, shared_task
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from jobs.backends import get_backend
from jobs.backends.base import tags_of
from jobs.endpoints import deploy, expectations
from jobs.endpoints.models import (
    MAX_SAVED_TESTS,
    MAX_STORED_RESPONSE,
    Endpoint,
    Invocation,
    SavedTest,
    SuiteRun,
)
from jobs.errors import code_of, explain
from jobs.errors import one_line as _one_line
from jobs.errors import transient as _transient
from jobs.requests import ENDPOINT_ID_TAG
from jobs.tasks import RETRY, NameTaken, TransientError, move

log = logging.getLogger(__name__)
Status = Endpoint.Status


def _move(pk: int, frm: Sequence[str] | str, to: str, **fields: Any) -> bool:
    return move(Endpoint, pk, frm, to, **fields)


def enqueue_deploy(endpoint: Endpoint) -> None:
    pk = endpoint.pk
    transaction.on_commit(lambda: deploy_endpoint_task.delay(pk))


def enqueue_delete(endpoint: Endpoint) -> None:
    pk = endpoint.pk
    transaction.on_commit(lambda: delete_endpoint_task.delay(pk))


def enqueue_invocation(invocation: Invocation) -> None:
    pk = invocation.pk
    transaction.on_commit(lambda: run_invocation_task.delay(pk))


def enqueue_suite(endpoint: Endpoint, owner_id: int) -> SuiteRun:
    """A new suite run of the endpoint's saved tests, shown at once; ``run_suite`` sends them."""
    suite = SuiteRun.objects.create(endpoint=endpoint, owner_id=owner_id)
    pk, suite_pk = endpoint.pk, suite.pk
    transaction.on_commit(lambda: run_suite_task.delay(pk, owner_id, suite_pk))
    return suite


def _already(exc: ClientError) -> bool:
    """The name is taken: after a lost answer, by our own earlier call."""
    message = exc.response.get("Error", {}).get("Message", "")
    return code_of(exc) == "ResourceInUse" or (
        code_of(exc) == "ValidationException" and "already exist" in message
    )


@shared_task(name="endpoints.deploy", bind=True, **RETRY)
def deploy_endpoint(self, endpoint_id: int) -> str:
    endpoint = Endpoint.objects.select_related("job").filter(pk=endpoint_id).first()
    if endpoint is None:
        return "missing"
    if endpoint.status != Status.PENDING:
        return "taken"
    backend = get_backend()
    requests = deploy.requests_for(endpoint, endpoint.job, settings)
    Endpoint.objects.filter(pk=endpoint.pk).update(requests=requests, error="")
    try:
        for call, method, describe, what in (
            ("CreateModel", backend.create_model, backend.describe_model, "model"),
            (
                "CreateEndpointConfig",
                backend.create_endpoint_config,
                backend.describe_endpoint_config,
                "config",
            ),
            ("CreateEndpoint", backend.create_endpoint, backend.describe_endpoint, "endpoint"),
        ):
            try:
                method(requests[call])
            except ClientError as exc:
                if not _already(exc):
                    raise
                check_ours(backend, endpoint, describe, what)
                log.info("deploy %s: %s already done, continuing", endpoint.name, call)
    except Exception as exc:
        if _transient(exc) and self.request.retries < self.max_retries:
            Endpoint.objects.filter(pk=endpoint.pk).update(error=f"Retrying: {explain(exc)}")
            raise TransientError(_one_line(exc)) from exc
        _move(endpoint.pk, Status.PENDING, Status.DEPLOY_FAILED, error=explain(exc))
        if not isinstance(exc, ClientError | BotoCoreError | ValueError):
            log.exception("deploy %s failed unexpectedly", endpoint.name)
        return "failed"
    _move(endpoint.pk, Status.PENDING, Status.CREATING, error="")
    return "creating"


deploy_endpoint_task = deploy_endpoint

_ARN = {"model": "ModelArn", "config": "EndpointConfigArn", "endpoint": "EndpointArn"}
_WHAT = {"model": "a model", "config": "an endpoint configuration", "endpoint": "an endpoint"}


def check_ours(backend: Any, endpoint: Endpoint, describe: Any, what: str) -> None:
    """Raise ``NameTaken`` unless the backend's model, config or endpoint (``what``) called
    ``endpoint.name`` carries this row's ``anyjob:endpoint-id`` tag."""
    described = describe(endpoint.name)
    if tags_of(backend, described[_ARN[what]]).get(ENDPOINT_ID_TAG) == str(endpoint.pk):
        return
    raise NameTaken(
        f"The name {endpoint.name!r} is taken: {_WHAT[what]} of that name exists already and is "
        "someone else's, not this endpoint's (names are unique regardless of case). "
        "Deploy again under another name."
    )


def refresh_endpoint(endpoint: Endpoint) -> str:
    """Describe one endpoint and store what the backend says; its status afterwards."""
    backend = get_backend()
    try:
        described = backend.describe_endpoint(endpoint.name)
    except ClientError as exc:
        if code_of(exc) == "ValidationException" and endpoint.status == Status.DELETING:
            _move(endpoint.pk, Status.DELETING, Status.DELETED, deleted_at=timezone.now())
            return Status.DELETED
        if code_of(exc) == "ValidationException":  # gone without us: say so
            _move(
                endpoint.pk, Endpoint.FOLLOWED, Status.FAILED, failure_reason="The endpoint no longer exists."
            )
            return Status.FAILED
        raise
    status = described.get("EndpointStatus", "")
    if endpoint.status == Status.DELETING:
        return endpoint.status  # until the backend forgets it
    if status == "InService" and endpoint.status == Status.CREATING:
        moved = _move(endpoint.pk, Status.CREATING, Status.IN_SERVICE, in_service_at=timezone.now())
        if moved and SavedTest.objects.filter(job_id=endpoint.job_id).exists():
            # The job's suite runs after every deploy of its model.
            run_suite_task.delay(endpoint.pk, endpoint.owner_id)
        return Status.IN_SERVICE
    if status == "Failed":
        _move(
            endpoint.pk,
            (Status.CREATING, Status.IN_SERVICE),
            Status.FAILED,
            failure_reason=described.get("FailureReason", ""),
        )
        return Status.FAILED
    return endpoint.status


@shared_task(name="endpoints.poll", **RETRY)
def poll_endpoints() -> int:
    """Follow every endpoint the backend has; delete those past their time-to-live."""
    backend = get_backend()
    reattach = getattr(backend, "reattach_endpoints", None)
    if callable(reattach):
        try:
            reattach()
        except Exception:
            log.exception("re-attaching local endpoints failed")
    now = timezone.now()
    for endpoint in Endpoint.objects.filter(
        expires_at__lte=now, status__in=[*Endpoint.FOLLOWED, Status.PENDING]
    ):
        log.info("endpoint %s reached its time-to-live: deleting it", endpoint.name)
        start_delete(endpoint)
    followed = list(Endpoint.objects.filter(status__in=Endpoint.FOLLOWED))
    for endpoint in followed:
        try:
            refresh_endpoint(endpoint)
        except Exception as exc:
            if _transient(exc):
                raise TransientError(_one_line(exc)) from exc
            log.warning("describing endpoint %s failed: %s", endpoint.name, explain(exc))
    return len(followed)


def start_delete(endpoint: Endpoint) -> bool:
    if not _move(
        endpoint.pk, [s for s in Status.values if s not in (Status.DELETED, Status.DELETING)], Status.DELETING
    ):
        return False
    enqueue_delete(endpoint)
    return True


@shared_task(name="endpoints.delete", **RETRY)
def delete_endpoint(endpoint_id: int) -> str:
    """Delete the endpoint, its config and its model (what does not exist is skipped)."""
    endpoint = Endpoint.objects.filter(pk=endpoint_id).first()
    if endpoint is None:
        return "missing"
    backend = get_backend()
    for method in (backend.delete_endpoint, backend.delete_endpoint_config, backend.delete_model):
        try:
            method(endpoint.name)
        except ClientError as exc:
            if _transient(exc):
                raise TransientError(_one_line(exc)) from exc
            if code_of(exc) != "ValidationException":  # "could not find": nothing to delete
                Endpoint.objects.filter(pk=endpoint.pk).update(error=explain(exc))
                raise
    endpoint.refresh_from_db()
    return refresh_endpoint(endpoint)


delete_endpoint_task = delete_endpoint


def _header(value: str) -> str | None:
    return value or None


@shared_task(name="endpoints.invoke")
def run_invocation(invocation_id: int) -> str:
    """Send one invocation (once: a request is not retried behind the user's back)."""
    invocation = Invocation.objects.select_related("endpoint", "test").filter(pk=invocation_id).first()
    if invocation is None or invocation.status != Invocation.Status.PENDING:
        return "missing"
    backend = get_backend()
    started = time.perf_counter()
    fields: dict[str, Any] = {}
    try:
        answer = backend.invoke_endpoint(
            invocation.endpoint.name,
            bytes(invocation.body),
            content_type=invocation.content_type,
            accept=_header(invocation.accept),
            custom_attributes=_header(invocation.custom_attributes),
        )
    except ClientError as exc:
        error = exc.response.get("Error", {})
        original = exc.response.get("OriginalStatusCode") or error.get("OriginalStatusCode")
        fields["latency_ms"] = (time.perf_counter() - started) * 1000
        if code_of(exc) == "ModelError" and original:
            message = exc.response.get("OriginalMessage") or error.get("OriginalMessage") or ""
            fields.update(status_code=int(original), response_body=message.encode()[:MAX_STORED_RESPONSE])
            fields["error"] = f"ModelError: the container answered {original}"
        else:
            fields["error"] = explain(exc)
        fields["status"] = Invocation.Status.ERROR
    except (BotoCoreError, OSError) as exc:
        fields.update(status=Invocation.Status.ERROR, error=explain(exc))
    else:
        fields["latency_ms"] = (time.perf_counter() - started) * 1000
        body = answer.get("Body", b"")
        fields.update(
            status=Invocation.Status.DONE,
            status_code=200,
            response_body=body[:MAX_STORED_RESPONSE],
            response_truncated=len(body) > MAX_STORED_RESPONSE,
            response_headers={
                k: v
                for k, v in {
                    "Content-Type": answer.get("ContentType"),
                    "X-Amzn-SageMaker-Custom-Attributes": answer.get("CustomAttributes"),
                    "X-Amzn-Invoked-Production-Variant": answer.get("InvokedProductionVariant"),
                }.items()
                if v
            },
        )
    if invocation.test is not None:
        passed, verdict = expectations.check(
            invocation.test,
            fields.get("status_code"),
            fields.get("response_body", b""),
            fields.get("error", ""),
        )
        fields.update(passed=passed, verdict=verdict[:500])
    now = timezone.now()
    fields["finished_at"] = now
    Invocation.objects.filter(pk=invocation.pk).update(**fields)
    Endpoint.objects.filter(pk=invocation.endpoint_id).update(last_invoked_at=now)
    return fields["status"]


run_invocation_task = run_invocation


def new_run(endpoint: Endpoint, test: SavedTest, owner_id: int, suite: SuiteRun | None = None) -> Invocation:
    return Invocation.objects.create(
        endpoint=endpoint,
        test=test,
        owner_id=owner_id,
        suite=suite,
        body=bytes(test.body),
        content_type=test.content_type,
        accept=test.accept,
        custom_attributes=test.custom_attributes,
    )


def _close(suite: SuiteRun, note: str) -> dict[str, Any]:
    """Close a suite that runs no test (``note`` says why)."""
    SuiteRun.objects.filter(pk=suite.pk, finished_at__isnull=True).update(
        note=note, finished_at=timezone.now()
    )
    return {"tests": 0, "suite": None, "suite_run": suite.pk}


@shared_task(name="endpoints.run_suite", bind=True)
def run_suite(self, endpoint_id: int, owner_id: int, suite_id: int | None = None) -> dict[str, Any]:
    """Run the saved tests of the endpoint's job against it (at most ``MAX_SAVED_TESTS``): one
    ``run_invocation`` task per test, side by side (a chord), and ``suite_result`` when the last
    one ends, which stores the counts on the ``SuiteRun`` (``suite_id``: one made already, by the
    page's "Run all"; otherwise a new one). Returns ``{"tests": n, "suite": the callback's task
    id, "suite_run": the SuiteRun's id, "runs": each test's task id}``.
    Called as a function (a test step), the same steps run here, one after the other, and it
    returns the suite's result."""
    if suite_id is None:
        suite = SuiteRun(endpoint_id=endpoint_id, owner_id=owner_id)
    else:
        suite = SuiteRun.objects.filter(
            pk=suite_id, endpoint_id=endpoint_id, finished_at__isnull=True
        ).first()
        if suite is None:
            return {"tests": 0, "suite": None, "suite_run": None}
    endpoint = Endpoint.objects.filter(pk=endpoint_id).first()
    if endpoint is None:
        return {"tests": 0, "suite": None, "suite_run": suite.pk}
    if endpoint.status != Status.IN_SERVICE:
        if suite.pk is None:
            return {"tests": 0, "suite": None, "suite_run": None}
        return _close(suite, f"No test ran: the endpoint is {endpoint.status}.")
    tests = list(SavedTest.objects.filter(job_id=endpoint.job_id)[: MAX_SAVED_TESTS + 1])
    note = ""
    if len(tests) > MAX_SAVED_TESTS:  # saved before the bound: the first ones by name run
        total = SavedTest.objects.filter(job_id=endpoint.job_id).count()
        note = (
            f"The first {MAX_SAVED_TESTS} of {total} saved tests ran (by name): "
            f"a model keeps at most {MAX_SAVED_TESTS}."
        )
        log.warning("suite of %s: running the first %d saved tests only", endpoint.name, MAX_SAVED_TESTS)
        tests = tests[:MAX_SAVED_TESTS]
    with transaction.atomic():
        suite.tests, suite.note, suite.started_at = len(tests), note, timezone.now()
        suite.save()
        runs = [new_run(endpoint, test, owner_id, suite).pk for test in tests]
    if not runs:
        return _close(suite, "No test ran: the model has no saved tests.")
    if self.request.called_directly:
        for pk in runs:
            run_invocation(pk)
        return suite_result(endpoint.pk, suite.pk)
    callback = suite_result_task.si(endpoint.pk, suite.pk).on_error(suite_broken_task.s())
    result = chord(run_invocation_task.si(pk) for pk in runs)(callback)
    return {
        "tests": len(runs),
        "suite": result.id,
        "suite_run": suite.pk,
        "runs": [r.id for r in result.parent.results],
    }


run_suite_task = run_suite


@shared_task(name="endpoints.suite_result")
def suite_result(endpoint_id: int, suite_id: int) -> dict[str, Any]:
    """The suite's result, once its last test has ended: how many ran, passed, failed, and never
    ended; stored on the ``SuiteRun`` with when the last test ended."""
    runs = Invocation.objects.filter(suite_id=suite_id, endpoint_id=endpoint_id)
    found = runs.aggregate(
        n_tests=Count("pk"),
        n_passed=Count("pk", filter=Q(passed=True)),
        n_failed=Count("pk", filter=Q(passed=False)),
        n_unfinished=Count("pk", filter=Q(status=Invocation.Status.PENDING)),
        last=Max("finished_at"),
    )
    last = found.pop("last")
    counts = {key.removeprefix("n_"): value for key, value in found.items()}
    finished = timezone.now() if counts["unfinished"] or last is None else last
    tests = SuiteRun.objects.filter(pk=suite_id).values_list("tests", flat=True).first() or counts["tests"]
    counts["tests"] = tests
    SuiteRun.objects.filter(pk=suite_id, endpoint_id=endpoint_id).update(**counts, finished_at=finished)
    summary = {"endpoint": endpoint_id, "suite_run": suite_id, **counts}
    log.info("suite of endpoint %s: %s", endpoint_id, summary)
    return summary


suite_result_task = suite_result


@shared_task(name="endpoints.suite_broken")
def suite_broken(request: Any, exc: BaseException, traceback: Any) -> None:
    """The chord's error callback: a test's task (or the callback) broke, so ``suite_result``
    never ran; close the suite with what there is (its tests still pending: unfinished), so
    the page stops waiting for it. ``request.args`` are the callback's: (endpoint, suite)."""
    log.error("suite %s broke: %s", request.args, exc)
    endpoint_id, suite_id = request.args
    suite_result(endpoint_id, suite_id)


suite_broken_task = suite_broken
