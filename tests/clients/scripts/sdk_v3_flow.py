"""SageMaker Python SDK v3, unchanged: ``ModelTrainer.train(wait=True, logs=True)`` with its
own driver (``ContainerEntrypoint`` over the ``code`` and ``sm_drivers`` channels)."""

import json
import logging
import sys
import time

import boto3
from common import CODE, IMAGE, ROLE, done, found, log_messages, step, tar_member

bucket, base = sys.argv[1], sys.argv[2]
# SDK v3 prints the job's log (logs=True) through the logging module and configures no handler
# unless rich logging is opted in: what a script or notebook does to see it.
logging.basicConfig(level=logging.INFO)
with step("import"):
    from sagemaker.core.training.configs import Compute, SourceCode
    from sagemaker.train import ModelTrainer, Session

boto_session = boto3.Session()
with step("construct"):
    session = Session(boto_session=boto_session, default_bucket=bucket)
    trainer = ModelTrainer(
        training_image=IMAGE,
        source_code=SourceCode(source_dir=CODE, entry_script="train.py"),
        role=ROLE,
        compute=Compute(instance_type="ml.m5.large", instance_count=1, volume_size_in_gb=1),
        hyperparameters={"scale": 7},
        sagemaker_session=session,
        base_job_name=base,
    )

with step("train"):
    started = time.monotonic()
    trainer.train(wait=True, logs=True)
    found["train_seconds"] = round(time.monotonic() - started, 1)

with step("describe"):
    sm = boto_session.client("sagemaker")
    name = sm.list_training_jobs(NameContains=base, SortBy="CreationTime", SortOrder="Descending")[
        "TrainingJobSummaries"
    ][0]["TrainingJobName"]
    job = sm.describe_training_job(TrainingJobName=name)
    found["job_name"] = name
    found["status"] = job["TrainingJobStatus"]
    found["failure"] = job.get("FailureReason")
    found["entrypoint"] = job["AlgorithmSpecification"].get("ContainerEntrypoint")
    found["arguments"] = job["AlgorithmSpecification"].get("ContainerArguments")
    found["channels"] = sorted(c["ChannelName"] for c in job.get("InputDataConfig", []))
    found["max_runtime"] = job["StoppingCondition"]["MaxRuntimeInSeconds"]
    logs, group = boto_session.client("logs"), "/aws/sagemaker/TrainingJobs"
    streams = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=name + "/")["logStreams"]
    found["log_tail"] = log_messages(logs, group, streams[0]["logStreamName"])[0][-40:] if streams else []
    uri = job["ModelArtifacts"]["S3ModelArtifacts"]
    key = uri.split(f"s3://{bucket}/", 1)[1]
    found["model_json"] = json.loads(
        tar_member(boto_session.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read(), "model.json")
    )

done()
