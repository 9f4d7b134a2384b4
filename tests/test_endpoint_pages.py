"""The endpoint pages through Django's test client: who may do what, and every refusal."""

from __future__ import annotations

from unittest.mock import patch

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import TestCase
from django.utils import timezone

from jobs.endpoints import expectations, tasks
from jobs.endpoints.models import Endpoint, Invocation, SavedTest, SuiteRun
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
        patch("jobs.endpoints.tasks.run_suite_task.delay") as suite,
        TestCase.captureOnCommitCallbacks(execute=True),
    ):
        response = client.post(url, data, **kw)
    return response, {"deploy": deploy, "delete": delete, "invoke": invoke, "suite": suite}


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
    client.force_login(bob)  # any teammate runs tests
    response, sent = post(client, f"/endpoints/iris-1-ep/tests/{a.pk}/run/", {})
    assert response.status_code == 302 and sent["invoke"].call_count == 1 and not sent["suite"].called
    assert not SuiteRun.objects.exists()
    # "Run all" is the suite: one run_suite task (one task per test, its result stored).
    response, sent = post(client, "/endpoints/iris-1-ep/tests/run/", {})
    suite = SuiteRun.objects.get()
    assert response["Location"] == f"/endpoints/iris-1-ep/#suite-{suite.pk}" and suite.owner == bob
    sent["suite"].assert_called_once_with(endpoint.pk, bob.pk, suite.pk)
    assert not sent["invoke"].called
    page = client.get("/endpoints/iris-1-ep/").content.decode()
    assert f'id="suite-{suite.pk}"' in page and "Starting…" in page and 'hx-trigger="every 1s"' in page
    # What the worker then does, here in place: each test's invocation belongs to the suite.
    judged = {"a": True, "b": False}

    def answer(pk):
        run = Invocation.objects.select_related("test").get(pk=pk)
        Invocation.objects.filter(pk=pk).update(
            status="Done", status_code=200, passed=judged[run.test.name], finished_at=timezone.now()
        )

    with patch("jobs.endpoints.tasks.run_invocation", side_effect=answer):
        tasks.run_suite(*sent["suite"].call_args.args)
    assert Invocation.objects.filter(test__isnull=False).count() == 3
    assert set(suite.runs.values_list("test__name", "owner")) == {("a", bob.pk), ("b", bob.pk)}
    suite.refresh_from_db()
    finished = timezone.localtime(suite.finished_at).strftime("%H:%M:%S")
    page = client.get("/endpoints/iris-1-ep/").content.decode()
    assert f"1 of 2 passed, 1 failed — finished {finished}" in page
    assert f'id="suite-{suite.pk}"' in page and 'hx-trigger="every 1s"' not in page.split("<h3>History")[0]
    # Only who saved it (or staff) deletes a test.
    response, _ = post(client, f"/endpoints/iris-1-ep/tests/{a.pk}/delete/", {})
    assert response.status_code == 403


def test_a_running_suite_shows_its_progress_and_polls(client, bob, alice, endpoint):
    tests = [SavedTest.objects.create(job=endpoint.job, owner=alice, name=n, body=b"{}") for n in "abc"]
    suite = SuiteRun.objects.create(endpoint=endpoint, owner=alice, tests=3)
    for test, passed in zip(tests, [True, False, None], strict=True):
        Invocation.objects.create(
            endpoint=endpoint,
            test=test,
            suite=suite,
            owner=alice,
            body=b"{}",
            content_type="application/json",
            status="Pending" if passed is None else "Done",
            passed=passed,
        )
    client.force_login(bob)
    url = f"/endpoints/iris-1-ep/suites/{suite.pk}/"
    fragment = client.get(url).content.decode()
    assert "Running: 2 of 3 ended so far (1 passed, 1 failed)" in fragment
    assert f'hx-get="{url}" hx-trigger="every 1s"' in fragment
    assert "Running: 2 of 3 ended so far" in client.get("/endpoints/iris-1-ep/").content.decode()
    assert client.get(f"/endpoints/other/suites/{suite.pk}/").status_code == 404
    # Once the last one ends, the stored result; nothing polls any more.
    Invocation.objects.filter(suite=suite, status="Pending").update(status="Done", passed=True)
    tasks.suite_result(endpoint.pk, suite.pk)
    fragment = client.get(url).content.decode()
    assert "2 of 3 passed, 1 failed — finished" in fragment and "hx-trigger" not in fragment
    # The latest suite run is the one shown.
    SuiteRun.objects.create(endpoint=endpoint, owner=alice)
    assert "Starting…" in client.get("/endpoints/iris-1-ep/").content.decode()


def test_a_suite_summary_says_what_did_not_end(client, alice, endpoint):
    suite = SuiteRun.objects.create(
        endpoint=endpoint, owner=alice, tests=6, passed=3, failed=1, unfinished=1, finished_at=timezone.now()
    )
    client.force_login(alice)
    text = client.get(f"/endpoints/iris-1-ep/suites/{suite.pk}/").content.decode()
    assert "3 of 6 passed, 1 failed, 1 unfinished, 1 not judged — finished" in text
    SuiteRun.objects.filter(pk=suite.pk).update(tests=0, note="No test ran: the endpoint is Deleting.")
    text = client.get(f"/endpoints/iris-1-ep/suites/{suite.pk}/").content.decode()
    assert "No test ran: the endpoint is Deleting." in text


def test_run_all_needs_saved_tests_and_an_endpoint_in_service(client, bob, alice, endpoint):
    client.force_login(bob)
    response, sent = post(client, "/endpoints/iris-1-ep/tests/run/", {}, follow=True)
    assert "no saved tests to run" in response.content.decode() and not sent["suite"].called
    SavedTest.objects.create(job=endpoint.job, owner=alice, name="a", body=b"{}")
    Endpoint.objects.filter(pk=endpoint.pk).update(status="Creating")
    response, sent = post(client, "/endpoints/iris-1-ep/tests/run/", {}, follow=True)
    assert "tests run once it is InService" in response.content.decode() and not sent["suite"].called
    assert not SuiteRun.objects.exists()


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


# --- saved test names ---------------------------------------------------------------------------


def invoke_data(**fields):
    return {
        "body": '{"x": 1}',
        "content_type": "application/json",
        "expect": "status",
        "expected_status": "200",
        **fields,
    }


def test_a_test_name_another_user_saved_is_refused_whatever_its_case(client, alice, bob, endpoint):
    mine = SavedTest.objects.create(job=endpoint.job, owner=alice, name="Smoke", body=b"{}")
    client.force_login(bob)
    response, sent = post(client, "/endpoints/iris-1-ep/invoke/", invoke_data(save_as="  smoke "))
    assert response.status_code == 200
    assert response.context["form"].errors["save_as"] == [
        "This model has a test called 'Smoke' already, saved by alice (names are the same whatever "
        "their case): choose another name. Only who saved a test can change it."
    ]
    assert "saved by alice" in response.content.decode()
    sent["invoke"].assert_not_called()
    mine.refresh_from_db()
    assert (mine.owner, mine.name, bytes(mine.body)) == (alice, "Smoke", b"{}")
    assert not Invocation.objects.exists()
    # So she alone may still delete it.
    assert post(client, f"/endpoints/iris-1-ep/tests/{mine.pk}/delete/", {})[0].status_code == 403


def test_staff_cannot_take_over_a_test_by_its_name_either(client, alice, charlie, endpoint):
    SavedTest.objects.create(job=endpoint.job, owner=alice, name="smoke", body=b"{}")
    client.force_login(charlie)
    response, _ = post(client, "/endpoints/iris-1-ep/invoke/", invoke_data(save_as="SMOKE"))
    assert "saved by alice" in " ".join(response.context["form"].errors["save_as"])
    assert SavedTest.objects.get().owner == alice


def test_saving_under_ones_own_test_name_updates_it(client, alice, endpoint):
    mine = SavedTest.objects.create(job=endpoint.job, owner=alice, name="smoke", body=b"{}")
    client.force_login(alice)
    response, _ = post(client, "/endpoints/iris-1-ep/invoke/", invoke_data(save_as="Smoke", body="[1]"))
    assert response.status_code == 302
    mine.refresh_from_db()
    assert (mine.name, bytes(mine.body), mine.owner) == ("Smoke", b"[1]", alice)
    assert SavedTest.objects.count() == 1
    assert Invocation.objects.get().test == mine


def test_the_same_name_on_another_model_is_free(client, alice, bob, job, endpoint):
    other = TrainingJob.objects.create(owner=alice, name="iris-2", entry_point="train.py", status="Completed")
    SavedTest.objects.create(job=other, owner=alice, name="smoke", body=b"{}")
    client.force_login(bob)
    response, _ = post(client, "/endpoints/iris-1-ep/invoke/", invoke_data(save_as="smoke"))
    assert response.status_code == 302
    assert SavedTest.objects.filter(name="smoke").count() == 2


def test_the_database_refuses_names_that_differ_only_in_case(alice, job):
    from django.db import IntegrityError, transaction

    SavedTest.objects.create(job=job, owner=alice, name="smoke", body=b"{}")
    with pytest.raises(IntegrityError), transaction.atomic():
        SavedTest.objects.create(job=job, owner=alice, name="SMOKE", body=b"{}")


def test_a_name_taken_between_the_check_and_the_save_is_a_form_error(client, alice, bob, endpoint):
    client.force_login(bob)

    def taken_meanwhile(form):
        SavedTest.objects.create(job=endpoint.job, owner=alice, name="smoke", body=b"{}")
        return "smoke"

    with patch("jobs.endpoints.forms.InvokeForm.clean_save_as", taken_meanwhile):
        response, sent = post(client, "/endpoints/iris-1-ep/invoke/", invoke_data(save_as="smoke"))
    assert response.status_code == 200
    assert "has a test called &#x27;smoke&#x27; already" in response.content.decode()
    sent["invoke"].assert_not_called()
    assert SavedTest.objects.get().owner == alice and not Invocation.objects.exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("x" * 101, "A test name has at most 100 characters (this one has 101)."),
        ("smoke\ntest", "A test name is one line of text, without control characters."),
    ],
)
def test_bad_test_names_are_refused_with_a_reason(client, bob, endpoint, name, message):
    client.force_login(bob)
    response, sent = post(client, "/endpoints/iris-1-ep/invoke/", invoke_data(save_as=name))
    assert response.context["form"].errors["save_as"] == [message]
    sent["invoke"].assert_not_called()


def test_the_migration_renames_names_that_differ_only_in_case():
    from importlib import import_module
    from types import SimpleNamespace

    migration = import_module("jobs.endpoints.migrations.0002_secret_environment_and_test_names_any_case")
    rows = [(1, 1, "smoke"), (2, 1, "Smoke"), (3, 1, "Smoke (2)"), (4, 2, "SMOKE"), (5, 1, "x" * 100)]
    rows.append((6, 1, "X" * 100))
    renamed = {}

    class Tests:  # the few calls of the data migration, on these rows
        def using(self, alias):
            return self

        def order_by(self, *fields):
            return self

        def values_list(self, *fields):
            return rows

        def filter(self, pk):
            return SimpleNamespace(update=lambda name: renamed.update({pk: name}))

    model = SimpleNamespace(objects=Tests())
    apps = SimpleNamespace(get_model=lambda app, name: model)
    migration.rename_names_that_differ_only_in_case(
        apps, SimpleNamespace(connection=SimpleNamespace(alias="x"))
    )
    assert renamed == {2: "Smoke (3)", 6: "X" * 96 + " (2)"}


# --- copy as code -------------------------------------------------------------------------------

HOSTILE = {
    "content_type": "'; touch {marker}; '",
    "accept": "$(touch {marker}) `touch {marker}`",
    "custom_attributes": "a\"b\\c; touch {marker} # it's",
}


def snippets(client, endpoint, alice, body: bytes, **headers):
    import html
    import re

    inv = Invocation.objects.create(
        endpoint=endpoint, owner=alice, body=body, status="Done", status_code=200, **headers
    )
    client.force_login(alice)
    page = client.get(f"/endpoints/iris-1-ep/invocations/{inv.pk}/").content.decode()
    code, cli = re.search(
        r"<summary>Copy as code</summary><pre>(.*?)</pre><pre>(.*?)</pre>", page, re.S
    ).groups()
    return html.unescape(code), html.unescape(cli)


def run_cli(cli: str, folder):
    """Run the command line with an ``aws`` that writes down the arguments it was given."""
    import subprocess

    bin_dir = folder / "bin"
    bin_dir.mkdir()
    (bin_dir / "aws").write_text('#!/bin/sh\nprintf "%s\\0" "$@" > "$ARGS_OUT"\n')
    (bin_dir / "aws").chmod(0o755)
    assert subprocess.run(["bash", "-n", "-c", cli], check=False).returncode == 0
    out = folder / "args"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "ARGS_OUT": str(out)}
    subprocess.run(["bash", "-c", cli], cwd=folder, env=env, check=True, timeout=10)
    return out.read_bytes().decode().split("\0")[:-1]


def test_copy_as_code_quotes_every_value_for_the_shell(client, alice, endpoint, tmp_path):
    marker = tmp_path / "pwned"
    headers = {k: v.format(marker=marker) for k, v in HOSTILE.items()}
    body = b'{"text": "it\'s $(touch ' + str(marker).encode() + b')",\n "n": `id`}'
    _, cli = snippets(client, endpoint, alice, body, **headers)
    args = run_cli(cli, tmp_path)
    assert not marker.exists()
    assert args == [
        "sagemaker-runtime",
        "invoke-endpoint",
        "--region",
        "us-east-1",
        "--endpoint-name",
        "iris-1-ep",
        "--content-type",
        headers["content_type"],
        "--accept",
        headers["accept"],
        "--custom-attributes",
        headers["custom_attributes"],
        "--body",
        "fileb://request.body",
        "response.out",
    ]
    assert (tmp_path / "request.body").read_bytes() == body  # the body arrives unchanged


def test_copy_as_code_writes_python_literals(client, alice, endpoint, tmp_path):
    import ast

    marker = tmp_path / "pwned"
    headers = {k: v.format(marker=marker) for k, v in HOSTILE.items()}
    body = '{"quote": "\'\\"\\u00e9", "end": "\\n"}'
    code, _ = snippets(client, endpoint, alice, body.encode(), **headers)
    tree = ast.parse(code)
    call = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "invoke_endpoint"
    )
    sent = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg != "Body"}
    assert sent == {
        "EndpointName": "iris-1-ep",
        "ContentType": headers["content_type"],
        "Accept": headers["accept"],
        "CustomAttributes": headers["custom_attributes"],
    }
    assigned = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "body")
    assert ast.literal_eval(assigned.value) == body


@pytest.mark.parametrize("body", [b"\x00\x01binary", b"\xff\xfe not utf-8", b"x" * 5000])
def test_a_body_not_shown_inline_is_read_from_the_file(client, alice, endpoint, body, tmp_path):
    import ast

    code, cli = snippets(client, endpoint, alice, body, content_type="application/x-npy")
    ast.parse(code)
    assert "open('request.body', 'rb')" in code and f"{len(body):,} bytes" in code
    (tmp_path / "request.body").write_bytes(body)
    assert run_cli(cli, tmp_path)[-3:] == ["--body", "fileb://request.body", "response.out"]
    assert (tmp_path / "request.body").read_bytes() == body


# --- secret environment variables ---------------------------------------------------------------

SECRET = "hunter2-sk-live-0123456789"


def secret_rows(**extra):
    return {
        "env-TOTAL_FORMS": "2",
        "env-INITIAL_FORMS": "0",
        "env-0-key": "API_TOKEN",
        "env-0-value": SECRET,
        "env-0-secret": "on",
        "env-1-key": "MODE",
        "env-1-value": "offline",
        **extra,
    }


def test_a_secret_is_deployed_and_never_shown_again(client, alice, bob, job):
    client.force_login(alice)
    response, _ = post(client, "/jobs/iris-1/deploy/", deploy_form(**secret_rows()))
    assert response.status_code == 302, response.content.decode()[-2000:]
    endpoint = Endpoint.objects.get(name="iris-1-ep2")
    assert endpoint.environment == {"API_TOKEN": SECRET, "MODE": "offline"}
    assert endpoint.secret_environment == ["API_TOKEN"]
    # The worker's task sends the value itself in CreateModel.
    with patch("jobs.endpoints.tasks.get_backend") as backend:
        assert tasks.deploy_endpoint(endpoint.pk) == "creating"
    (model,) = backend.return_value.create_model.call_args.args
    assert model["PrimaryContainer"]["Environment"]["API_TOKEN"] == SECRET
    endpoint.refresh_from_db()
    assert endpoint.requests["CreateModel"]["PrimaryContainer"]["Environment"]["API_TOKEN"] == SECRET
    Endpoint.objects.filter(pk=endpoint.pk).update(
        status="Failed", failure_reason=f"could not log in with {SECRET}", error=f"token {SECRET}"
    )
    client.force_login(bob)
    with patch("jobs.endpoints.views.get_backend") as backend:
        backend.return_value.tail_endpoint_logs.return_value = (
            [{"timestamp": 0, "message": SECRET}],
            None,
            None,
        )
        pages = [
            client.get("/endpoints/iris-1-ep2/"),
            client.get("/endpoints/iris-1-ep2/status/", HTTP_HX_REQUEST="true"),
            client.get("/endpoints/iris-1-ep2/log/", HTTP_HX_REQUEST="true"),
            client.get("/endpoints/"),
            client.get("/jobs/iris-1/"),
        ]
    for page in pages:
        assert page.status_code == 200
        assert SECRET not in page.content.decode()
    detail = pages[0].content.decode()
    assert "&quot;API_TOKEN&quot;: &quot;&lt;secret: set at submit&gt;&quot;" in detail
    assert "API_TOKEN: secret." in detail and "offline" in detail


def test_a_deploy_form_sent_back_asks_for_the_secret_again(client, alice, job):
    client.force_login(alice)
    response, sent = post(client, "/jobs/iris-1/deploy/", deploy_form(name="bad name!", **secret_rows()))
    body = response.content.decode()
    assert response.status_code == 200 and SECRET not in body
    assert 'type="password" name="env-0-value"' in body
    sent["deploy"].assert_not_called()
    empty = secret_rows(**{"env-0-value": ""})
    response, sent = post(client, "/jobs/iris-1/deploy/", deploy_form(**empty))
    assert "Type the secret&#x27;s value" in response.content.decode()
    sent["deploy"].assert_not_called()


def test_the_deploy_view_keeps_posted_values_out_of_error_reports(rf, alice, job):
    from django.views.debug import SafeExceptionReporterFilter

    from jobs.endpoints import views

    request = rf.post("/jobs/iris-1/deploy/", deploy_form(**secret_rows()))
    request.user = alice
    with patch.object(views, "DeployForm", side_effect=RuntimeError("boom")), pytest.raises(RuntimeError):
        views.deploy_job(request, "iris-1")
    assert SafeExceptionReporterFilter().get_post_parameters(request)["env-0-value"] != SECRET
