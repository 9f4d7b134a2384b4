"""Requests that used to fail badly (a bare 400, a lost form, a field without a message, a 500),
one class of mistake at a time, each tried with several instances."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from jobs.endpoints.models import Endpoint, Invocation
from jobs.models import TrainingJob
from tests.test_endpoint_pages import post
from tests.test_new_job import form, submit

pytestmark = pytest.mark.django_db
MiB = 1024 * 1024


@pytest.fixture
def endpoint(alice) -> Endpoint:
    job = TrainingJob.objects.create(owner=alice, name="iris-1", entry_point="train.py", status="Completed")
    return Endpoint.objects.create(
        name="iris-1-ep",
        job=job,
        owner=alice,
        inference_entry_point="inference.py",
        instance_type="ml.m5.large",
        status="InService",
    )


def invoke(client, **fields):
    data = {"body": "{}", "content_type": "application/json", "expect": "status", "expected_status": "200"}
    data.update(fields)
    return post(client, "/endpoints/iris-1-ep/invoke/", data)


def typed_json(size: int) -> str:
    return json.dumps({"x": "a" * (size - 8)})


def test_a_typed_body_up_to_six_mib_is_sent(client, alice, endpoint):
    client.force_login(alice)
    body = typed_json(5 * MiB)
    response, sent = invoke(client, body=body)
    assert response.status_code == 302 and sent["invoke"].call_count == 1
    assert len(bytes(Invocation.objects.get().body)) == len(body)


def test_a_typed_body_over_six_mib_gets_the_limit_and_keeps_the_form(client, alice, endpoint):
    client.force_login(alice)
    response, sent = invoke(client, body=typed_json(7 * MiB), accept="text/csv", save_as="big one")
    page = response.content.decode()
    assert response.status_code == 200 and sent["invoke"].call_count == 0
    assert "SageMaker takes at most 6 MiB (6,291,456 bytes)" in page
    assert 'value="text/csv"' in page and 'value="big one"' in page  # the form as sent


@pytest.mark.parametrize("size", [9 * MiB, 20 * MiB])
def test_a_form_too_large_to_read_names_the_limits(alice, endpoint, size):
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    response = client.post("/endpoints/iris-1-ep/invoke/", {"body": "x" * size, "content_type": "text/plain"})
    assert response.status_code == 413
    page = response.content.decode()
    assert "larger than 8 MiB" in page and "SageMaker&#x27;s 6 MiB" in page


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"save_as": "t", "expect": "bogus"}, "Select a valid choice"),
        ({"save_as": "t", "expect": "json", "json_path": "a", "tolerance": "abc"}, "Enter a number"),
        (
            {"save_as": "t", "expect": "json", "json_path": "a", "tolerance": "-1"},
            "greater than or equal to 0",
        ),
        (
            {"save_as": "t", "expect": "json", "json_path": "a", "expected_value": "1" * 10_001},
            "at most 10000",
        ),
        ({"save_as": "a\x07b"}, "without control characters"),
        ({"save_as": "x" * 101}, "at most 100 characters"),
        ({"save_as": "t", "expected_status": "99"}, "greater than or equal to 100"),
    ],
)
def test_every_invocation_field_says_what_is_wrong(client, alice, endpoint, fields, message):
    client.force_login(alice)
    response, sent = invoke(client, **fields)
    page = response.content.decode()
    assert response.status_code == 200 and sent["invoke"].call_count == 0
    assert message in page
    # the test section is open, so the message is seen
    assert page.index("<summary>Save as a test") > page.index("<details open")


@pytest.mark.parametrize("key", ["lr=0.1", "a=", "=b"])
def test_a_hyperparameter_key_that_cannot_be_a_variable_is_refused_next_to_it(client, alice, key):
    client.force_login(alice)
    data = form(
        hyperparameters=[
            {"key": "epochs", "value": "1", "type": "number"},
            {"key": key, "value": "", "type": "string"},
        ]
    )
    response, delay = submit(client, data)
    assert response.status_code == 200 and not delay.called
    errors = response.context["page"].hyperparameters.forms[1].errors["key"]
    assert "cannot contain '='" in errors[0] and "SM_HP_" in errors[0]
    if key == "lr=0.1":
        assert "the key 'lr' with the value '0.1'" in errors[0]


# --- classes of 500s ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "created_to=9999-12-31",
        "created_from=9999-12-31",
        "created_from=0001-01-01",
        "created_from=0001-01-01&created_to=9999-12-31",
        "created_to=10000-01-01",
        "created_from=2026-02-30",
        "created_from=-1",
    ],
)
def test_any_date_in_the_history_filter_is_an_answer(alice, query):
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    for fmt in ("", "&format=csv", "&format=json"):
        response = client.get(f"/jobs/?{query}{fmt}")
        assert response.status_code == 200, (query, fmt)
    page = client.get(f"/jobs/?{query}").content.decode()
    assert "Pick a date" in page or "Enter a valid date" in page


@pytest.mark.parametrize(
    "tampered",
    [
        {"parent": "../.."},
        {"parent": "no/such"},
        {"parent": "x" * 500},
        {"parent": "<script>"},
        {"parent": "no-such-job"},
        {"source_sha256": "../../etc"},
        {"instance_type": "ml.bogus"},
        {"hp-0-type": "bogus"},
        {"ch-0-input_mode": "bogus"},
        {"env-0-secret": "maybe"},
        {"hp-TOTAL_FORMS": "abc"},
        {"hp-TOTAL_FORMS": "-5"},
        {"hp-INITIAL_FORMS": "99999999999999999999"},
    ],
)
def test_a_tampered_hidden_or_choice_field_is_refused_not_a_500(alice, tampered):
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    data = form(
        hyperparameters=[{"key": "epochs", "value": "1", "type": "number"}],
        channels=[{"name": "train", "uri": "s3://bucket/data/"}],
        environment=[{"key": "A", "value": "b"}],
    )
    data.update(tampered)
    response, delay = submit(client, data)
    assert response.status_code == 200 and not delay.called
    assert 'class="errors"' in response.content.decode()


@pytest.mark.parametrize(
    "path",
    [
        "/static/../webapp/settings.py",
        "/static/%2e%2e/webapp/settings.py",
        "/static/..%2f..%2fetc%2fpasswd",
        "/static/a/../../../etc/passwd",
        "/static/..",
        "/code/" + "a" * 64 + "/../../etc/passwd",
        "/code/" + "a" * 64 + "/..%2f..%2fetc%2fpasswd",
        "/jobs/iris-1/artifacts/model/../../../etc/passwd",
        "/jobs/iris-1/artifacts/model/..%2f..%2fetc%2fpasswd",
        "/jobs/..%2f..%2fetc/",
    ],
)
def test_a_path_with_dot_dots_is_not_found_never_a_500(alice, path):
    TrainingJob.objects.get_or_create(owner=alice, name="iris-1", entry_point="train.py", status="Completed")
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    assert client.get(path).status_code in (400, 404), path
