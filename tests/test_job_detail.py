import json
from unittest.mock import patch

import pytest
from django.contrib.auth.models import User
from django.test import TestCase

from jobs.models import TrainingJob

pytestmark = pytest.mark.django_db

REQUEST = {
    "TrainingJobName": "iris-xgb-0001",
    "AlgorithmSpecification": {"TrainingImage": "anyjob/train:latest", "TrainingInputMode": "File"},
    "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
}


@pytest.fixture
def job(alice):
    return TrainingJob.objects.create(
        owner=alice,
        name="iris-xgb-0001",
        entry_point="train.py",
        status="InProgress",
        secondary_status="Training",
        hyperparameters=[{"key": "max_depth", "value": "5", "type": "number"}],
        channels=[{"name": "train", "uri": "s3://anyjob-data/iris/", "content_type": "text/csv"}],
        instance_type="ml.m5.xlarge",
        instance_count=2,
        volume_size_gb=30,
        output_path="s3://anyjob-artifacts/output",
        request=REQUEST,
        transitions=[
            {
                "Status": "Starting",
                "StartTime": "2026-11-20T10:00:00+00:00",
                "EndTime": "2026-11-20T10:02:15+00:00",
                "StatusMessage": "Preparing the instances",
            },
            {"Status": "Training", "StartTime": "2026-11-20T10:02:15+00:00", "StatusMessage": "Training"},
        ],
    )


def test_it_sends_anonymous_visitors_to_sign_in(client, job):
    response = client.get("/jobs/iris-xgb-0001/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/jobs/iris-xgb-0001/"


def test_it_shows_the_job(client, bob, job):
    client.force_login(bob)
    response = client.get("/jobs/iris-xgb-0001/")
    assert response.status_code == 200
    body = response.content.decode()
    assert '<span class="badge InProgress" id="status">InProgress</span>' in body
    assert '<span id="secondary-status">Training</span>' in body
    assert "max_depth" in body
    assert "s3://anyjob-data/iris/" in body
    assert "2 × ml.m5.xlarge" in body
    assert "s3://anyjob-artifacts/output" in body
    assert "2 min 15 s" in body  # the Starting step's duration
    assert "Preparing the instances" in body
    assert json.dumps(REQUEST, indent=2).replace('"', "&quot;") in body


def test_it_404s_for_an_unknown_job(client, alice):
    client.force_login(alice)
    assert client.get("/jobs/no-such-job/").status_code == 404
    assert client.get("/jobs/no-such-job/stop/").status_code == 404


def test_it_shows_the_failure_first_and_inert(client, alice):
    TrainingJob.objects.create(
        owner=alice,
        name="broken-0001",
        entry_point="train.py",
        status="Failed",
        failure_reason="AlgorithmError: <b>boom</b>",
        failure_text='Traceback (most recent call last):\n<script>alert("x")</script>\nValueError: bad',
        hyperparameters=[{"key": "<img src=x onerror=alert(1)>", "value": "1", "type": "string"}],
    )
    client.force_login(alice)
    body = client.get("/jobs/broken-0001/").content.decode()
    assert "<script>" not in body
    assert "<img src=x" not in body
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body
    assert "AlgorithmError: &lt;b&gt;boom&lt;/b&gt;" in body
    assert body.index('class="failure"') < body.index("Hyperparameters")


def test_it_links_a_clone_to_its_parent(client, alice, job):
    TrainingJob.objects.create(owner=alice, name="iris-xgb-0002", entry_point="train.py", parent=job)
    client.force_login(alice)
    response = client.get("/jobs/iris-xgb-0002/")
    assert b'href="/jobs/iris-xgb-0001/"' in response.content


@pytest.mark.parametrize(("user", "shown"), [("alice", True), ("bob", False), ("charlie", True)])
def test_the_stop_link_shows_for_the_owner_and_staff(client, alice, bob, charlie, job, user, shown):
    client.force_login(User.objects.get(username=user))
    response = client.get("/jobs/iris-xgb-0001/")
    assert (b'href="/jobs/iris-xgb-0001/stop/"' in response.content) is shown


def test_the_stop_link_hides_for_a_final_job(client, alice, job):
    TrainingJob.objects.filter(pk=job.pk).update(status="Completed")
    client.force_login(alice)
    assert b"/stop/" not in client.get("/jobs/iris-xgb-0001/").content


def test_the_stop_page_asks_to_confirm(client, alice, job):
    client.force_login(alice)
    with patch("jobs.tasks.stop_job_task.delay") as delay:
        response = client.get("/jobs/iris-xgb-0001/stop/")
    assert response.status_code == 200
    assert b"csrfmiddlewaretoken" in response.content
    assert b'method="post"' in response.content
    delay.assert_not_called()


@pytest.mark.parametrize("user", ["alice", "charlie"])
def test_the_owner_or_staff_stop_the_job(
    client, alice, charlie, job, user, django_capture_on_commit_callbacks
):
    client.force_login(User.objects.get(username=user))
    with (
        patch("jobs.tasks.stop_job_task.delay") as delay,
        django_capture_on_commit_callbacks(execute=True) as callbacks,
    ):
        response = client.post("/jobs/iris-xgb-0001/stop/")
    assert response.status_code == 302
    assert response["Location"] == "/jobs/iris-xgb-0001/"
    assert len(callbacks) == 1
    delay.assert_called_once_with(job.pk)


def test_a_teammate_cannot_stop_the_job(client, bob, job, django_capture_on_commit_callbacks):
    client.force_login(bob)
    with django_capture_on_commit_callbacks() as callbacks:
        assert client.post("/jobs/iris-xgb-0001/stop/").status_code == 403
        assert client.get("/jobs/iris-xgb-0001/stop/").status_code == 403
    assert callbacks == []


def test_stopping_a_final_job_sends_nothing(client, alice, job, django_capture_on_commit_callbacks):
    TrainingJob.objects.filter(pk=job.pk).update(status="Stopped")
    client.force_login(alice)
    with django_capture_on_commit_callbacks() as callbacks:
        assert client.post("/jobs/iris-xgb-0001/stop/").status_code == 302
    assert callbacks == []


def test_the_stop_endpoint_refuses_other_methods(client, alice, job):
    client.force_login(alice)
    assert client.put("/jobs/iris-xgb-0001/stop/").status_code == 405
    assert client.delete("/jobs/iris-xgb-0001/stop/").status_code == 405


def test_the_status_fragment_polls_until_final_then_brings_the_final_panels(client, bob, job):
    client.force_login(bob)
    fragment = client.get("/jobs/iris-xgb-0001/status/", HTTP_HX_REQUEST="true")
    assert b'hx-trigger="every 2s"' in fragment.content
    assert b"?was=InProgress" in fragment.content
    TrainingJob.objects.filter(pk=job.pk).update(status="Failed", failure_reason="AlgorithmError: <x>")
    final = client.get("/jobs/iris-xgb-0001/status/?was=InProgress", HTTP_HX_REQUEST="true")
    body = final.content.decode()
    assert 'hx-trigger="every 2s"' not in body
    assert '<div id="failure-slot" hx-swap-oob="true">' in body and "AlgorithmError: &lt;x&gt;" in body
    assert '<div id="artifacts-slot" hx-swap-oob="true">' in body
    # Already final when the page was drawn: the fragment answers without a trigger.
    final = client.get("/jobs/iris-xgb-0001/status/?was=Failed", HTTP_HX_REQUEST="true")
    assert b"hx-trigger" not in final.content and b"hx-swap-oob" not in final.content


def test_a_job_not_submitted_has_no_log_and_shows_the_request_to_come(client, alice):
    TrainingJob.objects.create(owner=alice, name="waiting-1", entry_point="train.py")
    client.force_login(alice)
    body = client.get("/jobs/waiting-1/").content.decode()
    assert '<pre class="log" id="log-lines"></pre>' in body  # shows "No log yet."
    assert "Not submitted yet: this is the request that will be sent." in body


def test_a_bad_log_token_is_a_400_not_a_500(client, alice, job):
    client.force_login(alice)
    assert client.get("/jobs/iris-xgb-0001/log/?token=" + "x" * 9000).status_code == 400
    # Unknown to the backend: an empty answer that keeps polling.
    response = client.get("/jobs/iris-xgb-0001/log/?token=garbage", HTTP_HX_REQUEST="true")
    assert response.status_code == 200


@pytest.mark.parametrize(("user", "status"), [("alice", 200), ("bob", 403), ("charlie", 200)])
def test_only_the_owner_or_staff_clone(client, alice, bob, charlie, job, user, status):
    client.force_login(User.objects.get(username=user))
    assert client.get("/jobs/iris-xgb-0001/clone/").status_code == status
    body = client.get("/jobs/iris-xgb-0001/").content.decode()
    assert ('href="/jobs/iris-xgb-0001/clone/"' in body) is (status == 200)


def test_a_clone_posted_by_a_teammate_is_refused(client, bob, job):
    from tests.test_new_job import form, submit, upload

    client.force_login(bob)
    response, delay = submit(client, form(name="sneaky-1", parent=job.name), [upload()])
    assert response.status_code == 200
    assert "Only the owner of a job (or staff) can clone it." in response.content.decode()
    delay.assert_not_called()


def test_a_submit_failed_job_can_be_resubmitted_by_its_owner(client, alice, bob, job):
    TrainingJob.objects.filter(pk=job.pk).update(status="SubmitFailed", error="ResourceLimitExceeded: <x>")
    client.force_login(bob)
    assert client.post("/jobs/iris-xgb-0001/resubmit/").status_code == 403
    client.force_login(alice)
    body = client.get("/jobs/iris-xgb-0001/").content.decode()
    assert "ResourceLimitExceeded: &lt;x&gt;" in body and "Resubmit" in body
    with patch("jobs.tasks.submit_job_task.delay") as delay, TestCase.captureOnCommitCallbacks(execute=True):
        response = client.post("/jobs/iris-xgb-0001/resubmit/")
    assert response.status_code == 302
    delay.assert_called_once_with(job.pk)
    assert client.get("/jobs/iris-xgb-0001/resubmit/").status_code == 405


def test_pages_of_an_unknown_job_are_404(client, alice):
    client.force_login(alice)
    for suffix in ["status/", "log/", "artifacts/", "artifacts/model/", "artifacts/model/x.txt", "clone/"]:
        assert client.get(f"/jobs/nope/{suffix}").status_code == 404, suffix
    assert client.post("/jobs/nope/resubmit/").status_code == 404


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.68, "0.7 s"),
        (42, "42 s"),
        (185, "3 min 05 s"),
        (7380, "2 h 03 min"),
        (273_600, "3 d 4 h"),
        (None, ""),
    ],
)
def test_durations_read_like_people_write_them(value, shown):
    from jobs.templatetags.jobs_extras import seconds

    assert seconds(value) == shown


# --- secret environment variables ---------------------------------------------------------------

SECRET = "hunter2-sk-live-0123456789"


@pytest.fixture
def secret_job(alice):
    environment = {"API_TOKEN": SECRET, "MODE": "offline"}
    return TrainingJob.objects.create(
        owner=alice,
        name="secret-0001",
        entry_point="train.py",
        status="Failed",
        environment=environment,
        secret_environment=["API_TOKEN"],
        request={**REQUEST, "TrainingJobName": "secret-0001", "Environment": environment},
        failure_reason=f"AlgorithmError: could not log in with {SECRET}",
        failure_text=f"Traceback\nValueError: token {SECRET} refused",
        error=f"AWS refused the request: Value '{{API_TOKEN={SECRET}}}' at 'environment'",
    )


def log_backend(*messages: str):
    backend = patch("jobs.detail.get_backend").start()
    events = [{"timestamp": 0, "message": m, "logStreamName": "algo-1"} for m in messages]
    backend.return_value.tail_training_logs.return_value = (events, "token", False)
    backend.return_value.get_training_logs.side_effect = [{"events": events, "nextForwardToken": "t"}, {}]
    return backend


def test_a_secret_value_is_never_on_the_job_page(client, bob, secret_job):
    client.force_login(bob)
    try:
        log_backend(f"using token {SECRET}", "MODE=offline")
        body = client.get("/jobs/secret-0001/").content.decode()
    finally:
        patch.stopall()
    assert SECRET not in body
    assert "&lt;secret: set at submit&gt;" in body
    assert "offline" in body  # the other variables are shown as they are
    assert "API_TOKEN: secret, sent with the request and never shown again" in body
    assert 'id="code-secret-note"' in body and "put it in before running this" in body
    assert "using token &lt;secret: set at submit&gt;" in body


def test_view_as_code_shows_the_placeholder_in_valid_json_and_python(client, alice, secret_job):
    import ast
    import html
    import re

    client.force_login(alice)
    body = client.get("/jobs/secret-0001/").content.decode()
    request_json = html.unescape(re.search(r'<pre id="request">(.*?)</pre>', body, re.S)[1])
    assert json.loads(request_json)["Environment"] == {
        "API_TOKEN": "<secret: set at submit>",
        "MODE": "offline",
    }
    code = html.unescape(
        re.search(r'<details id="as-boto3"><summary>boto3</summary><pre>(.*?)</pre>', body, re.S)[1]
    )
    ast.parse(code)
    assert "# <secret: set at submit> stands for a secret value" in code
    assert (
        "aws sagemaker create-training-job --region us-east-1 --cli-input-json file://secret-0001.json"
        in body
    )


def test_a_job_not_submitted_yet_shows_the_request_to_come_without_the_secret(client, alice):
    TrainingJob.objects.create(
        owner=alice,
        name="waiting-2",
        entry_point="train.py",
        environment={"API_TOKEN": SECRET},
        secret_environment=["API_TOKEN"],
    )
    client.force_login(alice)
    body = client.get("/jobs/waiting-2/").content.decode()
    assert "Not submitted yet" in body and SECRET not in body and "&lt;secret: set at submit&gt;" in body


def test_the_status_fragment_and_the_log_never_carry_the_secret(client, bob, secret_job):
    client.force_login(bob)
    try:
        log_backend(f"using token {SECRET}")
        final = client.get("/jobs/secret-0001/status/?was=InProgress", HTTP_HX_REQUEST="true")
        poll = client.get("/jobs/secret-0001/log/?token=x", HTTP_HX_REQUEST="true")
    finally:
        patch.stopall()
    try:
        log_backend(f"using token {SECRET}")
        download = b"".join(client.get("/jobs/secret-0001/log/?format=text").streaming_content).decode()
    finally:
        patch.stopall()
    for body in (final.content.decode(), poll.content.decode(), download):
        assert SECRET not in body
        assert "secret: set at submit" in body


def test_the_changes_against_the_parent_name_a_secret_never_its_value(client, alice, secret_job):
    TrainingJob.objects.create(
        owner=alice,
        name="secret-0002",
        entry_point="train.py",
        parent=secret_job,
        environment={"API_TOKEN": "another-secret-value", "MODE": "online", "DEBUG": "1"},
        secret_environment=["API_TOKEN"],
    )
    client.force_login(alice)
    body = client.get("/jobs/secret-0002/").content.decode()
    assert SECRET not in body and "another-secret-value" not in body
    assert "environment variable MODE: &#x27;offline&#x27; → &#x27;online&#x27;" in body
    assert "environment variable DEBUG added: &#x27;1&#x27;" in body
    assert "environment variable API_TOKEN" not in body  # secret on both sides: nothing to say
