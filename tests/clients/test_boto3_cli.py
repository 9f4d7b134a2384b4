"""boto3 and the AWS CLI (v1, from PyPI), unmodified, as processes against the real anyjob.

Each test runs a script (``scripts/``) or ``aws`` commands from the ``aws`` client venv, signed
with a key from ``manage.py create_access_key``, and checks what the client got back.
"""

from __future__ import annotations

import filecmp
import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from tests.clients.conftest import Client, unique
from tests.clients.findings import expect, no_errors

pytestmark = pytest.mark.timeout(600)

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/anyjob/generic:latest"


# --- boto3 ------------------------------------------------------------------------------------


def test_boto3_s3_round_trips(user: Client, aws_venv, bucket: str) -> None:
    found = user.script(aws_venv, "boto3_s3.py", bucket)
    no_errors(found)
    expect(
        found,
        # us-east-1 (no LocationConstraint) answers 200 to your own bucket again; elsewhere
        # BucketAlreadyOwnedByYou. Never AccessDenied.
        create_again=lambda v: v is None or v["code"] == "BucketAlreadyOwnedByYou",
        head_bucket=200,
        listed_bucket=True,
        location=lambda v: v in (None, "us-east-1"),  # us-east-1 answers an empty constraint
        roundtrip=True,
        range=True,
        range_status=206,
        head_length=3 * 1024 * 1024 + 17,
        multipart_roundtrip=True,
        copy_same=True,
        listed=["blobs/big.bin", "blobs/copy.bin", "blobs/one.bin"],
        paged=["blobs/big.bin", "blobs/copy.bin", "blobs/one.bin"],
        deleted=["blobs/big.bin", "blobs/copy.bin"],
        left=0,
        missing_key="NoSuchKey",
        missing_bucket="NoSuchBucket",
        bad_bucket_name="InvalidBucketName",
        dotdot_key=lambda v: v is not None,
        long_key=lambda v: v is not None,
    )


def test_boto3_training_job_logs_and_endpoint_with_the_waiters(user: Client, aws_venv, bucket: str) -> None:
    name = unique("boto3")
    found = user.script(aws_venv, "boto3_training.py", bucket, name)
    no_errors(found)
    assert found["arn"].endswith(f":training-job/{name}")
    assert found["duplicate"] == "ResourceInUse"
    assert found["status"] == "Completed", found["failure"]
    assert found["secondary"][0] == "Starting" and found["secondary"][-1] == "Completed"
    assert found["hyperparameters"]["scale"] == "3"
    assert found["model_uri"] == f"s3://{bucket}/output/{name}/output/model.tar.gz"
    assert found["model_json"] == {"scale": 3.0}
    assert found["listed"] == [name]
    assert found["stop_finished"] == "ValidationException"
    assert found["describe_missing"] == "ValidationException"
    # Logs as the SDKs read them (no nextToken on a last page: SDK v2 would loop forever).
    assert len(found["stream_names"]) == 1 and found["stream_names"][0].startswith(f"{name}/algo-1-")
    assert found["streams_next_token"] is False and found["streams_all_next_token"] is False
    assert "training started: mode=ok scale=3.0" in found["log_messages"]
    assert "epoch=2 loss=0.333" in found["log_messages"]
    assert found["log_pages"] >= 2  # the last token reads an empty page
    assert "training done" in found["filtered"]
    assert found["filtered_streams"] == found["stream_names"]
    assert found["filtered_other_prefix"] == 0
    assert found["endpoint_status"] == "InService"
    assert found["prediction"] == [[3.0, 6.0]]
    assert found["prediction_type"].startswith("application/json")
    assert found["invoke_missing"] == "ValidationError"  # sagemaker-runtime's own code
    assert found["endpoint_streams"], "the endpoint's log group has no stream"
    assert found["describe_deleted"] == "ValidationException"


def test_boto3_failing_stopped_and_max_runtime_jobs(user: Client, aws_venv, bucket: str) -> None:
    found = user.script(aws_venv, "boto3_jobs.py", bucket, unique("states"))
    no_errors(found)
    assert "Waiter encountered a terminal failure state" in found["failing_waiter"]
    status, reason = found["failing"]
    assert status == "Failed"
    assert reason.startswith("AlgorithmError: ") and "the training script failed on purpose" in reason
    assert found["stopping"] in ("Stopping", "Stopped")
    assert found["stopped"] == ["Stopped", "Stopped"]
    assert found["timed_out"] == ["Stopped", "MaxRuntimeExceeded"]


def test_someone_elses_job_cannot_be_stopped_and_bad_keys_are_refused(
    user: Client, teammate: Client, aws_venv, bucket: str, tmp_path: Path
) -> None:
    """Through boto3: a teammate's StopTrainingJob is AccessDeniedException (and the job runs
    on), a wrong secret and an unknown key id get AWS's codes, in JSON for SageMaker."""
    name = unique("owned")
    upload_code(user, aws_venv, bucket, tmp_path)
    request = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": user.env["ANYJOB_TEST_ROLE_ARN"],
        "HyperParameters": {
            "sagemaker_program": "train.py",
            "sagemaker_submit_directory": f"s3://{bucket}/code/sourcedir.tar.gz",
            "mode": "sleep",
        },
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    created = user.script(aws_venv, "boto3_call.py", "create_training_job", json.dumps(request))
    assert created["error"] is None, created
    denied = teammate.script(
        aws_venv, "boto3_call.py", "stop_training_job", json.dumps({"TrainingJobName": name})
    )
    assert denied["error"]["code"] == "AccessDeniedException", denied
    seen = teammate.script(
        aws_venv, "boto3_call.py", "describe_training_job", json.dumps({"TrainingJobName": name})
    )
    assert seen["error"] is None and seen["result"]["TrainingJobStatus"] == "InProgress"  # teammates see it
    wrong = {"CALL_KEY_ID": user.env["AWS_ACCESS_KEY_ID"], "CALL_SECRET": "x" * 40}
    bad = user.script(aws_venv, "boto3_call.py", "list_training_jobs", "{}", extra_env=wrong)
    assert bad["error"]["code"] == "InvalidSignatureException" and 400 <= bad["error"]["status"] < 500, bad
    unknown = {"CALL_KEY_ID": "AKIA" + "Z" * 16, "CALL_SECRET": "x" * 40}
    bad = user.script(aws_venv, "boto3_call.py", "list_training_jobs", "{}", extra_env=unknown)
    assert bad["error"]["code"] == "UnrecognizedClientException" and 400 <= bad["error"]["status"] < 500, bad
    bad = user.script(
        aws_venv, "boto3_call.py", "list_buckets", "{}", extra_env={**wrong, "CALL_SERVICE": "s3"}
    )
    assert bad["error"]["code"] == "SignatureDoesNotMatch", bad
    bad = user.script(
        aws_venv, "boto3_call.py", "list_buckets", "{}", extra_env={**unknown, "CALL_SERVICE": "s3"}
    )
    assert bad["error"]["code"] == "InvalidAccessKeyId", bad
    stopped = user.script(
        aws_venv, "boto3_call.py", "stop_training_job", json.dumps({"TrainingJobName": name})
    )
    assert stopped["error"] is None, stopped


# --- the AWS CLI ------------------------------------------------------------------------------


def aws(client: Client, venv, *args: str, check: bool = True, timeout: float = 300):
    return client.run(venv, *args, tool="aws", check=check, timeout=timeout)


def upload_code(client: Client, venv, bucket: str, folder: Path) -> None:
    """``tests/clients/code`` as ``s3://<bucket>/code/sourcedir.tar.gz``, with the CLI."""
    code = folder / "sourcedir.tar.gz"
    with tarfile.open(code, "w:gz") as tar:
        for name in ("train.py", "inference.py"):
            tar.add(Path(client.env["ANYJOB_TEST_CODE"]) / name, arcname=name)
    aws(client, venv, "s3", "mb", f"s3://{bucket}")
    aws(client, venv, "s3", "cp", str(code), f"s3://{bucket}/code/sourcedir.tar.gz")


def test_cli_s3_cp_multipart_and_sync(user: Client, aws_venv, bucket: str, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * 1024 * 1024 + 3))  # over the CLI's 8 MiB: three parts
    aws(user, aws_venv, "s3", "mb", f"s3://{bucket}")
    aws(user, aws_venv, "s3", "cp", str(big), f"s3://{bucket}/big/big.bin")
    back = tmp_path / "back.bin"
    aws(user, aws_venv, "s3", "cp", f"s3://{bucket}/big/big.bin", str(back))
    assert back.read_bytes() == big.read_bytes()
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha\n")
    (tree / "sub" / "b.csv").write_text("1,2\n")
    (tree / "sub" / "deeper" / "name with spaces+plus.txt").write_text("spaces\n")
    aws(user, aws_venv, "s3", "sync", str(tree), f"s3://{bucket}/sync/")
    (tree / "a.txt").write_text("alpha, changed and longer\n")
    second = aws(user, aws_venv, "s3", "sync", str(tree), f"s3://{bucket}/sync/").stdout
    assert "a.txt" in second and "b.csv" not in second, second  # only what changed goes again
    copy = tmp_path / "copy"
    aws(user, aws_venv, "s3", "sync", f"s3://{bucket}/sync/", str(copy))
    compared = filecmp.dircmp(tree, copy)
    assert not compared.left_only and not compared.right_only and not compared.diff_files
    assert (copy / "sub" / "deeper" / "name with spaces+plus.txt").read_text() == "spaces\n"
    listing = aws(user, aws_venv, "s3", "ls", "--recursive", f"s3://{bucket}/").stdout
    assert "sync/sub/deeper/name with spaces+plus.txt" in listing and "big/big.bin" in listing
    aws(user, aws_venv, "s3", "rm", "--recursive", f"s3://{bucket}/sync/")
    assert "sync/" not in aws(user, aws_venv, "s3", "ls", "--recursive", f"s3://{bucket}/").stdout


def test_cli_training_job_from_json_wait_and_logs(
    user: Client, aws_venv, bucket: str, tmp_path: Path
) -> None:
    """``create-training-job --cli-input-json``, ``aws sagemaker wait`` (the CLI's waiter polls
    every 120 s, so it is called once the job has ended: it must return at once, and fail for a
    failed job), and the logs through ``filter-log-events`` (what ``aws logs tail`` calls: CLI v1
    has no ``tail``) and ``get-log-events``."""
    upload_code(user, aws_venv, bucket, tmp_path)
    names = {"ok": unique("cli"), "fail": unique("cli-fail")}
    for mode, name in names.items():
        request = {
            "TrainingJobName": name,
            "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
            "RoleArn": user.env["ANYJOB_TEST_ROLE_ARN"],
            "HyperParameters": {
                "sagemaker_program": "train.py",
                "sagemaker_submit_directory": f"s3://{bucket}/code/sourcedir.tar.gz",
                "mode": mode,
            },
            "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/output"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        }
        path = tmp_path / f"{mode}.json"
        path.write_text(json.dumps(request))
        out = aws(user, aws_venv, "sagemaker", "create-training-job", "--cli-input-json", f"file://{path}")
        assert json.loads(out.stdout)["TrainingJobArn"].endswith(f":training-job/{name}")
    for name in names.values():
        status = ""
        for _ in range(240):
            out = aws(user, aws_venv, "sagemaker", "describe-training-job", "--training-job-name", name)
            status = json.loads(out.stdout)["TrainingJobStatus"]
            if status != "InProgress":
                break
            time.sleep(0.5)
        assert status in ("Completed", "Failed"), status
    waited = aws(
        user,
        aws_venv,
        "sagemaker",
        "wait",
        "training-job-completed-or-stopped",
        "--training-job-name",
        names["ok"],
    )
    assert waited.returncode == 0
    failed = aws(
        user,
        aws_venv,
        "sagemaker",
        "wait",
        "training-job-completed-or-stopped",
        "--training-job-name",
        names["fail"],
        check=False,
    )
    assert failed.returncode != 0 and "Waiter encountered a terminal failure state" in failed.stderr, (
        failed.stderr
    )
    missing = aws(
        user,
        aws_venv,
        "sagemaker",
        "describe-training-job",
        "--training-job-name",
        names["ok"] + "-nope",
        check=False,
    )
    assert missing.returncode != 0 and "(ValidationException)" in missing.stderr, missing.stderr
    group = "/aws/sagemaker/TrainingJobs"
    out = aws(
        user,
        aws_venv,
        "logs",
        "filter-log-events",
        "--log-group-name",
        group,
        "--log-stream-name-prefix",
        names["ok"] + "/",
    )
    events = json.loads(out.stdout)["events"]
    assert "training done" in [e["message"] for e in events]
    assert {e["logStreamName"].split("/")[0] for e in events} == {names["ok"]}
    streams = aws(
        user,
        aws_venv,
        "logs",
        "describe-log-streams",
        "--log-group-name",
        group,
        "--log-stream-name-prefix",
        names["ok"] + "/",
    )
    stream = json.loads(streams.stdout)["logStreams"][0]["logStreamName"]
    out = aws(
        user,
        aws_venv,
        "logs",
        "get-log-events",
        "--log-group-name",
        group,
        "--log-stream-name",
        stream,
        "--start-from-head",
    )
    assert "epoch=2 loss=0.333" in [e["message"] for e in json.loads(out.stdout)["events"]]


def test_cli_errors_come_back_as_aws_codes(user: Client, aws_venv, bucket: str) -> None:
    """What the CLI prints (and exits with) for a wrong secret, an unknown key, a bucket name S3
    refuses and an operation anyjob does not serve."""
    wrong = {"AWS_SECRET_ACCESS_KEY": "x" * 40}
    out = user.run(aws_venv, "sagemaker", "list-training-jobs", tool="aws", check=False, extra_env=wrong)
    assert out.returncode != 0 and "(InvalidSignatureException)" in out.stderr, out.stderr
    unknown = {"AWS_ACCESS_KEY_ID": "AKIA" + "Q" * 16}
    out = user.run(aws_venv, "logs", "describe-log-groups", tool="aws", check=False, extra_env=unknown)
    assert out.returncode != 0 and "(UnrecognizedClientException)" in out.stderr, out.stderr
    out = user.run(aws_venv, "s3", "mb", "s3://Not_A_Bucket", tool="aws", check=False)
    assert out.returncode != 0 and "InvalidBucketName" in out.stderr, out.stderr
    out = user.run(aws_venv, "sagemaker", "list-clusters", tool="aws", check=False)
    assert out.returncode != 0 and "(UnknownOperationException)" in out.stderr, out.stderr
    out = user.run(aws_venv, "s3", "ls", f"s3://{bucket}-missing", tool="aws", check=False)
    assert out.returncode != 0 and "NoSuchBucket" in out.stderr, out.stderr
