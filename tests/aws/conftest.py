"""The sagemaker backend with botocore's Stubber on real clients (every request is checked
against the service model and ``expected_params``), and S3 on the loopback S3 server."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.stub import Stubber

from jobs.backends.sagemaker import SageMakerBackend

BUCKET = "anyjob-team"
REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/anyjob:1"


class Stubs:
    def __init__(self) -> None:
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        self.sagemaker_client = session.client("sagemaker")
        self.logs_client = session.client("logs")
        self.sagemaker = Stubber(self.sagemaker_client)
        self.logs = Stubber(self.logs_client)


@pytest.fixture
def stubs(monkeypatch, settings, s3_env, s3_client) -> Iterator[Stubs]:
    """anyjob configured for AWS, its backend's clients stubbed, its bucket on loopback S3."""
    settings.ANYJOB_BACKEND = "sagemaker"
    settings.ANYJOB_REGION = REGION
    settings.ANYJOB_ROLE_ARN = ROLE
    settings.ANYJOB_TRAINING_IMAGE = IMAGE
    settings.ANYJOB_ARTIFACT_STORE = f"s3://{BUCKET}/anyjob"
    from jobs import aws

    aws.reset()
    if BUCKET not in [b["Name"] for b in s3_client.list_buckets().get("Buckets", [])]:
        s3_client.create_bucket(Bucket=BUCKET)
    stubs = Stubs()
    backend = SageMakerBackend(sagemaker=stubs.sagemaker_client, logs=stubs.logs_client)
    for module in ("jobs.tasks", "jobs.detail", "jobs.views", "jobs.newjob", "jobs.importer"):
        monkeypatch.setattr(f"{module}.get_backend", lambda: backend)
    with stubs.sagemaker, stubs.logs:
        yield stubs
    stubs.sagemaker.assert_no_pending_responses()
    stubs.logs.assert_no_pending_responses()
    aws.reset()
