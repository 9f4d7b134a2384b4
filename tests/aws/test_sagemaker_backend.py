"""The sagemaker backend end to end through the dashboard's own code: the form, the tasks called
as functions, the pages; AWS's control plane and CloudWatch through Stubber, S3 on loopback."""

from __future__ import annotations

import io
import json
import tarfile
from datetime import UTC, datetime, timedelta
from unittest.mock import patch

import boto3
import pytest
from botocore.exceptions import ClientError, NoCredentialsError
from django.core.management import call_command
from django.test import TestCase

from jobs.backends.sagemaker import SageMakerBackend
from jobs.models import PollState, TrainingJob
from jobs.tasks import TransientError, poll_jobs, stop_job, submit_job
from tests.aws.conftest import BUCKET, IMAGE, ROLE
from tests.test_new_job import form, submit, upload

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
ARN = "arn:aws:sagemaker:us-east-1:123456789012:training-job/"


@pytest.fixture
def signed_in(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def data(s3_client):
    for key in ("data/train/part-0.csv", "data/validation/part-0.csv"):
        s3_client.put_object(Bucket=BUCKET, Key=key, Body=b"1,2,3\n")
    return {
        "train": f"s3://{BUCKET}/data/train/",
        "validation": f"s3://{BUCKET}/data/validation/",
    }


def new_job(client, name: str = "iris-1", **fields) -> TrainingJob:
    response, _ = submit(client, form(name=name, **fields), [upload()])
    assert response.status_code == 302, response.content.decode()[-3000:]
    return TrainingJob.objects.get(name=name)


def expected_request(name: str, data: dict[str, str], **overrides) -> dict:
    request = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "HyperParameters": {
            "epochs": "10",
            "learning_rate": "0.05",
            "optimizer": '"adam"',
            "early_stop": "true",
            "layers": "[64,32]",
            "sagemaker_program": '"train.py"',
            "sagemaker_submit_directory": f'"s3://{BUCKET}/anyjob/{name}/source/sourcedir.tar.gz"',
            "sagemaker_job_name": f'"{name}"',
            "sagemaker_region": '"us-east-1"',
            "sagemaker_container_log_level": "20",
        },
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/anyjob/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "EnableNetworkIsolation": False,
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": data["train"]}},
                "ContentType": "text/csv",
            },
            {
                "ChannelName": "validation",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": data["validation"]}},
                "InputMode": "FastFile",
            },
        ],
        "Environment": {"MY_FLAG": "1"},
        # The user's tags, then the row's id: what proves the job is this row's on ResourceInUse.
        "Tags": [
            {"Key": "team", "Value": "ml"},
            {"Key": "anyjob:job-id", "Value": str(TrainingJob.objects.get(name=name).pk)},
        ],
    }
    request.update(overrides)
    return request


def full_job(client, data, name: str = "iris-1") -> TrainingJob:
    return new_job(
        client,
        name,
        instance_type="ml.m5.xlarge",
        instance_count="2",
        channels=[
            {"name": "train", "uri": data["train"], "content_type": "text/csv"},
            {"name": "validation", "uri": data["validation"], "input_mode": "FastFile"},
        ],
        hyperparameters=[
            {"key": "epochs", "value": "10", "type": "number"},
            {"key": "learning_rate", "value": "0.05", "type": "number"},
            {"key": "optimizer", "value": "adam", "type": "string"},
            {"key": "early_stop", "value": "true", "type": "boolean"},
            {"key": "layers", "value": "[64, 32]", "type": "json"},
        ],
        environment=[{"key": "MY_FLAG", "value": "1"}],
        tags=[{"key": "team", "value": "ml"}],
    )


def described(name: str, status: str = "InProgress", modified: datetime = T0, **extra) -> dict:
    answer = {
        "TrainingJobName": name,
        "TrainingJobArn": ARN + name,
        "TrainingJobStatus": status,
        "SecondaryStatus": {"InProgress": "Training", "Completed": "Completed", "Failed": "Failed"}.get(
            status, status
        ),
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "CreationTime": T0,
        "LastModifiedTime": modified,
        "SecondaryStatusTransitions": [
            {
                "Status": "Starting",
                "StartTime": T0,
                "EndTime": T0 + timedelta(minutes=2),
                "StatusMessage": "Go",
            }
        ],
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://{BUCKET}/anyjob/output/{name}/output/model.tar.gz"},
    }
    answer.update(extra)
    return answer


# --- submit ------------------------------------------------------------------------------------


def test_the_exact_request_for_several_channels_and_typed_hyperparameters(stubs, signed_in, data, s3_client):
    job = full_job(signed_in, data)
    stubs.sagemaker.add_response(
        "create_training_job", {"TrainingJobArn": ARN + "iris-1"}, expected_request("iris-1", data)
    )
    assert submit_job(job.pk) == "submitted"
    job.refresh_from_db()
    assert job.status == "InProgress"
    # The job's own copy of the code, with its sha256 (a resubmit uploads nothing).
    key = "anyjob/iris-1/source/sourcedir.tar.gz"
    head = s3_client.head_object(Bucket=BUCKET, Key=key)
    assert head["Metadata"]["sha256"] == job.source_sha256
    assert job.source_uri == f"s3://{BUCKET}/{key}"


def test_a_network_isolated_job_gets_its_code_as_the_code_channel_as_the_sdk_sends_it(stubs, signed_in, data):
    # No network and no credentials in the container: the bundle travels as an input channel
    # (TrainingInput's fields, last), and the submit directory is where SageMaker puts it.
    job = new_job(
        signed_in,
        "iso-1",
        network_isolation="on",
        channels=[{"name": "train", "uri": data["train"]}],
    )
    code_uri = f"s3://{BUCKET}/anyjob/iso-1/source/sourcedir.tar.gz"
    stubs.sagemaker.add_response(
        "create_training_job",
        {"TrainingJobArn": ARN + "iso-1"},
        {
            "TrainingJobName": "iso-1",
            "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
            "RoleArn": ROLE,
            "HyperParameters": {
                "sagemaker_program": '"train.py"',
                "sagemaker_submit_directory": '"/opt/ml/input/data/code/sourcedir.tar.gz"',
                "sagemaker_job_name": '"iso-1"',
                "sagemaker_region": '"us-east-1"',
                "sagemaker_container_log_level": "20",
            },
            "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/anyjob/output"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "EnableNetworkIsolation": True,
            "InputDataConfig": [
                {
                    "ChannelName": "train",
                    "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": data["train"]}},
                },
                {
                    "ChannelName": "code",
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": code_uri,
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                },
            ],
            "Tags": [{"Key": "anyjob:job-id", "Value": str(job.pk)}],
        },
    )
    assert submit_job(job.pk) == "submitted"
    job.refresh_from_db()
    assert job.status == "InProgress" and job.source_uri == code_uri


def test_a_user_channel_called_code_is_refused_with_isolation(stubs, signed_in, data):
    response, _ = submit(
        signed_in, form(network_isolation="on", channels=[{"name": "code", "uri": data["train"]}]), [upload()]
    )
    assert response.status_code == 200
    assert "carries the job&#x27;s code" in response.content.decode()
    assert not TrainingJob.objects.exists()


def test_file_channels_are_refused_at_the_form_on_aws(stubs, signed_in):
    response, _ = submit(
        signed_in,
        form(channels=[{"name": "train", "uri": "file:///srv/data/train"}], output_path="file:///srv/out"),
        [upload()],
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert body.count("SageMaker on AWS reads and writes s3:// only") == 2
    assert "file:///srv/data/train is a file:// location" in body
    assert not TrainingJob.objects.exists()


def test_vpc_and_kms_settings_reach_the_request(stubs, signed_in, data, settings):
    settings.ANYJOB_KMS_KEY_ID = "alias/anyjob"
    settings.ANYJOB_VPC_SUBNETS = ["subnet-0123456789abcdef0"]
    settings.ANYJOB_VPC_SECURITY_GROUPS = ["sg-0123456789abcdef0"]
    job = full_job(signed_in, data)
    request = expected_request("iris-1", data)
    request["OutputDataConfig"]["KmsKeyId"] = "alias/anyjob"
    request["ResourceConfig"]["VolumeKmsKeyId"] = "alias/anyjob"
    request["VpcConfig"] = {
        "SecurityGroupIds": ["sg-0123456789abcdef0"],
        "Subnets": ["subnet-0123456789abcdef0"],
    }
    stubs.sagemaker.add_response("create_training_job", {"TrainingJobArn": ARN + "iris-1"}, request)
    assert submit_job(job.pk) == "submitted"


def test_a_resubmit_after_a_lost_answer_meets_resource_in_use_and_continues(stubs, signed_in, data):
    job = full_job(signed_in, data)
    stubs.sagemaker.add_client_error(
        "create_training_job", "ResourceInUse", "Training job names must be unique", 400
    )
    stubs.sagemaker.add_response("describe_training_job", described("iris-1"), {"TrainingJobName": "iris-1"})
    stubs.sagemaker.add_response(
        "list_tags",
        {"Tags": [{"Key": "team", "Value": "ml"}, {"Key": "anyjob:job-id", "Value": str(job.pk)}]},
        {"ResourceArn": ARN + "iris-1", "MaxResults": 100},
    )
    assert submit_job(job.pk) == "submitted"
    job.refresh_from_db()
    assert job.status == "InProgress" and not job.error


def test_resource_in_use_for_someone_elses_job_of_that_name_in_another_case_fails_the_submit(
    stubs, signed_in, data, bob
):
    # AWS names are unique regardless of case: bob's LONG-RUN meets alice's long-run. Forced past
    # the form (a row made directly), the worker proves by the tags that it is not this row's.
    job = TrainingJob.objects.create(
        owner=bob,
        name="LONG-RUN",
        entry_point="train.py",
        source_sha256=full_job(signed_in, data).source_sha256,
    )
    stubs.sagemaker.add_client_error(
        "create_training_job",
        "ResourceInUse",
        "Training job names must be unique within an AWS account and region, and a training job "
        "with this name already exists",
        400,
    )
    stubs.sagemaker.add_response(
        "describe_training_job",
        described("long-run", TrainingJobArn=ARN + "long-run"),
        {"TrainingJobName": "LONG-RUN"},
    )
    stubs.sagemaker.add_response(
        "list_tags",
        {"Tags": [{"Key": "anyjob:job-id", "Value": "999"}], "NextToken": "page-2"},
        {"ResourceArn": ARN + "long-run", "MaxResults": 100},
    )
    stubs.sagemaker.add_response(
        "list_tags",
        {"Tags": [{"Key": "team", "Value": "vision"}]},
        {"ResourceArn": ARN + "long-run", "MaxResults": 100, "NextToken": "page-2"},
    )
    assert submit_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.status == "SubmitFailed"
    assert "'LONG-RUN' is taken" in job.error and "'long-run'" in job.error
    assert "someone else's" in job.error


def test_throttling_is_retried_then_succeeds(stubs, signed_in, data):
    job = full_job(signed_in, data)
    stubs.sagemaker.add_client_error("create_training_job", "ThrottlingException", "Rate exceeded", 400)
    with pytest.raises(TransientError):
        submit_job(job.pk)
    job.refresh_from_db()
    assert job.status == "Pending" and job.error.startswith("Retrying: ThrottlingException")
    stubs.sagemaker.add_response(
        "create_training_job", {"TrainingJobArn": ARN + "iris-1"}, expected_request("iris-1", data)
    )
    assert submit_job(job.pk) == "submitted"


def test_a_quota_refusal_says_what_to_do_and_resubmit_works(stubs, signed_in, data, alice):
    job = full_job(signed_in, data)
    stubs.sagemaker.add_client_error(
        "create_training_job",
        "ResourceLimitExceeded",
        "The account-level service limit 'ml.m5.xlarge for training job usage' is 0 Instances",
        400,
    )
    assert submit_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.status == "SubmitFailed"
    assert job.error.startswith("An AWS quota is reached (The account-level service limit")
    assert "then Resubmit" in job.error
    body = signed_in.get(f"/jobs/{job.name}/").content.decode()
    assert "An AWS quota is reached" in body and "Resubmit" in body
    with patch("jobs.tasks.submit_job_task.delay") as delay, TestCase.captureOnCommitCallbacks(execute=True):
        signed_in.post(f"/jobs/{job.name}/resubmit/")
    delay.assert_called_once_with(job.pk)
    stubs.sagemaker.add_response(
        "create_training_job", {"TrainingJobArn": ARN + "iris-1"}, expected_request("iris-1", data)
    )
    assert submit_job(job.pk) == "submitted"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ExpiredTokenException", "The AWS session token has expired"),
        ("ValidationException", "AWS refused the request: Could not find image"),
        ("UnrecognizedClientException", "AWS does not recognise the workers' credentials"),
    ],
)
def test_refusals_are_one_line_explanations(stubs, signed_in, data, code, expected):
    job = full_job(signed_in, data)
    stubs.sagemaker.add_client_error("create_training_job", code, "Could not find image", 400)
    assert submit_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.status == "SubmitFailed" and job.error.startswith(expected)
    assert "\n" not in job.error


def test_missing_credentials_say_how_to_give_them(stubs, signed_in, data):
    job = full_job(signed_in, data)
    with patch.object(stubs.sagemaker_client, "create_training_job", side_effect=NoCredentialsError()):
        assert submit_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.error.startswith("No AWS credentials: give the workers credentials")


def test_a_channel_without_objects_is_refused_before_anything_starts(stubs, signed_in, data):
    job = new_job(signed_in, channels=[{"name": "train", "uri": f"s3://{BUCKET}/nothing-here/"}])
    assert submit_job(job.pk) == "failed"  # no create_training_job call was stubbed: none made
    job.refresh_from_db()
    assert job.error == f"Channel train: there are no objects under s3://{BUCKET}/nothing-here/."


def test_a_bucket_in_another_region_is_refused(stubs, signed_in, s3_client):
    s3_client.create_bucket(Bucket="far-away", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3_client.put_object(Bucket="far-away", Key="d/x.csv", Body=b"1\n")
    job = new_job(signed_in, channels=[{"name": "train", "uri": "s3://far-away/d/"}])
    assert submit_job(job.pk) == "failed"
    job.refresh_from_db()
    assert "the bucket far-away is in eu-west-1, the job runs in us-east-1" in job.error


# --- poll, failure, logs, stop ----------------------------------------------------------------------


def running(alice, name: str, modified: datetime = T0) -> TrainingJob:
    return TrainingJob.objects.create(
        owner=alice, name=name, entry_point="train.py", status="InProgress", last_modified=modified
    )


def test_the_poll_sweep_follows_every_page_and_describes_only_changed_jobs(stubs, alice):
    changed, same, finished = running(alice, "a-1"), running(alice, "b-1"), running(alice, "c-1")
    PollState.objects.update_or_create(pk=1, defaults={"watermark": T0})
    after = T0 - timedelta(seconds=60)
    summary = lambda name, status, modified: {  # noqa: E731
        "TrainingJobName": name,
        "TrainingJobArn": ARN + name,
        "CreationTime": T0,
        "TrainingJobStatus": status,
        "LastModifiedTime": modified,
    }
    later = T0 + timedelta(minutes=5)
    stubs.sagemaker.add_response(
        "list_training_jobs",
        {
            "TrainingJobSummaries": [summary("a-1", "InProgress", later), summary("b-1", "InProgress", T0)],
            "NextToken": "p2",
        },
        {"LastModifiedTimeAfter": after, "MaxResults": 100},
    )
    stubs.sagemaker.add_response(  # an empty page that still has a token
        "list_training_jobs",
        {"TrainingJobSummaries": [], "NextToken": "p3"},
        {"LastModifiedTimeAfter": after, "MaxResults": 100, "NextToken": "p2"},
    )
    stubs.sagemaker.add_response(
        "list_training_jobs",
        {"TrainingJobSummaries": [summary("c-1", "Completed", later)]},
        {"LastModifiedTimeAfter": after, "MaxResults": 100, "NextToken": "p3"},
    )
    stubs.sagemaker.add_response(
        "describe_training_job", described("a-1", modified=later), {"TrainingJobName": "a-1"}
    )
    stubs.sagemaker.add_response(
        "describe_training_job",
        described(
            "c-1",
            "Completed",
            later,
            FinalMetricDataList=[{"MetricName": "loss", "Value": 0.5, "Timestamp": later}],
            BillableTimeInSeconds=321,
        ),
        {"TrainingJobName": "c-1"},
    )
    assert poll_jobs() == 2  # b-1 did not change: not described
    finished.refresh_from_db()
    assert finished.status == "Completed" and finished.billable_seconds == 321
    assert finished.final_metrics[0]["MetricName"] == "loss"
    changed.refresh_from_db()
    assert changed.last_modified == later and changed.transitions[0]["Status"] == "Starting"
    same.refresh_from_db()
    assert same.last_modified == T0
    assert PollState.get().watermark == later


def test_a_failed_job_gets_its_whole_failure_file_from_output_tar_gz(stubs, alice, s3_client):
    job = running(alice, "broken-1")
    PollState.objects.update_or_create(pk=1, defaults={"watermark": T0})
    text = "ExecuteUserScriptError:\n" + "x" * 5000 + "\nValueError: the last line"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("failure")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text.encode()))
    s3_client.put_object(
        Bucket=BUCKET, Key="anyjob/output/broken-1/output/output.tar.gz", Body=raw.getvalue()
    )
    later = T0 + timedelta(minutes=9)
    stubs.sagemaker.add_response(
        "list_training_jobs",
        {
            "TrainingJobSummaries": [
                {
                    "TrainingJobName": "broken-1",
                    "TrainingJobArn": ARN + "broken-1",
                    "CreationTime": T0,
                    "TrainingJobStatus": "Failed",
                    "LastModifiedTime": later,
                }
            ]
        },
        {"LastModifiedTimeAfter": T0 - timedelta(seconds=60), "MaxResults": 100},
    )
    failed = described("broken-1", "Failed", later, FailureReason="AlgorithmError: " + text[:1000])
    for _ in range(2):  # the poller's describe, then the artifact lookup's
        stubs.sagemaker.add_response("describe_training_job", failed, {"TrainingJobName": "broken-1"})
    assert poll_jobs() == 1
    job.refresh_from_db()
    assert job.status == "Failed"
    assert job.failure_text == text  # all of it, not the 1024 characters of FailureReason


def test_the_log_is_tailed_across_hosts_and_followed_with_tokens(stubs, signed_in, alice):
    running(alice, "logs-1")
    streams = {"logStreams": [{"logStreamName": "logs-1/algo-2-1"}, {"logStreamName": "logs-1/algo-1-1"}]}
    group = "/aws/sagemaker/TrainingJobs"

    def event(ms: int, text: str) -> dict:
        return {"timestamp": ms, "message": text, "ingestionTime": ms}

    stubs.logs.add_response(
        "describe_log_streams", streams, {"logGroupName": group, "logStreamNamePrefix": "logs-1/"}
    )
    stubs.logs.add_response(
        "get_log_events",
        {"events": [event(1, "host1 start"), event(3, "host1 <b>epoch 1</b>")], "nextForwardToken": "f/h1-3"},
        {"logGroupName": group, "logStreamName": "logs-1/algo-1-1", "startFromHead": False, "limit": 500},
    )
    stubs.logs.add_response(
        "get_log_events",
        {"events": [event(2, "host2 start")], "nextForwardToken": "f/h2-2"},
        {"logGroupName": group, "logStreamName": "logs-1/algo-2-1", "startFromHead": False, "limit": 500},
    )
    page = signed_in.get("/jobs/logs-1/")
    body = page.content.decode()
    assert "host1 start\nhost2 start\nhost1 &lt;b&gt;epoch 1&lt;/b&gt;\n" in body
    token = page.context["log_token"]
    assert json.loads(__import__("base64").urlsafe_b64decode(token + "==")) == {
        "logs-1/algo-1-1": "f/h1-3",
        "logs-1/algo-2-1": "f/h2-2",
    }
    # Follow mode: each stream continues from its own token.
    stubs.logs.add_response(
        "describe_log_streams", streams, {"logGroupName": group, "logStreamNamePrefix": "logs-1/"}
    )
    stubs.logs.add_response(
        "get_log_events",
        {"events": [event(4, "host1 epoch 2")], "nextForwardToken": "f/h1-4"},
        {
            "logGroupName": group,
            "logStreamName": "logs-1/algo-1-1",
            "startFromHead": True,
            "limit": 2000,
            "nextToken": "f/h1-3",
        },
    )
    stubs.logs.add_response(
        "get_log_events",
        {"events": [], "nextForwardToken": "f/h2-2"},
        {
            "logGroupName": group,
            "logStreamName": "logs-1/algo-2-1",
            "startFromHead": True,
            "limit": 2000,
            "nextToken": "f/h2-2",
        },
    )
    poll = signed_in.get(f"/jobs/logs-1/log/?token={token}", HTTP_HX_REQUEST="true").content.decode()
    assert "host1 epoch 2" in poll and "host1 start" not in poll
    assert signed_in.get("/jobs/logs-1/log/?token=not-base64!", HTTP_HX_REQUEST="true").status_code == 200


def test_stop_asks_aws(stubs, alice):
    job = running(alice, "stop-1")
    stubs.sagemaker.add_response("stop_training_job", {}, {"TrainingJobName": "stop-1"})
    assert stop_job(job.pk) == "stopping"
    job.refresh_from_db()
    assert job.status == "Stopping"


def test_artifact_downloads_are_short_lived_presigned_links(stubs, signed_in, alice):
    running(alice, "done-1")
    TrainingJob.objects.filter(name="done-1").update(
        status="Completed", model_artifacts=f"s3://{BUCKET}/anyjob/output/done-1/output/model.tar.gz"
    )
    stubs.sagemaker.add_response(
        "describe_training_job", described("done-1", "Completed"), {"TrainingJobName": "done-1"}
    )
    response = signed_in.get("/jobs/done-1/artifacts/model/")
    assert response.status_code == 302
    location = response["Location"]
    assert f"/{BUCKET}/anyjob/output/done-1/output/model.tar.gz" in location or BUCKET in location
    assert "Signature=" in location and ("Expires=" in location or "X-Amz-Expires=300" in location)


# --- history import -------------------------------------------------------------------------------


def test_the_history_import_creates_then_updates_and_never_duplicates(stubs, alice, charlie):
    def summaries(status: str, modified: datetime) -> dict:
        return {
            "TrainingJobSummaries": [
                {
                    "TrainingJobName": "outside-1",
                    "TrainingJobArn": ARN + "outside-1",
                    "CreationTime": T0,
                    "TrainingJobStatus": status,
                    "LastModifiedTime": modified,
                },
                {
                    "TrainingJobName": "outside-2",
                    "TrainingJobArn": ARN + "outside-2",
                    "CreationTime": T0,
                    "TrainingJobStatus": "Completed",
                    "LastModifiedTime": T0,
                },
            ]
        }

    params = {"MaxResults": 100, "SortBy": "CreationTime", "SortOrder": "Descending"}
    hps = {
        "epochs": "5",
        "lr": "0.1",
        "name": "plain words",
        "sagemaker_program": '"fit.py"',
        "verbose": "true",
    }
    stubs.sagemaker.add_response("list_training_jobs", summaries("InProgress", T0), params)
    stubs.sagemaker.add_response(
        "describe_training_job", described("outside-1", HyperParameters=hps), {"TrainingJobName": "outside-1"}
    )
    stubs.sagemaker.add_response(
        "describe_training_job", described("outside-2", "Completed"), {"TrainingJobName": "outside-2"}
    )
    call_command("import_jobs", "--user", "charlie", stdout=io.StringIO())
    first = TrainingJob.objects.get(name="outside-1")
    assert first.imported and first.owner == charlie and first.entry_point == "fit.py"
    assert first.created_at == T0
    assert {h["key"]: (h["value"], h["type"]) for h in first.hyperparameters} == {
        "epochs": ("5", "number"),
        "lr": ("0.1", "number"),
        "name": ("plain words", "string"),
        "verbose": ("true", "boolean"),
    }
    # Run again: outside-1 has finished, outside-2 has not changed (not described again).
    later = T0 + timedelta(hours=1)
    stubs.sagemaker.add_response("list_training_jobs", summaries("Completed", later), params)
    stubs.sagemaker.add_response(
        "describe_training_job",
        described("outside-1", "Completed", later, HyperParameters=hps),
        {"TrainingJobName": "outside-1"},
    )
    out = io.StringIO()
    call_command("import_jobs", "--user", "alice", stdout=out)
    assert out.getvalue().strip() == "0 imported, 1 updated, 1 unchanged"
    assert TrainingJob.objects.filter(name__startswith="outside-").count() == 2
    first.refresh_from_db()
    assert first.status == "Completed" and first.owner == charlie


def test_the_import_button_is_for_staff(client, alice, charlie):
    client.force_login(alice)
    assert client.post("/jobs/import/").status_code == 403
    assert b"Import the account" not in client.get("/jobs/").content
    client.force_login(charlie)
    with patch("jobs.tasks.import_jobs_task.delay") as delay, TestCase.captureOnCommitCallbacks(execute=True):
        assert client.post("/jobs/import/").status_code == 302
    delay.assert_called_once_with(charlie.pk)


# --- configuration -----------------------------------------------------------------------------------


def test_settings_problems_are_system_checks_and_shown_on_the_new_job_page(settings, signed_in):
    from jobs.checks import problems

    settings.ANYJOB_BACKEND = "sagemaker"
    settings.ANYJOB_REGION = "mars-north-1"
    settings.ANYJOB_ROLE_ARN = "arn:aws:iam::000000000000:role/anyjob-local"
    settings.ANYJOB_TRAINING_IMAGE = "anyjob/generic:latest"
    settings.ANYJOB_ARTIFACT_STORE = "file:///tmp/x"
    settings.ANYJOB_VPC_SUBNETS = ["subnet-0123456789abcdef0"]
    ids = sorted(p.id for p in problems())
    assert ids == ["anyjob.W010", "anyjob.W011", "anyjob.W012", "anyjob.W014", "anyjob.W016"]
    body = signed_in.get("/new/").content.decode()
    assert "anyjob is not configured to submit jobs" in body and "mars-north-1" in body
    response, delay = submit(signed_in, form(), [upload()])
    assert response.status_code == 200
    delay.assert_not_called()
    assert not TrainingJob.objects.exists()


def test_a_correct_aws_configuration_has_no_problems(stubs):
    from jobs.checks import problems

    assert problems() == []
    assert boto3  # the real clients are what Stubber stands in front of


def test_a_network_timeout_during_submit_is_retried_without_a_duplicate(stubs, signed_in, data):
    from botocore.exceptions import ReadTimeoutError

    job = full_job(signed_in, data)
    real = stubs.sagemaker_client.create_training_job
    calls = []

    def lost_answer(**request):
        calls.append(request)
        if len(calls) == 1:  # AWS created the job, but the answer never came back
            raise ReadTimeoutError(endpoint_url="https://api.sagemaker.us-east-1.amazonaws.com")
        return real(**request)

    with patch.object(stubs.sagemaker_client, "create_training_job", side_effect=lost_answer):
        with pytest.raises(TransientError):
            submit_job(job.pk)
        job.refresh_from_db()
        assert job.status == "Pending" and job.error.startswith("Retrying: AWS could not be reached")
        # The retry sends the same request (same name): AWS says it exists, and that is ours.
        stubs.sagemaker.add_client_error(
            "create_training_job",
            "ResourceInUse",
            "Training job names must be unique",
            400,
            expected_params=expected_request("iris-1", data),
        )
        stubs.sagemaker.add_response(
            "describe_training_job", described("iris-1"), {"TrainingJobName": "iris-1"}
        )
        stubs.sagemaker.add_response(
            "list_tags",
            {"Tags": expected_request("iris-1", data)["Tags"]},
            {"ResourceArn": ARN + "iris-1", "MaxResults": 100},
        )
        assert submit_job(job.pk) == "submitted"
    assert calls[0] == calls[1] == expected_request("iris-1", data)
    job.refresh_from_db()
    assert job.status == "InProgress" and not job.error


def test_a_bucket_the_workers_cannot_read_is_refused(stubs, signed_in, monkeypatch):
    from botocore.stub import Stubber

    from jobs.backends.sagemaker import SageMakerBackend

    s3 = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("s3")
    backend = SageMakerBackend(sagemaker=stubs.sagemaker_client, logs=stubs.logs_client, s3=s3)
    monkeypatch.setattr("jobs.tasks.get_backend", lambda: backend)
    job = new_job(signed_in, channels=[{"name": "train", "uri": "s3://someone-elses/data/"}])
    with Stubber(s3) as s3_stub:
        s3_stub.add_client_error(
            "list_objects_v2",
            "AccessDenied",
            "Access Denied",
            403,
            expected_params={"Bucket": "someone-elses", "Prefix": "data/", "MaxKeys": 1},
        )
        assert submit_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.error.startswith("Channel train: s3://someone-elses/data/ cannot be read with the workers'")


def test_models_configs_and_endpoints_are_listed_by_aws_page_by_page(stubs):
    """Each list call is AWS's own, with the caller's filters and token as they were given."""
    backend = SageMakerBackend(sagemaker=stubs.sagemaker_client, logs=stubs.logs_client)
    model_arn = "arn:aws:sagemaker:us-east-1:123456789012:model/"
    models = {"Models": [{"ModelName": "m-2", "ModelArn": model_arn + "m-2", "CreationTime": T0}]}
    stubs.sagemaker.add_response(
        "list_models",
        {**models, "NextToken": "page-2"},
        {"NameContains": "m-", "SortBy": "Name", "SortOrder": "Ascending", "MaxResults": 1},
    )
    stubs.sagemaker.add_response(
        "list_models",
        {"Models": []},
        {
            "NameContains": "m-",
            "SortBy": "Name",
            "SortOrder": "Ascending",
            "MaxResults": 1,
            "NextToken": "page-2",
        },
    )
    first = backend.list_models(NameContains="m-", SortBy="Name", SortOrder="Ascending", MaxResults=1)
    assert first["Models"] == models["Models"] and first["NextToken"] == "page-2"
    later = backend.list_models(
        NameContains="m-", SortBy="Name", SortOrder="Ascending", MaxResults=1, NextToken="page-2"
    )
    assert later["Models"] == [] and "NextToken" not in later

    configs = {
        "EndpointConfigs": [
            {
                "EndpointConfigName": "c-1",
                "EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/c-1",
                "CreationTime": T0,
            }
        ]
    }
    stubs.sagemaker.add_response(
        "list_endpoint_configs", configs, {"CreationTimeAfter": T0 - timedelta(days=1)}
    )
    answer = backend.list_endpoint_configs(CreationTimeAfter=T0 - timedelta(days=1))
    assert answer["EndpointConfigs"] == configs["EndpointConfigs"]

    endpoints = {
        "Endpoints": [
            {
                "EndpointName": "e-1",
                "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e-1",
                "CreationTime": T0,
                "LastModifiedTime": T0 + timedelta(minutes=5),
                "EndpointStatus": "InService",
            }
        ]
    }
    stubs.sagemaker.add_response(
        "list_endpoints",
        endpoints,
        {"StatusEquals": "InService", "LastModifiedTimeAfter": T0, "SortBy": "Status"},
    )
    answer = backend.list_endpoints(StatusEquals="InService", LastModifiedTimeAfter=T0, SortBy="Status")
    assert answer["Endpoints"] == endpoints["Endpoints"]


def test_tags_are_added_and_deleted_on_aws_and_its_refusals_reach_the_caller(stubs):
    backend = SageMakerBackend(sagemaker=stubs.sagemaker_client, logs=stubs.logs_client)
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model/m-1"
    tags = [{"Key": "team", "Value": "ml"}, {"Key": "stage", "Value": "prod"}]
    stubs.sagemaker.add_response("add_tags", {"Tags": tags}, {"ResourceArn": arn, "Tags": tags})
    stubs.sagemaker.add_response("delete_tags", {}, {"ResourceArn": arn, "TagKeys": ["team", "gone"]})
    message = f"You have exceeded the tag limit of 50 tags for resource {arn}."
    stubs.sagemaker.add_client_error(
        "add_tags",
        "ResourceLimitExceeded",
        message,
        400,
        expected_params={"ResourceArn": arn, "Tags": [{"Key": "one-more", "Value": "v"}]},
    )
    assert backend.add_tags(arn, tags) is None
    assert backend.delete_tags(arn, ("team", "gone")) is None  # any sequence: sent as a list
    with pytest.raises(ClientError) as refused:
        backend.add_tags(arn, [{"Key": "one-more", "Value": "v"}])
    assert refused.value.response["Error"] == {"Code": "ResourceLimitExceeded", "Message": message}
