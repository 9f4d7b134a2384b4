"""Shared by the client scripts (run with a client venv's python, not anyjob's).

Each script prints one JSON line of findings at the end, whatever failed on the way: a step
that raised is recorded under ``errors`` (``{"step": "ExceptionType: message"}``) and the next
steps still run where they can, so a test says exactly which call failed and how.
"""

import contextlib
import io
import json
import os
import sys
import tarfile
import traceback

from botocore.exceptions import ClientError

ROLE = os.environ["ANYJOB_TEST_ROLE_ARN"]
CODE = os.environ["ANYJOB_TEST_CODE"]
#: Any URI: locally every job runs on anyjob's generic image (the job says so).
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/anyjob/generic:latest"

found = {"errors": {}}


@contextlib.contextmanager
def step(name):
    try:
        yield
    except Exception as exc:  # recorded, and the script goes on
        found["errors"][name] = f"{type(exc).__name__}: {exc}"[:4000]
        print(f"step {name} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)


def error_code(call):
    """The AWS error code ``call`` raises (None if it succeeds)."""
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"]
    return None


def error_of(call):
    """``{"code", "message", "status"}`` of the error ``call`` raises (None if it succeeds)."""
    try:
        call()
    except ClientError as exc:
        return {
            "code": exc.response["Error"]["Code"],
            "message": exc.response["Error"].get("Message", ""),
            "status": exc.response["ResponseMetadata"]["HTTPStatusCode"],
        }
    return None


def code_bundle():
    """``tests/clients/code`` as a sourcedir.tar.gz, in memory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in sorted(os.listdir(CODE)):
            if name.endswith(".py"):
                tar.add(os.path.join(CODE, name), arcname=name)
    return buf.getvalue()


def tar_member(data, name):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.extractfile(name).read()


def training_request(name, bucket, **hyperparameters):
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "HyperParameters": {
            "sagemaker_program": "train.py",
            "sagemaker_submit_directory": f"s3://{bucket}/code/sourcedir.tar.gz",
            **{k: str(v) for k, v in hyperparameters.items()},
        },
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


def log_messages(logs, group, stream):
    """Every event of a stream, as SDK v2 reads them: from the head, following
    ``nextForwardToken`` until a page is empty. Returns (messages, pages read)."""
    messages, token, pages = [], None, 0
    while pages < 100:
        page = logs.get_log_events(
            logGroupName=group,
            logStreamName=stream,
            startFromHead=True,
            **({"nextToken": token} if token else {}),
        )
        pages += 1
        if not page["events"]:
            break
        messages += [e["message"] for e in page["events"]]
        token = page["nextForwardToken"]
    return messages, pages


def done():
    print(json.dumps(found, default=str), flush=True)
