"""boto3 against anyjob: a training job followed by its waiter, its logs, its model behind an
endpoint followed by the endpoint waiters, and the errors AWS gives for what cannot be done."""

import json
import sys
import time

import boto3
from common import (
    IMAGE,
    ROLE,
    code_bundle,
    done,
    error_code,
    found,
    log_messages,
    step,
    tar_member,
    training_request,
)

bucket, name = sys.argv[1], sys.argv[2]
session = boto3.Session()
s3, sm, logs = session.client("s3"), session.client("sagemaker"), session.client("logs")
runtime = session.client("sagemaker-runtime")
fast = {"Delay": 1, "MaxAttempts": 180}

with step("upload_code"):
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="code/sourcedir.tar.gz", Body=code_bundle())

request = training_request(name, bucket, scale=3)
with step("create_training_job"):
    found["arn"] = sm.create_training_job(**request)["TrainingJobArn"]
    # In a later second: within the same one botocore's signature is the same, and anyjob's
    # replay guard refuses it as a captured request replayed (not ResourceInUse, as AWS says).
    time.sleep(1.1)
    found["duplicate"] = error_code(lambda: sm.create_training_job(**request))

with step("waiter_training_job_completed_or_stopped"):
    sm.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName=name, WaiterConfig=fast)

with step("describe_training_job"):
    job = sm.describe_training_job(TrainingJobName=name)
    found["status"] = job["TrainingJobStatus"]
    found["failure"] = job.get("FailureReason")
    found["secondary"] = [t["Status"] for t in job["SecondaryStatusTransitions"]]
    found["hyperparameters"] = job["HyperParameters"]
    found["model_uri"] = job["ModelArtifacts"]["S3ModelArtifacts"]
    key = found["model_uri"].split(f"s3://{bucket}/", 1)[1]
    model = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    found["model_json"] = json.loads(tar_member(model, "model.json"))

with step("list_and_errors"):
    summaries = sm.list_training_jobs(NameContains=name)["TrainingJobSummaries"]
    found["listed"] = [s["TrainingJobName"] for s in summaries]
    found["stop_finished"] = error_code(lambda: sm.stop_training_job(TrainingJobName=name))
    found["describe_missing"] = error_code(lambda: sm.describe_training_job(TrainingJobName=name + "-nope"))

group = "/aws/sagemaker/TrainingJobs"
with step("logs"):
    # What SDK v2's fit(logs=...) asks first: with limit=1 and one stream, no nextToken.
    first = logs.describe_log_streams(
        logGroupName=group, logStreamNamePrefix=name + "/", orderBy="LogStreamName", limit=1
    )
    found["stream_names"] = [s["logStreamName"] for s in first["logStreams"]]
    found["streams_next_token"] = "nextToken" in first
    every = logs.describe_log_streams(
        logGroupName=group, logStreamNamePrefix=name + "/", orderBy="LogStreamName"
    )
    found["streams_all_next_token"] = "nextToken" in every
    messages, pages = log_messages(logs, group, found["stream_names"][0])
    found["log_messages"] = messages
    found["log_pages"] = pages
    filtered = logs.filter_log_events(logGroupName=group, logStreamNamePrefix=name + "/")
    found["filtered"] = [e["message"] for e in filtered["events"]]
    found["filtered_streams"] = sorted({e["logStreamName"] for e in filtered["events"]})
    other = logs.filter_log_events(logGroupName=group, logStreamNamePrefix=name + "-nope/")
    found["filtered_other_prefix"] = len(other["events"])

with step("endpoint"):
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": found["model_uri"]},
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=fast)
    found["endpoint_status"] = sm.describe_endpoint(EndpointName=name)["EndpointStatus"]
    answer = runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=b"1,2\n")
    found["prediction"] = json.loads(answer["Body"].read())
    found["prediction_type"] = answer["ContentType"]
    found["invoke_missing"] = error_code(
        lambda: runtime.invoke_endpoint(EndpointName=name + "-nope", ContentType="text/csv", Body=b"1")
    )
    endpoint_group = f"/aws/sagemaker/Endpoints/{name}"
    found["endpoint_streams"] = [
        s["logStreamName"] for s in logs.describe_log_streams(logGroupName=endpoint_group)["logStreams"]
    ]

with step("delete_endpoint"):
    sm.delete_endpoint(EndpointName=name)
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig=fast)
    found["describe_deleted"] = error_code(lambda: sm.describe_endpoint(EndpointName=name))
    sm.delete_endpoint_config(EndpointConfigName=name)
    sm.delete_model(ModelName=name)

done()
