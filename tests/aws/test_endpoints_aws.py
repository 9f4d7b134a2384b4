"""Endpoints on the sagemaker backend: deploy, describe, invoke and delete through Stubber."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from jobs.backends.sagemaker import SageMakerBackend
from jobs.endpoints import tasks
from jobs.endpoints.models import Endpoint, Invocation, SavedTest
from jobs.models import TrainingJob
from tests.aws.conftest import BUCKET, IMAGE, ROLE

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
EP_ARN = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/"


@pytest.fixture
def runtime(stubs, monkeypatch):
    client = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("sagemaker-runtime")
    backend = SageMakerBackend(sagemaker=stubs.sagemaker_client, logs=stubs.logs_client, runtime=client)
    monkeypatch.setattr("jobs.endpoints.tasks.get_backend", lambda: backend)
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


@pytest.fixture
def endpoint(alice):
    job = TrainingJob.objects.create(
        owner=alice,
        name="iris-1",
        entry_point="train.py",
        status="Completed",
        source_uri=f"s3://{BUCKET}/anyjob/iris-1/source/sourcedir.tar.gz",
        model_artifacts=f"s3://{BUCKET}/anyjob/output/iris-1/output/model.tar.gz",
    )
    return Endpoint.objects.create(
        name="iris-1-ep",
        job=job,
        owner=alice,
        inference_entry_point="inference.py",
        instance_type="ml.m5.large",
        instance_count=2,
        environment={"LOG_PREDICTIONS": "1"},
    )


def described(status: str, **extra) -> dict:
    return {
        "EndpointName": "iris-1-ep",
        "EndpointArn": EP_ARN + "iris-1-ep",
        "EndpointConfigName": "iris-1-ep",
        "EndpointStatus": status,
        "CreationTime": T0,
        "LastModifiedTime": T0,
        **extra,
    }


def test_the_whole_cycle_deploy_serve_test_delete(stubs, runtime, endpoint, alice):
    SavedTest.objects.create(
        job=endpoint.job,
        owner=alice,
        name="smoke",
        body=b'{"x": [1, 2]}',
        expect="json",
        json_path="predictions[0]",
        expected_value="3.5",
        tolerance=0.01,
    )
    sm = stubs.sagemaker
    sm.add_response(
        "create_model",
        {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/iris-1-ep"},
        {
            "ModelName": "iris-1-ep",
            "ExecutionRoleArn": ROLE,
            "PrimaryContainer": {
                "Image": IMAGE,
                "ModelDataUrl": f"s3://{BUCKET}/anyjob/output/iris-1/output/model.tar.gz",
                "Environment": {
                    "SAGEMAKER_PROGRAM": "inference.py",
                    "SAGEMAKER_SUBMIT_DIRECTORY": f"s3://{BUCKET}/anyjob/iris-1/source/sourcedir.tar.gz",
                    "SAGEMAKER_REGION": "us-east-1",
                    "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
                    "LOG_PREDICTIONS": "1",
                },
            },
            "Tags": [{"Key": "anyjob:endpoint-id", "Value": str(endpoint.pk)}],
        },
    )
    sm.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/iris-1-ep"},
        {
            "EndpointConfigName": "iris-1-ep",
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "iris-1-ep",
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 2,
                }
            ],
            "Tags": [{"Key": "anyjob:endpoint-id", "Value": str(endpoint.pk)}],
        },
    )
    sm.add_response(
        "create_endpoint",
        {"EndpointArn": EP_ARN + "iris-1-ep"},
        {
            "EndpointName": "iris-1-ep",
            "EndpointConfigName": "iris-1-ep",
            "Tags": [{"Key": "anyjob:endpoint-id", "Value": str(endpoint.pk)}],
        },
    )
    assert tasks.deploy_endpoint(endpoint.pk) == "creating"
    endpoint.refresh_from_db()
    assert endpoint.status == "Creating" and set(endpoint.requests) == {
        "CreateModel",
        "CreateEndpointConfig",
        "CreateEndpoint",
    }
    # The poller: still Creating, then InService, which runs the job's saved suite.
    sm.add_response("describe_endpoint", described("Creating"), {"EndpointName": "iris-1-ep"})
    assert tasks.poll_endpoints() == 1
    sm.add_response("describe_endpoint", described("InService"), {"EndpointName": "iris-1-ep"})
    answer = b'{"predictions": [3.504]}'
    runtime.add_response(
        "invoke_endpoint",
        {
            "Body": StreamingBody(io.BytesIO(answer), len(answer)),
            "ContentType": "application/json",
            "InvokedProductionVariant": "AllTraffic",
        },
        {"EndpointName": "iris-1-ep", "Body": b'{"x": [1, 2]}', "ContentType": "application/json"},
    )
    from unittest.mock import patch

    with patch.object(
        tasks.run_suite_task, "delay", side_effect=lambda pk, owner: tasks.run_suite(pk, owner)
    ):
        tasks.poll_endpoints()
    endpoint.refresh_from_db()
    assert endpoint.status == "InService" and endpoint.in_service_at is not None
    run = Invocation.objects.get(test__name="smoke")
    assert run.status == "Done" and run.status_code == 200 and run.passed is True
    assert run.verdict == "predictions[0] = 3.504"
    # A handler error: ModelError 424 carrying the container's own status and message.
    runtime.add_client_error(
        "invoke_endpoint",
        service_error_code="ModelError",
        service_message='Received client error (400) from primary with message "bad input"',
        http_status_code=424,
        modeled_fields={"OriginalStatusCode": 400, "OriginalMessage": "bad input <b>"},
        expected_params={"EndpointName": "iris-1-ep", "Body": b"[]", "ContentType": "application/json"},
    )
    failing = Invocation.objects.create(
        endpoint=endpoint, owner=alice, body=b"[]", content_type="application/json"
    )
    assert tasks.run_invocation(failing.pk) == "Error"
    failing.refresh_from_db()
    assert failing.status_code == 400 and bytes(failing.response_body) == b"bad input <b>"
    assert failing.error == "ModelError: the container answered 400"
    # Delete: the endpoint, its config and its model; Deleted once AWS no longer knows it.
    sm.add_response("delete_endpoint", {}, {"EndpointName": "iris-1-ep"})
    sm.add_response("delete_endpoint_config", {}, {"EndpointConfigName": "iris-1-ep"})
    sm.add_response("delete_model", {}, {"ModelName": "iris-1-ep"})
    sm.add_client_error(
        "describe_endpoint",
        "ValidationException",
        "Could not find endpoint",
        400,
        expected_params={"EndpointName": "iris-1-ep"},
    )
    assert tasks.start_delete(endpoint)
    assert tasks.delete_endpoint(endpoint.pk) == "Deleted"
    endpoint.refresh_from_db()
    assert endpoint.status == "Deleted" and endpoint.deleted_at is not None


def test_a_refused_deploy_says_why_in_one_line(stubs, runtime, endpoint):
    stubs.sagemaker.add_client_error(
        "create_model",
        "ResourceLimitExceeded",
        "The account-level service limit 'ml.m5.large for endpoint usage' is 0",
        400,
    )
    assert tasks.deploy_endpoint(endpoint.pk) == "failed"
    endpoint.refresh_from_db()
    assert endpoint.status == "DeployFailed" and endpoint.error.startswith("An AWS quota is reached")


def test_a_name_taken_by_someone_elses_model_in_another_case_fails_the_deploy(stubs, runtime, endpoint):
    # AWS answers that the model exists (someone's iris-1-EP): its tags say it is not this row's.
    model_arn = "arn:aws:sagemaker:us-east-1:123456789012:model/iris-1-ep"
    stubs.sagemaker.add_client_error(
        "create_model", "ValidationException", f'Cannot create already existing model "{model_arn}".', 400
    )
    stubs.sagemaker.add_response(
        "describe_model",
        {"ModelName": "iris-1-EP", "ModelArn": model_arn, "CreationTime": T0, "ExecutionRoleArn": ROLE},
        {"ModelName": "iris-1-ep"},
    )
    stubs.sagemaker.add_response(
        "list_tags",
        {"Tags": [{"Key": "anyjob:endpoint-id", "Value": str(endpoint.pk + 1)}]},
        {"ResourceArn": model_arn, "MaxResults": 100},
    )
    assert tasks.deploy_endpoint(endpoint.pk) == "failed"
    endpoint.refresh_from_db()
    assert endpoint.status == "DeployFailed"
    assert endpoint.error.startswith("The name 'iris-1-ep' is taken: a model of that name exists already")


def test_a_lost_answer_continues_once_the_endpoint_is_proved_this_rows(stubs, runtime, endpoint):
    for call, arn_key, kind in (
        ("model", "ModelArn", "model"),
        ("endpoint_config", "EndpointConfigArn", "endpoint-config"),
        ("endpoint", "EndpointArn", "endpoint"),
    ):
        arn = f"arn:aws:sagemaker:us-east-1:123456789012:{kind}/iris-1-ep"
        stubs.sagemaker.add_client_error(
            f"create_{call}", "ValidationException", f'Cannot create already existing {kind} "{arn}".', 400
        )
        name_key = {"model": "ModelName", "endpoint_config": "EndpointConfigName", "endpoint": "EndpointName"}
        answer = {name_key[call]: "iris-1-ep", arn_key: arn, "CreationTime": T0}
        if call == "endpoint":
            answer = described("Creating")
        elif call == "model":
            answer["ExecutionRoleArn"] = ROLE
        else:
            answer["ProductionVariants"] = [{"VariantName": "AllTraffic", "ModelName": "iris-1-ep"}]
        stubs.sagemaker.add_response(f"describe_{call}", answer, {name_key[call]: "iris-1-ep"})
        stubs.sagemaker.add_response(
            "list_tags",
            {"Tags": [{"Key": "anyjob:endpoint-id", "Value": str(endpoint.pk)}]},
            {"ResourceArn": answer[arn_key], "MaxResults": 100},
        )
    assert tasks.deploy_endpoint(endpoint.pk) == "creating"


def test_an_endpoint_that_fails_to_start_keeps_its_reason(stubs, runtime, endpoint):
    Endpoint.objects.filter(pk=endpoint.pk).update(status="Creating")
    stubs.sagemaker.add_response(
        "describe_endpoint",
        described(
            "Failed",
            FailureReason="The primary container for production variant AllTraffic did not pass the ping "
            "health check.",
        ),
        {"EndpointName": "iris-1-ep"},
    )
    tasks.poll_endpoints()
    endpoint.refresh_from_db()
    assert endpoint.status == "Failed" and "ping health check" in endpoint.failure_reason


def test_oversized_requests_are_refused_before_sending(stubs, runtime, endpoint, alice):
    Endpoint.objects.filter(pk=endpoint.pk).update(status="InService")
    big = Invocation.objects.create(
        endpoint=endpoint, owner=alice, body=b"x" * 6_291_457, content_type="text/plain"
    )
    assert tasks.run_invocation(big.pk) == "Error"  # no invoke_endpoint stubbed: nothing was sent
    big.refresh_from_db()
    assert big.error.startswith("AWS refused the request:") and "6291456" in big.error


def test_endpoint_logs_come_from_cloudwatch(stubs, runtime, endpoint):
    group = "/aws/sagemaker/Endpoints/iris-1-ep"
    stubs.logs.add_response(
        "describe_log_streams",
        {"logStreams": [{"logStreamName": "AllTraffic/i-0abc"}]},
        {"logGroupName": group},
    )
    stubs.logs.add_response(
        "get_log_events",
        {
            "events": [{"timestamp": 1, "message": "model loaded", "ingestionTime": 1}],
            "nextForwardToken": "f/1",
        },
        {"logGroupName": group, "logStreamName": "AllTraffic/i-0abc", "startFromHead": True, "limit": 100},
    )
    backend = SageMakerBackend(sagemaker=stubs.sagemaker_client, logs=stubs.logs_client)
    page = backend.get_endpoint_logs("iris-1-ep", None, 100)
    assert [e["message"] for e in page["events"]] == ["model loaded"]
