"""The CreateTrainingJob request builder: exact output for given job fields."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from jobs.requests import build_training_request, encode_hyperparameter

SETTINGS = {
    "code_uri": "s3://bucket/code/abc/sourcedir.tar.gz",
    "image": "anyjob/generic:latest",
    "role_arn": "arn:aws:iam::000000000000:role/anyjob-local",
    "region": "eu-west-1",
    "default_output_path": "s3://bucket/output",
}


def job(**fields):
    base = {
        "name": "linear-1",
        "entry_point": "train.py",
        "hyperparameters": [],
        "channels": [],
        "instance_type": "ml.m5.large",
        "instance_count": 1,
        "volume_size_gb": 5,
        "max_runtime_seconds": 600,
        "output_path": "",
        "environment": {},
        "tags": [],
        "network_isolation": False,
    }
    return SimpleNamespace(**{**base, **fields})


RESERVED = {
    "sagemaker_program": '"train.py"',
    "sagemaker_submit_directory": '"s3://bucket/code/abc/sourcedir.tar.gz"',
    "sagemaker_job_name": '"linear-1"',
    "sagemaker_region": '"eu-west-1"',
    "sagemaker_container_log_level": "20",
}


def test_a_minimal_job() -> None:
    assert build_training_request(job(), **SETTINGS) == {
        "TrainingJobName": "linear-1",
        "AlgorithmSpecification": {"TrainingImage": "anyjob/generic:latest", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::000000000000:role/anyjob-local",
        "HyperParameters": RESERVED,
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "EnableNetworkIsolation": False,
    }


def test_every_field() -> None:
    full = job(
        hyperparameters=[
            {"key": "optimizer", "value": "adam", "type": "string"},
            {"key": "lr", "value": "0.1", "type": "number"},
            {"key": "epochs", "value": 50, "type": "number"},
            {"key": "shuffle", "value": True, "type": "boolean"},
            {"key": "layers", "value": "[64, 32]", "type": "json"},
        ],
        channels=[
            {"name": "train", "uri": "s3://bucket/data/train/", "content_type": "text/csv", "input_mode": ""},
            {"name": "test", "uri": "file:///data/test", "content_type": "", "input_mode": "FastFile"},
        ],
        output_path="s3://other/out",
        environment={"A": "1"},
        tags=[{"key": "team", "value": "ml"}],
        network_isolation=True,
        pk=7,
    )
    assert build_training_request(full, **SETTINGS) == {
        "TrainingJobName": "linear-1",
        "AlgorithmSpecification": {"TrainingImage": "anyjob/generic:latest", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::000000000000:role/anyjob-local",
        "HyperParameters": {
            "optimizer": '"adam"',
            "lr": "0.1",
            "epochs": "50",
            "shuffle": "true",
            "layers": "[64,32]",
            **RESERVED,
            # Isolated: no network to fetch the code with, so it comes as the "code" channel.
            "sagemaker_submit_directory": '"/opt/ml/input/data/code/sourcedir.tar.gz"',
        },
        "OutputDataConfig": {"S3OutputPath": "s3://other/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "EnableNetworkIsolation": True,
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket/data/train/"}
                },
                "ContentType": "text/csv",
            },
            {
                "ChannelName": "test",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "file:///data/test"}},
                "InputMode": "FastFile",
            },
            {
                "ChannelName": "code",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": "s3://bucket/code/abc/sourcedir.tar.gz",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            },
        ],
        "Environment": {"A": "1"},
        "Tags": [{"Key": "team", "Value": "ml"}, {"Key": "anyjob:job-id", "Value": "7"}],
    }


def test_the_row_id_tag_follows_the_users_tags_and_cannot_be_typed_in() -> None:
    assert build_training_request(job(), job_id=42, **SETTINGS)["Tags"] == [
        {"Key": "anyjob:job-id", "Value": "42"}
    ]
    with pytest.raises(ValueError, match="reserved"):
        build_training_request(job(tags=[{"key": "anyjob:job-id", "value": "1"}]), **SETTINGS)


def test_a_channel_called_code_clashes_with_isolation_only() -> None:
    channels = [{"name": "code", "uri": "s3://bucket/src/", "content_type": "", "input_mode": ""}]
    assert (
        build_training_request(job(channels=channels), **SETTINGS)["InputDataConfig"][0]["ChannelName"]
        == "code"
    )
    with pytest.raises(ValueError, match="reserved with network isolation"):
        build_training_request(job(channels=channels, network_isolation=True), **SETTINGS)


@pytest.mark.parametrize(
    ("value", "kind", "encoded"),
    [
        ("5", "string", '"5"'),
        ('say "hi"', "string", '"say \\"hi\\""'),
        ("5", "number", "5"),
        ("-1.5e-3", "number", "-0.0015"),
        ("false", "boolean", "false"),
        (False, "boolean", "false"),
        ('{"a": [1, 2]}', "json", '{"a":[1,2]}'),
    ],
)
def test_hyperparameters_are_json_encoded_as_the_sdk_does(value, kind, encoded) -> None:
    assert encode_hyperparameter(value, kind) == encoded


@pytest.mark.parametrize(
    ("value", "kind"), [("abc", "number"), ("yes", "boolean"), ("{", "json"), ("x", "x")]
)
def test_values_that_do_not_fit_their_type_are_refused(value, kind) -> None:
    with pytest.raises(ValueError):
        encode_hyperparameter(value, kind)


def test_reserved_names_are_refused() -> None:
    clash = job(hyperparameters=[{"key": "sagemaker_program", "value": "x.py", "type": "string"}])
    with pytest.raises(ValueError, match="reserved"):
        build_training_request(clash, **SETTINGS)
