"""A model, an endpoint config and an endpoint made through ``/aws``, served by a real local
endpoint: the ``endpoint_in_service`` and ``endpoint_deleted`` waiters, sagemaker-runtime's
``InvokeEndpoint`` with boto3 (answers, headers, ``ModelError`` 424, the runtime's limits), the
endpoints page showing the API's endpoint, and the owner rule on deleting."""

from __future__ import annotations

import json
import uuid

import pytest
from django.conf import settings

from jobs.endpoints.models import Endpoint
from tests.api.sagemaker_support import (  # noqa: F401 - fixtures
    FAST_WAITER,
    ROLE,
    client_for_fixture,
    error_of,
    image_env,
    no_proxy,
    training_request,
    upload_code,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TRAIN = (
    "import json, os\n"
    "print('training', flush=True)\n"
    "open(os.path.join(os.environ['SM_MODEL_DIR'], 'model.json'), 'w').write(json.dumps({'scale': 3}))\n"
)
INFERENCE = """\
import json, os


def model_fn(model_dir):
    with open(os.path.join(model_dir, "model.json")) as fh:
        return json.load(fh)


def input_fn(body, content_type, context):
    context.response_custom_attributes = "seen=" + (context.custom_attributes or "")
    return json.loads(body)


def predict_fn(data, model):
    if data == "raise":
        raise ValueError("this input is not welcome")
    return [x * model["scale"] for x in data]


def output_fn(prediction, accept):
    return json.dumps(prediction).encode(), "application/json"
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_an_endpoint_made_through_the_api_serves_and_is_deleted(client_for, alice, bob, client) -> None:
    sm = client_for(alice)
    job_name = unique("to-serve")
    code = upload_code(job_name, {"train.py": TRAIN, "inference.py": INFERENCE})
    sm.create_training_job(**training_request(job_name, code))
    sm.get_waiter("training_job_completed_or_stopped").wait(
        TrainingJobName=job_name, WaiterConfig=FAST_WAITER
    )
    model_data = sm.describe_training_job(TrainingJobName=job_name)["ModelArtifacts"]["S3ModelArtifacts"]

    # What SDK v2's deploy() sends: three calls, each named after the endpoint.
    name = unique("api-endpoint")
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1-cpu-py310",
            "ModelDataUrl": model_data,
            "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": code},
        },
        Tags=[{"Key": "purpose", "Value": "test"}],
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    endpoint_arn = sm.create_endpoint(EndpointName=name, EndpointConfigName=name)["EndpointArn"]
    assert endpoint_arn == f"arn:aws:sagemaker:us-east-1:000000000000:endpoint/{name}"
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=FAST_WAITER)
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
    assert sm.describe_model(ModelName=name)["PrimaryContainer"]["ModelDataUrl"] == model_data
    assert "Tags" not in sm.describe_model(ModelName=name)
    model_arn = sm.describe_model(ModelName=name)["ModelArn"]
    assert sm.list_tags(ResourceArn=model_arn)["Tags"] == [{"Key": "purpose", "Value": "test"}]
    assert [m["ModelName"] for m in sm.list_models(NameContains=name)["Models"]] == [name]
    assert [
        c["EndpointConfigName"] for c in sm.list_endpoint_configs(NameContains=name)["EndpointConfigs"]
    ] == [name]
    listed = sm.list_endpoints(NameContains=name, StatusEquals="InService")["Endpoints"]
    assert [(e["EndpointName"], e["EndpointStatus"]) for e in listed] == [(name, "InService")]

    # On the endpoints page, as the key's user's endpoint of the job's model.
    row = Endpoint.objects.get(name=name)
    assert (row.owner, row.job.name, row.inference_entry_point) == (alice, job_name, "inference.py")
    client.force_login(bob)
    assert name in client.get(f"/jobs/{job_name}/").content.decode()

    runtime = client_for(bob, "sagemaker-runtime")  # any teammate may invoke
    answer = runtime.invoke_endpoint(
        EndpointName=name,
        Body=json.dumps([1, 2]),
        ContentType="application/json",
        Accept="application/json",
        CustomAttributes="trace=1",
    )
    assert json.loads(answer["Body"].read()) == [3, 6]
    assert answer["ContentType"] == "application/json"
    assert answer["InvokedProductionVariant"] == "AllTraffic"
    assert answer["CustomAttributes"] == "seen=trace=1"

    error = error_of(
        lambda: runtime.invoke_endpoint(EndpointName=name, Body=b'"raise"', ContentType="application/json")
    )
    assert error["Error"]["Code"] == "ModelError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error["OriginalStatusCode"] == 500
    assert error["Error"]["Message"].startswith('Received server error (500) from primary with message "')
    assert error["LogStreamArn"].endswith(f":log-group:/aws/sagemaker/Endpoints/{name}")

    too_big = b"[" + b"1," * (3 * 1024 * 1024) + b"1]"
    error = error_of(
        lambda: runtime.invoke_endpoint(EndpointName=name, Body=too_big, ContentType="application/json")
    )
    assert error["ResponseMetadata"]["HTTPStatusCode"] in (400, 413)
    error = error_of(lambda: runtime.invoke_endpoint(EndpointName=unique("nowhere"), Body=b"[1]"))
    assert error["Error"]["Code"] == "ValidationError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400

    # Someone else's endpoint, model and config are not bob's to delete.
    other = client_for(bob)
    for call in (
        lambda: other.delete_endpoint(EndpointName=name),
        lambda: other.delete_endpoint_config(EndpointConfigName=name),
        lambda: other.delete_model(ModelName=name),
    ):
        assert error_of(call)["Error"]["Code"] == "AccessDeniedException"
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"

    sm.delete_endpoint(EndpointName=name)
    assert Endpoint.objects.get(name=name).status == "Deleting"
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig=FAST_WAITER)
    error = error_of(lambda: sm.describe_endpoint(EndpointName=name))
    assert error["Error"]["Code"] == "ValidationException"
    assert error["Error"]["Message"].startswith("Could not find endpoint")
    sm.delete_endpoint_config(EndpointConfigName=name)
    sm.delete_model(ModelName=name)
    assert not sm.list_models(NameContains=name)["Models"]
    error = error_of(lambda: sm.describe_model(ModelName=name))
    assert error["Error"]["Code"] == "ValidationException"
    assert settings.ANYJOB_BACKEND == "local"


def test_an_endpoint_deployed_from_the_page_is_the_apis_too(client_for, alice, bob) -> None:
    """The page's deploy (its row, and the three requests its worker sends, built by
    ``jobs.endpoints.deploy``) is what DescribeEndpoint, ListEndpoints and InvokeEndpoint see; the
    row's owner rule holds for DeleteEndpoint."""
    from jobs.backends import get_backend
    from jobs.endpoints import deploy
    from jobs.models import TrainingJob

    sm = client_for(alice)
    job_name = unique("page-model")
    code = upload_code(job_name, {"train.py": TRAIN, "inference.py": INFERENCE})
    sm.create_training_job(**training_request(job_name, code))
    sm.get_waiter("training_job_completed_or_stopped").wait(
        TrainingJobName=job_name, WaiterConfig=FAST_WAITER
    )
    job = TrainingJob.objects.get(name=job_name)
    job.model_artifacts = sm.describe_training_job(TrainingJobName=job_name)["ModelArtifacts"][
        "S3ModelArtifacts"
    ]
    name = unique("page-endpoint")
    row = Endpoint.objects.create(
        name=name, job=job, owner=alice, inference_entry_point="inference.py", instance_type="ml.m5.large"
    )
    backend = get_backend()
    requests = deploy.requests_for(row, job, settings)
    backend.create_model(requests["CreateModel"])
    backend.create_endpoint_config(requests["CreateEndpointConfig"])
    backend.create_endpoint(requests["CreateEndpoint"])
    Endpoint.objects.filter(pk=row.pk).update(status=Endpoint.Status.CREATING, requests=requests)

    other = client_for(bob)
    other.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=FAST_WAITER)
    assert [e["EndpointName"] for e in other.list_endpoints(NameContains=name)["Endpoints"]] == [name]
    answer = client_for(bob, "sagemaker-runtime").invoke_endpoint(EndpointName=name, Body=b"[2]")
    assert json.loads(answer["Body"].read()) == [6]
    model_arn = other.describe_model(ModelName=name)["ModelArn"]
    assert other.list_tags(ResourceArn=model_arn)["Tags"] == []  # anyjob's own tag is not shown

    assert (
        error_of(lambda: other.delete_endpoint(EndpointName=name))["Error"]["Code"] == "AccessDeniedException"
    )
    assert error_of(lambda: other.delete_model(ModelName=name))["Error"]["Code"] == "AccessDeniedException"
    sm.delete_endpoint(EndpointName=name)
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig=FAST_WAITER)
    sm.delete_endpoint_config(EndpointConfigName=name)
    sm.delete_model(ModelName=name)
