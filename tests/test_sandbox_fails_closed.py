"""The local backend fails closed, visibly: where the sandbox cannot run, a system check error
names the cause and the fix, the new-job and deploy pages say so and submit nothing, and the
backend refuses to start jobs and endpoints; ``ANYJOB_SANDBOX=off`` is a warning and a banner
on every page.

"Cannot run" is simulated here by making ``sandbox.isolation_problem`` give a reason; the
attack suite (``tests/local/``) makes bubblewrap really unusable.
"""

from __future__ import annotations

import io

import pytest
from botocore.exceptions import ClientError
from django.core import checks as django_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from jobs.backends.local import sandbox
from jobs.backends.local.backend import LocalBackend
from jobs.backends.local.models import LocalEndpoint, LocalTrainingJob
from jobs.endpoints.models import Endpoint
from jobs.models import TrainingJob
from tests.test_endpoint_pages import deploy_form
from tests.test_endpoint_pages import post as post_deploy
from tests.test_new_job import form, submit, upload

pytestmark = pytest.mark.django_db

REASON = "bubblewrap (bwrap) is not installed"
FIXES = (
    "apt-get install bubblewrap",
    "run anyjob as root so each job gets its own uid",
    "ANYJOB_SANDBOX=off",
)


@pytest.fixture
def broken_sandbox(monkeypatch: pytest.MonkeyPatch) -> str:
    """The default mode (on), on a machine where the sandbox cannot be built."""
    monkeypatch.delenv("ANYJOB_SANDBOX", raising=False)
    monkeypatch.setattr(sandbox, "isolation_problem", lambda: REASON)
    return REASON


@pytest.fixture
def sandbox_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYJOB_SANDBOX", "off")


@pytest.fixture
def job(alice) -> TrainingJob:
    return TrainingJob.objects.create(
        owner=alice,
        name="iris-1",
        entry_point="train.py",
        status="Completed",
        source_uri="file:///tmp/code/sourcedir.tar.gz",
        model_artifacts="file:///tmp/out/iris-1/output/model.tar.gz",
    )


def anyjob_messages() -> dict[str, django_checks.CheckMessage]:
    return {m.id: m for m in django_checks.run_checks() if (m.id or "").startswith("anyjob.")}


# -- the system check ----------------------------------------------------------------------------


def test_a_sandbox_that_cannot_run_is_an_error_naming_the_cause_and_the_fix(broken_sandbox) -> None:
    problem = anyjob_messages()["anyjob.E031"]
    assert problem.level == django_checks.ERROR
    assert REASON in problem.msg and "refuses to run any" in problem.msg
    for fix in FIXES:
        assert fix in problem.hint
    with pytest.raises(SystemCheckError, match="bubblewrap"):
        call_command("check")


def test_turning_the_sandbox_off_is_a_warning_not_an_error(sandbox_off) -> None:
    found = anyjob_messages()
    assert "anyjob.E031" not in found
    warning = found["anyjob.W031"]
    assert warning.level == django_checks.WARNING
    assert "unsandboxed, as the service user" in warning.msg
    out = io.StringIO()
    call_command("check", stdout=out, stderr=out)  # runs: a warning does not stop the server
    assert "anyjob.W031" in out.getvalue()


def test_a_mode_that_is_not_one_is_an_error(monkeypatch) -> None:
    monkeypatch.setenv("ANYJOB_SANDBOX", "sometimes")
    problem = anyjob_messages()["anyjob.E030"]
    assert "ANYJOB_SANDBOX" in problem.msg and "sometimes" in problem.msg


def test_on_a_machine_where_it_runs_there_is_nothing_to_say(monkeypatch) -> None:
    monkeypatch.delenv("ANYJOB_SANDBOX", raising=False)
    monkeypatch.setattr(sandbox, "isolation_problem", lambda: None)
    assert not {"anyjob.E030", "anyjob.E031", "anyjob.W031"} & set(anyjob_messages())


def test_the_sagemaker_backend_does_not_care(broken_sandbox, settings) -> None:
    settings.ANYJOB_BACKEND = "sagemaker"
    assert "anyjob.E031" not in anyjob_messages()


# -- the backend refuses ---------------------------------------------------------------------------


def test_the_backend_refuses_to_start_jobs_and_endpoints(broken_sandbox, tmp_path) -> None:
    backend = LocalBackend()
    request = {
        "TrainingJobName": "refused-1",
        "AlgorithmSpecification": {"TrainingImage": "anyjob/generic:latest", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::000000000000:role/anyjob-local",
        "OutputDataConfig": {"S3OutputPath": tmp_path.as_uri()},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
    }
    with pytest.raises(ClientError) as caught:
        backend.create_training_job(request)
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationException" and caught.value.operation_name == "CreateTrainingJob"
    assert REASON in error["Message"] and all(fix in error["Message"] for fix in FIXES)
    assert not LocalTrainingJob.objects.exists()

    container = {"Image": "anyjob/generic:latest", "ModelDataUrl": (tmp_path / "model.tar.gz").as_uri()}
    backend.create_model(
        {"ModelName": "m", "ExecutionRoleArn": request["RoleArn"], "PrimaryContainer": container}
    )
    variant = {
        "VariantName": "AllTraffic",
        "ModelName": "m",
        "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1,
    }
    backend.create_endpoint_config({"EndpointConfigName": "m", "ProductionVariants": [variant]})
    with pytest.raises(ClientError) as caught:
        backend.create_endpoint({"EndpointName": "m", "EndpointConfigName": "m"})
    assert caught.value.operation_name == "CreateEndpoint"
    assert REASON in caught.value.response["Error"]["Message"]
    assert not LocalEndpoint.objects.exists()


# -- the pages say it before anyone submits -------------------------------------------------------


def test_the_new_job_page_says_it_and_submits_nothing(broken_sandbox, client, alice) -> None:
    client.force_login(alice)
    body = client.get("/new/").content.decode()
    assert 'id="config-problems"' in body and REASON in body
    assert "apt-get install bubblewrap" in body
    response, delay = submit(client, form(), [upload()])
    assert response.status_code == 200
    assert "anyjob is not configured to submit jobs: see the problems above." in response.content.decode()
    assert not TrainingJob.objects.exists()
    delay.assert_not_called()


def test_the_deploy_page_says_it_and_deploys_nothing(broken_sandbox, client, alice, job) -> None:
    client.force_login(alice)
    body = client.get("/jobs/iris-1/deploy/").content.decode()
    assert 'id="config-problems"' in body and REASON in body
    assert "ANYJOB_SANDBOX=off" in body
    response, sent = post_deploy(client, "/jobs/iris-1/deploy/", deploy_form())
    assert response.status_code == 200
    assert (
        "anyjob is not configured to deploy endpoints: see the problems above." in response.content.decode()
    )
    assert not Endpoint.objects.exists()
    sent["deploy"].assert_not_called()


# -- off: a banner on every page, and work goes on -------------------------------------------------


def test_with_the_sandbox_off_every_page_carries_a_banner(sandbox_off, client, alice, job) -> None:
    assert 'id="sandbox-off"' in client.get("/accounts/login/").content.decode()
    client.force_login(alice)
    for url in ["/", "/jobs/", "/new/", "/jobs/iris-1/", "/jobs/iris-1/deploy/", "/endpoints/"]:
        response = client.get(url, follow=True)
        assert response.status_code == 200, url
        body = response.content.decode()
        assert 'id="sandbox-off"' in body, url
        assert "jobs and endpoints run unsandboxed, as the service user" in body, url


def test_with_the_sandbox_off_jobs_are_still_submitted(sandbox_off, client, alice) -> None:
    client.force_login(alice)
    assert 'id="config-problems"' not in client.get("/new/").content.decode()
    response, delay = submit(client, form(), [upload()])
    assert response.status_code == 302, response.content.decode()[-2000:]
    delay.assert_called_once()


def test_with_the_sandbox_on_there_is_no_banner(client, alice, monkeypatch) -> None:
    monkeypatch.delenv("ANYJOB_SANDBOX", raising=False)
    monkeypatch.setattr(sandbox, "isolation_problem", lambda: None)
    client.force_login(alice)
    assert 'id="sandbox-off"' not in client.get("/jobs/").content.decode()
