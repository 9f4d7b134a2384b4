"""The endpoint pages through Django's test client: who may do what, and every refusal."""

from __future__ import annotations

from unittest.mock import patch

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import TestCase

from jobs.endpoints import expectations
from jobs.endpoints.models import Endpoint, Invocation, SavedTest
from jobs.endpoints.views import invocation_context
from jobs.models import TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(alice):
    return TrainingJob.objects.create(
        owner=alice,
        name="iris-1",
        entry_point="train.py",
        status="Completed",
        source_uri="file:///tmp/code/sourcedir.tar.gz",
        model_artifacts="file:///tmp/out/iris-1/output/model.tar.gz",
    )


@pytest.fixture
def endpoint(job, alice):
    return Endpoint.objects.create(
        name="iris-1-ep",
        job=job,
        owner=alice,
        inference_entry_point="inference.py",
        instance_type="ml.m5.large",
        status="InService",
    )


def deploy_form(**fields):
    data = {
        "name": "iris-1-ep2",
        "inference_entry_point": "train.py",
        "instance_type": "ml.m5.large",
        "instance_count": "1",
        "ttl_minutes": "",
        "env-TOTAL_FORMS": "0",
        "env-INITIAL_FORMS": "0",
    }
    data.update(fields)
    return data


def post(client, url, data, **kw):
    with (
        patch("jobs.endpoints.tasks.deploy_endpoint_task.delay") as deploy,
        patch("jobs.endpoints.tasks.delete_endpoint_task.delay") as delete,
        patch("jobs.endpoints.tasks.run_invocation_task.delay") as invoke,
        TestCase.captureOnCommitCallbacks(execute=True),
    ):
        response = client.post(url, data, **kw)
    return response, {"deploy": deploy, "delete": delete, "invoke": invoke}


def test_every_endpoint_page_needs_a_signed_in_user(client, endpoint):
    for url in [
        "/endpoints/",
        "/endpoints/iris-1-ep/",
        "/jobs/iris-1/deploy/",
        "/endpoints/iris-1-ep/delete/",
    ]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url


def test_the_owner_deploys_with_a_time_to_live(client, alice, job):
    client.force_login(alice)
    page = client.get("/jobs/iris-1/deploy/")
    assert page.status_code == 200 and b'name="ttl_minutes"' in page.content
    response, sent = post(client, "/jobs/iris-1/deploy/", deploy_form(ttl_minutes="30"))
    assert response.status_code == 302 and response["Location"] == "/endpoints/iris-1-ep2/"
    endpoint = Endpoint.objects.get(name="iris-1-ep2")
    sent["deploy"].assert_called_once_with(endpoint.pk)
    assert endpoint.status == "Pending" and endpoint.expires_at is not None and endpoint.owner == alice


def test_a_teammate_cannot_deploy_or_delete(client, bob, job, endpoint):
    client.force_login(bob)
    assert client.get("/jobs/iris-1/deploy/").status_code == 403
    response, sent = post(client, "/jobs/iris-1/deploy/", deploy_form())
    assert response.status_code == 403
    sent["deploy"].assert_not_called()
    assert client.get("/endpoints/iris-1-ep/delete/").status_code == 403
    response, sent = post(client, "/endpoints/iris-1-ep/delete/", {})
    assert response.status_code == 403
    sent["delete"].assert_not_called()
    endpoint.refresh_from_db()
    assert endpoint.status == "InService"


def test_staff_may_delete_with_confirmation(client, charlie, endpoint):
    client.force_login(charlie)
    assert b'method="post"' in client.get("/endpoints/iris-1-ep/delete/").content
    response, sent = post(client, "/endpoints/iris-1-ep/delete/", {})
    assert response.status_code == 302
    sent["delete"].assert_called_once_with(endpoint.pk)
    endpoint.refresh_from_db()
    assert endpoint.status == "Deleting"


def test_only_completed_jobs_with_a_model_deploy(client, alice, job):
    TrainingJob.objects.filter(pk=job.pk).update(status="Failed")
    client.force_login(alice)
    response = client.get("/jobs/iris-1/deploy/")
    assert response.status_code == 302 and response["Location"] == "/jobs/iris-1/"


def test_deploy_limits_show_next_to_the_fields(client, alice, job, endpoint):
    client.force_login(alice)
    response, sent = post(client, "/jobs/iris-1/deploy/", deploy_form(name="bad name!"))
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "may only contain letters, digits and hyphens" in " ".join(errors["name"])
    response, _ = post(client, "/jobs/iris-1/deploy/", deploy_form(instance_type="ml.nope"))
    assert "instance_type" in response.context["form"].errors
    response, _ = post(client, "/jobs/iris-1/deploy/", deploy_form(name="iris-1-ep"))
    assert "exists already" in " ".join(response.context["form"].errors["name"])
    sent["deploy"].assert_not_called()


@pytest.mark.parametrize(
    ("fields", "files", "message"),
    [
        ({"body": ""}, None, "The body is empty"),
        ({"body": "{not json"}, None, "The body is not valid JSON"),
        ({"body": "{}", "content_type": "a" * 1025}, None, "SageMaker refuses headers over 1024 characters"),
        ({"body": ""}, SimpleUploadedFile("big.bin", b"0" * 6_291_457), "SageMaker takes at most 6 MiB"),
        ({"body": "{}", "save_as": "t", "expect": "json", "json_path": "a[[x"}, None, "is not a path"),
        (
            {"body": "{}", "save_as": "t", "expect": "regex", "pattern": "(unclosed"},
            None,
            "Not a valid regular",
        ),
    ],
)
def test_invocation_refusals(client, bob, endpoint, fields, files, message):
    client.force_login(bob)
    data = {"content_type": "application/json", "expect": "status", "expected_status": "200", **fields}
    if files:
        data["body_file"] = files
    response, sent = post(client, "/endpoints/iris-1-ep/invoke/", data)
    assert response.status_code == 200
    assert message in response.content.decode()
    sent["invoke"].assert_not_called()
    assert not Invocation.objects.exists()


def test_a_teammate_invokes_and_saves_a_test(client, bob, endpoint):
    client.force_login(bob)
    data = {
        "body": '{"x": 1}',
        "content_type": "application/json",
        "save_as": "smoke",
        "expect": "json",
        "json_path": "predictions[0]",
        "expected_value": "2",
        "tolerance": "0.5",
        "expected_status": "200",
    }
    response, sent = post(client, "/endpoints/iris-1-ep/invoke/", data)
    assert response.status_code == 302
    invocation = Invocation.objects.get()
    sent["invoke"].assert_called_once_with(invocation.pk)
    assert invocation.test.name == "smoke" and invocation.test.job == endpoint.job
    assert response["Location"] == f"/endpoints/iris-1-ep/#invocation-{invocation.pk}"


def test_an_endpoint_not_in_service_takes_no_requests(client, alice, endpoint):
    Endpoint.objects.filter(pk=endpoint.pk).update(status="Creating")
    client.force_login(alice)
    response, sent = post(
        client,
        "/endpoints/iris-1-ep/invoke/",
        {"body": "{}", "content_type": "application/json", "expect": "status", "expected_status": "200"},
    )
    assert "takes requests once it is InService" in response.content.decode()
    sent["invoke"].assert_not_called()


def test_answers_are_rendered_inert_and_pretty(client, alice, endpoint):
    inv = Invocation.objects.create(
        endpoint=endpoint,
        owner=alice,
        body=b"{}",
        content_type="application/json",
        status="Done",
        status_code=200,
        response_body=b'{"html": "<script>alert(1)</script>"}',
        latency_ms=12.5,
        response_headers={"Content-Type": "application/json"},
    )
    client.force_login(alice)
    body = client.get("/endpoints/iris-1-ep/").content.decode()
    assert "<script>alert(1)" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "12.5 ms" in body and "invoke_endpoint" in body and "aws sagemaker-runtime invoke-endpoint" in body
    csv_inv = Invocation.objects.create(
        endpoint=endpoint,
        owner=alice,
        body=b"1,2",
        content_type="text/csv",
        status="Done",
        status_code=200,
        response_body=b"a,b\n1,2\n",
        response_headers={"Content-Type": "text/csv"},
    )
    assert invocation_context(csv_inv)["shown"] == {"kind": "csv", "rows": [["a", "b"], ["1", "2"]]}
    fragment = client.get(f"/endpoints/iris-1-ep/invocations/{inv.pk}/").content.decode()
    assert "hx-trigger" not in fragment  # done: nothing polls


def test_a_pending_invocation_polls_itself(client, alice, endpoint):
    inv = Invocation.objects.create(
        endpoint=endpoint, owner=alice, body=b"{}", content_type="application/json"
    )
    client.force_login(alice)
    assert b'hx-trigger="every 1s"' in client.get(f"/endpoints/iris-1-ep/invocations/{inv.pk}/").content
    assert client.get(f"/endpoints/other/invocations/{inv.pk}/").status_code == 404


def test_saved_tests_run_alone_or_as_a_suite(client, bob, alice, endpoint):
    a = SavedTest.objects.create(job=endpoint.job, owner=alice, name="a", body=b"{}")
    SavedTest.objects.create(job=endpoint.job, owner=alice, name="b", body=b"[]")
    client.force_login(bob)
    response, sent = post(client, f"/endpoints/iris-1-ep/tests/{a.pk}/run/", {})
    assert response.status_code == 302 and sent["invoke"].call_count == 1
    response, sent = post(client, "/endpoints/iris-1-ep/tests/run/", {})
    assert sent["invoke"].call_count == 2
    assert Invocation.objects.filter(test__isnull=False).count() == 3
    # Only who saved it (or staff) deletes a test.
    response, _ = post(client, f"/endpoints/iris-1-ep/tests/{a.pk}/delete/", {})
    assert response.status_code == 403


def test_unknown_endpoints_are_404(client, alice):
    client.force_login(alice)
    for url in [
        "/endpoints/nope/",
        "/endpoints/nope/status/",
        "/endpoints/nope/delete/",
        "/jobs/nope/deploy/",
    ]:
        assert client.get(url).status_code == 404, url


@pytest.mark.parametrize(
    ("expect", "fields", "status", "body", "passed"),
    [
        ("status", {"expected_status": 200}, 200, b"", True),
        ("status", {"expected_status": 200}, 500, b"", False),
        (
            "json",
            {"json_path": "predictions[0]", "expected_value": "3.5", "tolerance": 0.01},
            200,
            b'{"predictions": [3.504]}',
            True,
        ),
        ("json", {"json_path": "$.label", "expected_value": "cat"}, 200, b'{"label": "dog"}', False),
        ("json", {"json_path": "a.b", "expected_value": "[1, 2]"}, 200, b'{"a": {"b": [1, 2]}}', True),
        ("regex", {"pattern": r"score.*0\.9"}, 200, b'{"score": 0.93}', True),
        ("none", {}, 400, b"bad", True),
    ],
)
def test_expectations(expect, fields, status, body, passed):
    test = SavedTest(expect=expect, **fields)
    assert expectations.check(test, status, body)[0] is passed


def test_no_answer_never_passes():
    assert expectations.check(SavedTest(expect="none"), None, b"", "timed out") == (
        False,
        "no answer: timed out",
    )
    assert User  # the pages' users come from fixtures
