"""SDK v3 with a role anyjob does not know: ``ModelTrainer``'s constructor must refuse it (as it
refuses, on AWS, a role that does not exist or does not trust SageMaker), before any upload."""

import sys

import boto3
from common import CODE, IMAGE, done, found, step
from sagemaker.core.training.configs import Compute, SourceCode
from sagemaker.train import ModelTrainer, Session

bucket = sys.argv[1]
with step("construct"):
    try:
        ModelTrainer(
            training_image=IMAGE,
            source_code=SourceCode(source_dir=CODE, entry_script="train.py"),
            role="arn:aws:iam::000000000000:role/not-known-to-anyjob",
            compute=Compute(instance_type="ml.m5.large", instance_count=1),
            sagemaker_session=Session(boto_session=boto3.Session(), default_bucket=bucket),
        )
        found["refused"] = None
    except Exception as exc:  # the SDK's RoleValidationError
        found["refused"] = f"{type(exc).__name__}: {exc}"
done()
