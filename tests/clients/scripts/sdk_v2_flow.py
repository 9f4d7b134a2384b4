"""SageMaker Python SDK v2, unchanged: ``Estimator.fit(logs="All")`` → ``deploy`` → ``predict``
→ ``delete_endpoint``, then a failing ``fit``. ``default_bucket`` is passed (otherwise the SDK
asks STS for the account to name ``sagemaker-<region>-<account>``)."""

import json
import sys
import time

import boto3
import sagemaker
from botocore.exceptions import ClientError
from common import CODE, IMAGE, ROLE, done, found, step
from sagemaker.estimator import Estimator
from sagemaker.exceptions import UnexpectedStatusException

bucket, base = sys.argv[1], sys.argv[2]
boto_session = boto3.Session()
session = sagemaker.Session(boto_session=boto_session, default_bucket=bucket)


def estimator(**hyperparameters):
    return Estimator(
        image_uri=IMAGE,
        role=ROLE,
        instance_count=1,
        instance_type="ml.m5.large",
        volume_size=1,
        entry_point="train.py",
        source_dir=CODE,
        base_job_name=base,
        hyperparameters=hyperparameters,
        sagemaker_session=session,
    )


trained = estimator(scale=5)
with step("fit"):
    started = time.monotonic()
    trained.fit(logs="All", wait=True)
    found["fit_seconds"] = round(time.monotonic() - started, 1)
    found["job_name"] = trained.latest_training_job.name
    description = session.sagemaker_client.describe_training_job(TrainingJobName=found["job_name"])
    found["status"] = description["TrainingJobStatus"]
    found["debug_hook"] = "DebugHookConfig" in description or None
    found["model_data"] = trained.model_data

with step("deploy"):
    started = time.monotonic()
    predictor = trained.deploy(initial_instance_count=1, instance_type="ml.m5.large")
    found["deploy_seconds"] = round(time.monotonic() - started, 1)
    found["endpoint_name"] = predictor.endpoint_name

with step("predict"):
    answer = predictor.predict(
        b"1,2\n3,4\n", initial_args={"ContentType": "text/csv", "Accept": "application/json"}
    )
    found["prediction"] = json.loads(answer)

with step("delete_endpoint"):
    predictor.delete_endpoint()
    # As on AWS, the endpoint may show Deleting for a moment: until DescribeEndpoint says it is gone.
    seen, deadline = [], time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            seen.append(
                session.sagemaker_client.describe_endpoint(EndpointName=found["endpoint_name"])[
                    "EndpointStatus"
                ]
            )
        except ClientError as exc:
            found["describe_deleted"] = exc.response["Error"]["Code"]
            break
        time.sleep(0.5)
    found["statuses_while_deleting"] = sorted(set(seen))

with step("failing_fit"):
    failing = estimator(mode="fail")
    try:
        failing.fit(logs="All", wait=True)
        found["failing_fit"] = "no exception"
    except UnexpectedStatusException as exc:
        found["failing_fit"] = str(exc)

done()
