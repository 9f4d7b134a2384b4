"""SageMaker's training-job, model, endpoint and tag operations through ``/aws``, with boto3
against the real server: real local jobs, the boto3 waiters, AWS's errors, the owner rules, and
each job in the team's history as a form job would be."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings

from jobs.models import TrainingJob
from jobs.newjob import load_code
from tests.api.sagemaker_support import (  # noqa: F401 - fixtures
    FAST_WAITER,
    client_for_fixture,
    error_of,
    image_env,
    no_proxy,
    training_request,
    upload_code,
    wait_status,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TRAIN = (
    "import json, os, sys\n"
    "print('first line', flush=True)\n"
    "print('args', ' '.join(sys.argv[1:]), flush=True)\n"
    "print('loss=0.25', flush=True)\n"
    "open(os.path.join(os.environ['SM_MODEL_DIR'], 'model.json'), 'w').write(json.dumps({'scale': 2}))\n"
)
SLEEP = "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_a_job_made_through_the_api_runs_and_is_a_dashboard_job(client_for, alice, client) -> None:
    sm = client_for(alice)
    name = unique("api-train")
    code = upload_code(name, {"train.py": TRAIN, "util/helpers.py": "X = 1\n"})
    request = training_request(
        name,
        code,
        HyperParameters={
            "epochs": "3",
            "lr": "0.1",
            "optimizer": '"adam"',
            "fast": "true",
            "layers": "[1,2]",
        },
        Environment={"MODE": "test", "WANDB_API_KEY": "do-not-show"},
        Tags=[{"Key": "team", "Value": "vision"}],
    )
    request["AlgorithmSpecification"]["MetricDefinitions"] = [{"Name": "loss", "Regex": "loss=([0-9.]+)"}]

    arn = sm.create_training_job(**request)["TrainingJobArn"]
    sm.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName=name, WaiterConfig=FAST_WAITER)

    described = sm.describe_training_job(TrainingJobName=name)
    assert (
        described["TrainingJobArn"] == arn == f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{name}"
    )
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    assert described["ModelArtifacts"]["S3ModelArtifacts"].endswith(f"{name}/output/model.tar.gz")
    assert described["HyperParameters"]["epochs"] == "3"
    assert "Tags" not in described  # DescribeTrainingJob never carries them (ListTags does)

    job = TrainingJob.objects.get(name=name)
    assert job.owner == alice
    assert job.entry_point == "train.py"
    assert {h["key"]: (h["value"], h["type"]) for h in job.hyperparameters} == {
        "epochs": ("3", "number"),
        "lr": ("0.1", "number"),
        "optimizer": ("adam", "string"),
        "fast": ("true", "boolean"),
        "layers": ("[1,2]", "json"),
    }
    assert job.tags == [{"key": "team", "value": "vision"}]
    assert job.metric_definitions == [{"name": "loss", "regex": "loss=([0-9.]+)"}]
    assert job.environment == {"MODE": "test", "WANDB_API_KEY": "do-not-show"}
    assert job.secret_environment == ["WANDB_API_KEY"]
    assert (job.instance_type, job.instance_count, job.volume_size_gb, job.max_runtime_seconds) == (
        "ml.m5.large",
        1,
        1,
        600,
    )
    assert job.status in ("InProgress", "Completed")  # the poller (a worker) records the end
    assert job.submitted_at is not None
    assert job.request["DebugHookConfig"]  # accepted as sent (and ignored by the emulator)
    # Its code bundle is the dashboard's: listed, shown, cloned from.
    bundle = load_code(job.source_sha256)
    assert bundle is not None and sorted(bundle.files) == ["train.py", "util/helpers.py"]
    assert job.source_uri == code

    client.force_login(alice)
    page = client.get(f"/jobs/{name}/").content.decode()
    assert "train.py" in page and "do-not-show" not in page
    assert "generic image" in page  # the note: any TrainingImage runs on the one generic image
    clone = client.get(f"/jobs/{name}/clone/")
    assert clone.status_code == 200 and job.source_sha256 in clone.content.decode()

    logs = [e["message"] for e in _backend().get_training_logs(name)["events"]]
    assert "first line" in logs
    assert any("--epochs 3" in line and "--optimizer adam" in line for line in logs)

    # A finished job cannot be stopped: ValidationException, as AWS answers.
    error = error_of(lambda: sm.stop_training_job(TrainingJobName=name))
    assert error["Error"]["Code"] == "ValidationException"
    assert "Completed" in error["Error"]["Message"]


def test_names_are_unique_regardless_of_case_and_missing_jobs_are_validation_errors(
    client_for, alice, bob
) -> None:
    sm = client_for(alice)
    name = unique("Case-Job")
    code = upload_code(name, {"train.py": TRAIN})
    arn = sm.create_training_job(**training_request(name, code))["TrainingJobArn"]

    other = client_for(bob)
    error = error_of(lambda: other.create_training_job(**training_request(name.upper(), code)))
    assert error["Error"]["Code"] == "ResourceInUse"
    assert error["Error"]["Message"] == (
        "Training job names must be unique within an AWS account and region, and a training job with "
        f"this name already exists ({arn})"
    )
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert TrainingJob.objects.filter(name__iexact=name).count() == 1
    assert TrainingJob.objects.get(name__iexact=name).owner == alice

    error = error_of(lambda: sm.describe_training_job(TrainingJobName=unique("no-such-job")))
    assert error["Error"] == {"Code": "ValidationException", "Message": "Requested resource not found."}
    sm.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName=name, WaiterConfig=FAST_WAITER)


def test_only_the_owner_or_staff_stop_a_job(client_for, alice, bob, charlie) -> None:
    name = unique("api-sleep")
    code = upload_code(name, {"train.py": SLEEP})
    client_for(alice).create_training_job(**training_request(name, code))
    wait_status(client_for(alice), name, {"InProgress"})

    error = error_of(lambda: client_for(bob).stop_training_job(TrainingJobName=name))
    assert error["Error"]["Code"] == "AccessDeniedException"
    assert "user/bob is not authorized to perform: sagemaker:StopTrainingJob" in error["Error"]["Message"]
    assert client_for(bob).describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "InProgress"

    client_for(charlie).stop_training_job(TrainingJobName=name)  # staff may
    assert TrainingJob.objects.get(name=name).status == "Stopping"
    assert TrainingJob.objects.get(name=name).stop_requested_at is not None
    client_for(bob).get_waiter("training_job_completed_or_stopped").wait(
        TrainingJobName=name, WaiterConfig=FAST_WAITER
    )
    assert client_for(bob).describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "Stopped"


def test_list_training_jobs_pages_filters_and_sorts(client_for, alice) -> None:
    sm = client_for(alice)
    prefix = unique("listed")
    names = [f"{prefix}-{i}" for i in range(3)]
    code = upload_code(prefix, {"train.py": TRAIN})
    for name in names:
        sm.create_training_job(**training_request(name, code))

    pages = list(
        sm.get_paginator("list_training_jobs").paginate(
            NameContains=prefix, SortBy="Name", SortOrder="Ascending", PaginationConfig={"PageSize": 1}
        )
    )
    assert [s["TrainingJobName"] for p in pages for s in p["TrainingJobSummaries"]] == names
    assert len(pages) == 3 and "NextToken" not in pages[-1]
    newest = sm.list_training_jobs(NameContains=prefix.upper(), MaxResults=1)
    assert newest["TrainingJobSummaries"][0]["TrainingJobName"] == names[-1] and newest["NextToken"]
    hour = timedelta(hours=1)
    assert (
        len(
            sm.list_training_jobs(NameContains=prefix, CreationTimeAfter=datetime.now(UTC) - hour)[
                "TrainingJobSummaries"
            ]
        )
        == 3
    )
    assert not sm.list_training_jobs(NameContains=prefix, CreationTimeAfter=datetime.now(UTC) + hour)[
        "TrainingJobSummaries"
    ]
    error = error_of(lambda: sm.list_training_jobs(MaxResults=101))
    assert error["Error"]["Message"] == (
        "1 validation error detected: Value '101' at 'maxResults' failed to satisfy constraint: "
        "Member must have value less than or equal to 100"
    )
    for name in names:
        sm.get_waiter("training_job_completed_or_stopped").wait(
            TrainingJobName=name, WaiterConfig=FAST_WAITER
        )


def test_request_limits_are_the_forms_and_a_refused_request_leaves_nothing(client_for, alice) -> None:
    sm = client_for(alice)
    code = upload_code("limits", {"train.py": TRAIN})
    long_name = "a" * 64
    error = error_of(lambda: sm.create_training_job(**training_request(long_name, code)))
    assert error["Error"]["Code"] == "ValidationException"
    assert error["Error"]["Message"].startswith(
        f"2 validation errors detected: Value '{long_name}' at 'trainingJobName' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}; "
    )
    many = {f"hp{i}": "1" for i in range(101)}
    error = error_of(
        lambda: sm.create_training_job(**training_request("many-hps", code, HyperParameters=many))
    )
    assert error["Error"]["Code"] == "ValidationException"
    assert (
        "at 'hyperParameters' failed to satisfy constraint: Member must have length less than or equal to 100"
        in (error["Error"]["Message"])
    )
    long_program = training_request("long-program", code, program="a" * 300 + ".py")
    error = error_of(lambda: sm.create_training_job(**long_program))
    assert "sagemaker_program is longer than anyjob keeps (255 characters)" in error["Error"]["Message"]
    outside = training_request("outside-roots", code)
    outside["OutputDataConfig"]["S3OutputPath"] = "file:///etc/anyjob-output"
    error = error_of(lambda: sm.create_training_job(**outside))
    assert "outside the folders local jobs may read and write" in error["Error"]["Message"]
    reserved = training_request("reserved-tag", code, Tags=[{"Key": "anyjob:job-id", "Value": "1"}])
    error = error_of(lambda: sm.create_training_job(**reserved))
    assert "reserved for anyjob" in error["Error"]["Message"]
    assert not TrainingJob.objects.exists()
    assert not _backend().list_training_jobs()["TrainingJobSummaries"]


def test_tags_round_trip_by_arn_and_are_the_owners_to_change(client_for, alice, bob) -> None:
    sm = client_for(alice)
    name = unique("tagged")
    code = upload_code(name, {"train.py": TRAIN})
    arn = sm.create_training_job(**training_request(name, code, Tags=[{"Key": "a", "Value": "1"}]))[
        "TrainingJobArn"
    ]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "one"}])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "a", "Value": "one"}, {"Key": "b", "Value": "2"}]
    assert TrainingJob.objects.get(name=name).tags == [
        {"key": "a", "value": "one"},
        {"key": "b", "value": "2"},
    ]
    sm.delete_tags(ResourceArn=arn, TagKeys=["a", "never-there"])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "b", "Value": "2"}]

    error = error_of(lambda: client_for(bob).add_tags(ResourceArn=arn, Tags=[{"Key": "c", "Value": "3"}]))
    assert error["Error"]["Code"] == "AccessDeniedException"
    error = error_of(lambda: client_for(bob).delete_tags(ResourceArn=arn, TagKeys=["b"]))
    assert error["Error"]["Code"] == "AccessDeniedException"
    assert client_for(bob).list_tags(ResourceArn=arn)["Tags"] == [{"Key": "b", "Value": "2"}]
    missing = arn.replace(name, "no-such-job")
    assert error_of(lambda: sm.list_tags(ResourceArn=missing))["Error"]["Code"] == "ValidationException"
    sm.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName=name, WaiterConfig=FAST_WAITER)


def _backend() -> Any:
    from jobs.backends import get_backend

    assert settings.ANYJOB_BACKEND == "local"
    return get_backend()


def test_sdk_v3_code_in_a_code_channel_is_the_jobs_bundle(client_for, alice, tmp_path) -> None:
    """SDK v3's shape: the code as a ``code`` channel, the script named in ``sm_drivers``'
    ``sourcecode.json``, the command in ``ContainerEntrypoint``; no ``sagemaker_*``."""
    code = tmp_path / "v3-code"
    (code / "lib").mkdir(parents=True)
    # No SM_* variables here: SageMaker sets none for a ContainerEntrypoint (v3's driver does).
    (code / "train.py").write_text(
        "print('first line', flush=True)\nopen('/opt/ml/model/m', 'w').write('1')\n"
    )
    (code / "lib" / "data.py").write_text("ROWS = 3\n")
    drivers = tmp_path / "v3-drivers"
    drivers.mkdir()
    (drivers / "sourcecode.json").write_text(
        '{"entry_script": "train.py", "source_dir": "/opt/ml/input/data/code"}'
    )
    name = unique("v3-job")
    request = training_request(name, "unused", HyperParameters={"epochs": "2"})
    request["HyperParameters"] = {"epochs": "2"}
    del request["DebugHookConfig"], request["ProfilerConfig"]
    request["AlgorithmSpecification"]["ContainerEntrypoint"] = ["/bin/bash", "-c"]
    request["AlgorithmSpecification"]["ContainerArguments"] = ["python3 /opt/ml/input/data/code/train.py"]
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": 3600}
    request["InputDataConfig"] = [
        {
            "ChannelName": channel,
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": path.as_uri()}},
        }
        for channel, path in (("code", code), ("sm_drivers", drivers))
    ]
    sm = client_for(alice)
    sm.create_training_job(**request)
    job = TrainingJob.objects.get(name=name)
    assert job.entry_point == "train.py"
    assert [c["name"] for c in job.channels] == ["code", "sm_drivers"]
    assert job.hyperparameters == [{"key": "epochs", "value": "2", "type": "number"}]
    bundle = load_code(job.source_sha256)
    assert bundle is not None and sorted(bundle.files) == ["lib/data.py", "train.py"]
    assert job.source_uri == bundle.uri  # a prefix is no bundle: the stored one is what deploys read
    described = wait_status(sm, name, {"Completed", "Failed", "Stopped"})
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
