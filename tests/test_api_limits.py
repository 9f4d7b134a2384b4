"""jobs.api_limits: a request is refused exactly where AWS would refuse it."""

from __future__ import annotations

import io
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ParamValidationError
from botocore.stub import Stubber
from botocore.validate import validate_parameters

from jobs.api_limits import MAX_RUNTIME_IN_SECONDS, Problem, aws_error_message, check, validate

JOB_NAME_PATTERN = "[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"


def training_request(**changes: Any) -> dict[str, Any]:
    """A complete CreateTrainingJob request, as anyjob sends it; keyword arguments replace members."""
    request: dict[str, Any] = {
        "TrainingJobName": "anyjob-linear-2024-05-01-12-00-00",
        "RoleArn": "arn:aws:iam::123456789012:role/service-role/AnyjobTraining",
        "AlgorithmSpecification": {
            "TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/anyjob:1.0",
            "TrainingInputMode": "File",
        },
        "HyperParameters": {"learning_rate": "0.01", "epochs": "10", "sagemaker_program": "train.py"},
        "Environment": {"PYTHONUNBUFFERED": "1", "ANYJOB_MODE": "multi\nline is fine here"},
        "InputDataConfig": [
            channel("train"),
            channel("validation"),
            {**channel("code"), "ContentType": "application/x-tar", "CompressionType": "None"},
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://anyjob-bucket/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86_400},
        "VpcConfig": {"SecurityGroupIds": ["sg-0123456789abcdef0"], "Subnets": ["subnet-0123456789abcdef0"]},
        "EnableNetworkIsolation": True,
        "Tags": [{"Key": "project", "Value": "anyjob"}, {"Key": "owner", "Value": "alice@example.com"}],
    }
    request.update(changes)
    return request


def channel(name: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": f"s3://anyjob-bucket/data/{name}/",
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        "InputMode": "File",
    }


def problems_of(**changes: Any) -> list[Problem]:
    return validate("CreateTrainingJob", training_request(**changes))


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, problems
    return problems[0]


def test_it_accepts_a_complete_training_job() -> None:
    assert validate("CreateTrainingJob", training_request()) == []
    check("CreateTrainingJob", training_request())  # does not raise


def test_it_accepts_a_minimal_training_job() -> None:
    request = training_request()
    minimal = {key: request[key] for key in ("TrainingJobName", "RoleArn", "OutputDataConfig")}
    assert validate("CreateTrainingJob", minimal) == []


def test_it_accepts_20_channels_and_refuses_21() -> None:
    assert problems_of(InputDataConfig=[channel(f"c{i}") for i in range(20)]) == []

    problem = only(problems_of(InputDataConfig=[channel(f"c{i}") for i in range(21)]))
    assert problem.kind == "max_entries"
    assert problem.path == "InputDataConfig"
    assert problem.member == "inputDataConfig"
    assert problem.message == "At most 20 channels are allowed (21 given)."
    assert problem.aws_message is not None
    assert problem.aws_message.startswith("Value '[{ChannelName=c0, DataSource={S3DataSource={")
    assert problem.aws_message.endswith(
        "…' at 'inputDataConfig' failed to satisfy constraint: "
        "Member must have length less than or equal to 20"
    )


def test_it_refuses_a_job_without_channels_as_boto3_does() -> None:
    problem = only(problems_of(InputDataConfig=[]))
    assert (problem.kind, problem.origin) == ("min_entries", "sdk")
    assert problem.message == "At least 1 channel is required (0 given)."
    assert problem.aws_message == (
        "Value '[]' at 'inputDataConfig' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1"
    )
    with pytest.raises(ParamValidationError, match="InputDataConfig"):
        check("CreateTrainingJob", training_request(InputDataConfig=[]))


def test_it_refuses_a_job_name_that_breaks_the_pattern() -> None:
    problem = only(problems_of(TrainingJobName="bad name"))
    assert (problem.path, problem.member, problem.kind) == ("TrainingJobName", "trainingJobName", "pattern")
    assert problem.message == (
        "Job name 'bad name' may only contain letters, digits and hyphens, "
        "and must start and end with a letter or digit."
    )
    assert problem.aws_message == (
        "Value 'bad name' at 'trainingJobName' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {JOB_NAME_PATTERN}"
    )


@pytest.mark.parametrize("name", ["-starts-with-hyphen", "ends-with-hyphen-", "under_score", "dot.ted"])
def test_it_matches_the_whole_job_name_against_the_unanchored_pattern(name: str) -> None:
    assert only(problems_of(TrainingJobName=name)).kind == "pattern"


def test_it_refuses_a_64_character_job_name() -> None:
    name = "a" * 32 + "-" + "a" * 31  # 63 letters: the pattern still holds, the length does not
    problem = only(problems_of(TrainingJobName=name))
    assert problem.kind == "max_length"
    assert problem.message == "Job name must be at most 63 characters (it has 64)."
    assert problem.aws_message == (
        f"Value '{name}' at 'trainingJobName' failed to satisfy constraint: "
        "Member must have length less than or equal to 63"
    )
    assert problems_of(TrainingJobName=name[1:]) == []


def test_it_words_one_error_as_aws_does() -> None:
    assert aws_error_message(problems_of(TrainingJobName="bad name")) == (
        "1 validation error detected: Value 'bad name' at 'trainingJobName' failed to satisfy "
        f"constraint: Member must satisfy regular expression pattern: {JOB_NAME_PATTERN}"
    )


def test_it_words_two_errors_as_aws_does() -> None:
    name = "a" * 64  # 64 letters: breaks both the pattern and the length, reported in that order
    assert aws_error_message(problems_of(TrainingJobName=name)) == (
        f"2 validation errors detected: Value '{name}' at 'trainingJobName' failed to satisfy "
        f"constraint: Member must satisfy regular expression pattern: {JOB_NAME_PATTERN}; "
        f"Value '{name}' at 'trainingJobName' failed to satisfy constraint: "
        "Member must have length less than or equal to 63"
    )


def test_it_refuses_duplicate_channel_names() -> None:
    problem = only(problems_of(InputDataConfig=[channel("train"), channel("test"), channel("train")]))
    assert (problem.kind, problem.origin) == ("duplicate", "service")
    assert problem.path == "InputDataConfig[2].ChannelName"
    assert problem.member == "inputDataConfig.3.member.channelName"
    assert problem.message == "Channel name 'train' is used by more than one channel."


def test_it_refuses_a_channel_name_with_a_space() -> None:
    problem = only(problems_of(InputDataConfig=[channel("train"), channel("my data")]))
    assert problem.path == "InputDataConfig[1].ChannelName"
    assert problem.member == "inputDataConfig.2.member.channelName"
    assert problem.message == "Channel name 'my data' may only contain letters, digits, '.', '-' and '_'."
    assert problem.aws_message == (
        "Value 'my data' at 'inputDataConfig.2.member.channelName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: [A-Za-z0-9\\.\\-_]+"
    )


def test_it_accepts_100_hyperparameters_and_refuses_101() -> None:
    assert problems_of(HyperParameters={f"p{i}": "1" for i in range(100)}) == []

    problem = only(problems_of(HyperParameters={f"p{i}": "1" for i in range(101)}))
    assert (problem.path, problem.kind) == ("HyperParameters", "max_entries")
    assert problem.message == "At most 100 hyperparameters are allowed (101 given)."
    assert problem.aws_message is not None
    assert problem.aws_message.startswith("Value '{p0=1, p1=1, p2=1,")
    assert problem.aws_message.endswith(
        "…' at 'hyperParameters' failed to satisfy constraint: "
        "Member must have length less than or equal to 100"
    )


def test_it_accepts_a_2500_character_hyperparameter_and_refuses_2501() -> None:
    assert problems_of(HyperParameters={"classes": "x" * 2500}) == []

    problem = only(problems_of(HyperParameters={"epochs": "10", "classes": "x" * 2501}))
    assert (problem.path, problem.member, problem.kind) == (
        "HyperParameters.classes",
        "hyperParameters",
        "max_length",
    )
    assert problem.message == "Hyperparameter 'classes' must be at most 2,500 characters (it has 2,501)."
    # AWS quotes the whole map and lists every rule of a value (as in its real messages).
    assert problem.aws_message == (
        "Value '{epochs=10, classes=" + "x" * 80 + "…' at 'hyperParameters' failed to satisfy "
        "constraint: Map value must satisfy constraint: [Member must have length less than or "
        "equal to 2500, Member must have length greater than or equal to 0, Member must satisfy "
        "regular expression pattern: .*]"
    )


def test_it_refuses_a_257_character_hyperparameter_name() -> None:
    assert problems_of(HyperParameters={"k" * 256: "1"}) == []

    problem = only(problems_of(HyperParameters={"k" * 257: "1"}))
    assert problem.kind == "max_length"
    assert problem.message == (
        f"Hyperparameter name '{'k' * 60}…' must be at most 256 characters (it has 257)."
    )
    assert problem.aws_message is not None
    assert "Map keys must satisfy constraint: [Member must have length less than or equal to 256" in (
        problem.aws_message
    )


def test_it_refuses_a_hyperparameter_on_several_lines() -> None:
    # The model's ".*" is a Java pattern: '.' matches no line terminator, not even '\r'.
    for value in ("line\nbreak", "carriage\rreturn", "line\u2028separator"):
        problem = only(problems_of(HyperParameters={"text": value}))
        assert problem.message == "Hyperparameter 'text' must be a single line."


def test_it_reads_digits_in_patterns_as_java_does() -> None:
    # Java's \\d is ASCII only: an account number in Arabic-Indic digits is not one.
    problem = only(problems_of(RoleArn="arn:aws:iam::١٢٣٤٥٦٧٨٩٠١٢:role/AnyjobTraining"))
    assert (problem.path, problem.kind) == ("RoleArn", "pattern")
    assert problem.message == (
        "Role ARN 'arn:aws:iam::١٢٣٤٥٦٧٨٩٠١٢:role/AnyjobTraining' must be an IAM role ARN, "
        "like arn:aws:iam::123456789012:role/MyRole."
    )


def test_it_refuses_an_environment_variable_name_breaking_the_pattern() -> None:
    problem = only(problems_of(Environment={"1ST_TRY": "x"}))
    assert (problem.path, problem.member, problem.kind) == ("Environment.1ST_TRY", "environment", "pattern")
    assert problem.message == (
        "Environment variable name '1ST_TRY' must start with a letter or '_' "
        "and contain only letters, digits and '_'."
    )
    assert problem.aws_message == (
        "Value '{1ST_TRY=x}' at 'environment' failed to satisfy constraint: Map keys must satisfy "
        "constraint: [Member must have length less than or equal to 512, Member must have length "
        "greater than or equal to 0, Member must satisfy regular expression pattern: "
        "[a-zA-Z_][a-zA-Z0-9_]*]"
    )


def test_it_refuses_a_513_character_environment_value() -> None:
    assert problems_of(Environment={"TOKEN": "v" * 512}) == []

    problem = only(problems_of(Environment={"TOKEN": "v" * 513}))
    assert problem.path == "Environment.TOKEN"
    assert problem.message == "Environment variable 'TOKEN' must be at most 512 characters (it has 513)."


def test_it_refuses_51_tags() -> None:
    assert problems_of(Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(50)]) == []

    problem = only(problems_of(Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)]))
    assert (problem.path, problem.kind) == ("Tags", "max_entries")
    assert problem.message == "At most 50 tags are allowed (51 given)."


def test_it_refuses_a_tag_key_with_a_forbidden_character() -> None:
    problem = only(problems_of(Tags=[{"Key": "cost#centre", "Value": "x"}]))
    assert (problem.path, problem.member) == ("Tags[0].Key", "tags.1.member.key")
    assert problem.message == (
        "Tag key 'cost#centre' may only contain letters, digits, spaces and _ . : / = + - @."
    )


def test_it_accepts_a_tag_key_in_any_script() -> None:
    tags = [{"Key": "Größe", "Value": "façade"}, {"Key": "プロジェクト", "Value": "١٢٣ ok"}]
    assert problems_of(Tags=tags) == []


def test_it_refuses_a_runtime_of_0_seconds_as_boto3_does() -> None:
    problem = only(problems_of(StoppingCondition={"MaxRuntimeInSeconds": 0}))
    assert (problem.kind, problem.origin) == ("min_value", "sdk")
    assert problem.message == "Maximum runtime must be at least 1 second, not 0."
    with pytest.raises(ParamValidationError, match="MaxRuntimeInSeconds"):
        check("CreateTrainingJob", training_request(StoppingCondition={"MaxRuntimeInSeconds": 0}))


def test_it_accepts_a_runtime_of_28_days_and_refuses_a_second_more() -> None:
    assert MAX_RUNTIME_IN_SECONDS == 2_419_200
    assert problems_of(StoppingCondition={"MaxRuntimeInSeconds": 2_419_200}) == []

    problem = only(problems_of(StoppingCondition={"MaxRuntimeInSeconds": 2_419_201}))
    assert (problem.kind, problem.origin) == ("max_value", "service")
    assert problem.path == "StoppingCondition.MaxRuntimeInSeconds"
    assert problem.message == "Maximum runtime must be at most 2,419,200 seconds (28 days), not 2,419,201."


@pytest.mark.parametrize("member", ["InstanceCount", "VolumeSizeInGB"])
def test_it_refuses_zero_instances_or_gigabytes(member: str) -> None:
    resources = {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30, member: 0}
    problem = only(problems_of(ResourceConfig=resources))
    assert (problem.path, problem.kind, problem.origin) == (
        f"ResourceConfig.{member}",
        "min_value",
        "service",
    )


def test_it_refuses_an_unknown_instance_type() -> None:
    resources = {"InstanceType": "ml.m5.huge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    problem = only(problems_of(ResourceConfig=resources))
    assert (problem.path, problem.kind) == ("ResourceConfig.InstanceType", "enum")
    assert problem.message.startswith("Instance type 'ml.m5.huge' is not a valid value (for example ml.")
    assert problem.aws_message is not None
    assert "Member must satisfy enum value set: [ml.m4.xlarge, " in problem.aws_message
    assert "ml.m5.xlarge" in problem.aws_message


def test_it_lists_a_short_enum_in_full() -> None:
    spec = {"TrainingImage": "image:1", "TrainingInputMode": "Stream"}
    problem = only(problems_of(AlgorithmSpecification=spec))
    assert problem.message == "Training input mode 'Stream' is not one of: Pipe, File, FastFile."


def test_it_refuses_a_missing_role() -> None:
    request = training_request()
    del request["RoleArn"]
    problem = only(validate("CreateTrainingJob", request))
    assert (problem.path, problem.kind, problem.origin) == ("RoleArn", "required", "sdk")
    assert problem.message == "Role ARN is required."
    assert (
        problem.aws_message == "Value null at 'roleArn' failed to satisfy constraint: Member must not be null"
    )
    # boto3 refuses this before sending: check() raises what boto3 raises.
    with pytest.raises(ParamValidationError, match='Missing required parameter in input: "RoleArn"'):
        check("CreateTrainingJob", request)


def test_it_refuses_text_for_a_number() -> None:
    resources = {"InstanceType": "ml.m5.xlarge", "InstanceCount": "2", "VolumeSizeInGB": 30}
    problem = only(problems_of(ResourceConfig=resources))
    assert (problem.path, problem.kind, problem.origin) == ("ResourceConfig.InstanceCount", "type", "sdk")
    assert problem.message == "Instance count must be a whole number, not text."
    assert problem.aws_message is None


def test_it_refuses_a_number_for_text() -> None:
    problem = only(problems_of(HyperParameters={"epochs": 10}))
    assert (problem.path, problem.kind) == ("HyperParameters.epochs", "type")
    assert problem.message == "Hyperparameter 'epochs' must be text, not a number."
    with pytest.raises(ParamValidationError, match=r"Invalid type for parameter HyperParameters\.epochs"):
        check("CreateTrainingJob", training_request(HyperParameters={"epochs": 10}))


def test_it_refuses_an_unknown_member() -> None:
    resources = {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30, "Gpus": 1}
    problem = only(problems_of(ResourceConfig=resources))
    assert (problem.path, problem.member, problem.kind) == (
        "ResourceConfig.Gpus",
        "resourceConfig.gpus",
        "unknown",
    )
    assert problem.message == "Unknown field 'Gpus' in ResourceConfig."


def test_it_suggests_the_member_meant() -> None:
    problem = only(validate("StopTrainingJob", {"TrainingJobName": "job", "TrainingJobname": "job"}))
    assert (
        problem.message == "Unknown field 'TrainingJobname' in the request (did you mean 'TrainingJobName'?)."
    )


def test_it_refuses_an_s3_uri_over_1024_characters() -> None:
    uri = "s3://anyjob-bucket/" + "k" * 1006
    assert len(uri) == 1025
    problem = only(problems_of(OutputDataConfig={"S3OutputPath": uri}))
    assert (problem.path, problem.kind) == ("OutputDataConfig.S3OutputPath", "max_length")
    assert problem.message == "S3 output path must be at most 1,024 characters (it has 1,025)."
    assert problem.aws_message == (
        f"Value '{uri[:100]}…' at 'outputDataConfig.s3OutputPath' failed to satisfy constraint: "
        "Member must have length less than or equal to 1024"
    )


@pytest.mark.parametrize("uri", ["anyjob-bucket/data", "s3:/anyjob-bucket/data", "gs://bucket/data", "s3://"])
def test_it_refuses_an_s3_uri_breaking_the_pattern(uri: str) -> None:
    channels = [
        {**channel("train"), "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}}}
    ]
    problem = only(problems_of(InputDataConfig=channels))
    assert problem.path == "InputDataConfig[0].DataSource.S3DataSource.S3Uri"
    assert problem.member == "inputDataConfig.1.member.dataSource.s3DataSource.s3Uri"
    assert problem.message == (
        f"S3 URI '{uri}' must be an s3:// or https:// address with a bucket, like s3://bucket/prefix."
    )


def test_it_raises_a_validation_exception_as_aws_does() -> None:
    with pytest.raises(ClientError) as raised:
        check("CreateTrainingJob", training_request(TrainingJobName="bad name"))
    error = raised.value
    assert error.operation_name == "CreateTrainingJob"
    assert error.response["Error"]["Code"] == "ValidationException"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error.response["Error"]["Message"].startswith(
        "1 validation error detected: Value 'bad name' at 'trainingJobName'"
    )
    assert str(error).startswith(
        "An error occurred (ValidationException) when calling the CreateTrainingJob operation: "
        "1 validation error detected"
    )


def test_it_reports_the_service_rules_only_once_the_model_is_satisfied() -> None:
    request = training_request(InputDataConfig=[channel("train"), channel("train")])
    with pytest.raises(ClientError) as raised:
        check("CreateTrainingJob", request)
    assert raised.value.response["Error"]["Message"] == (
        "Duplicate ChannelName 'train' in InputDataConfig: each ChannelName must be unique."
    )

    request["TrainingJobName"] = "bad name"
    with pytest.raises(ClientError) as raised:
        check("CreateTrainingJob", request)
    assert raised.value.response["Error"]["Message"].startswith("1 validation error detected")
    assert len(validate("CreateTrainingJob", request)) == 2  # the form still shows both


def test_it_refuses_an_invocation_body_over_6_mib() -> None:
    invocation = {"EndpointName": "anyjob-linear", "Body": b"x" * 6_291_456, "ContentType": "text/csv"}
    assert validate("InvokeEndpoint", invocation) == []

    invocation["Body"] = b"x" * 6_291_457
    problem = only(validate("InvokeEndpoint", invocation))
    assert (problem.path, problem.member, problem.kind) == ("Body", "body", "max_length")
    assert problem.message == "Request body must be at most 6,291,456 bytes (6 MiB), not 6,291,457 bytes."
    with pytest.raises(ClientError) as raised:
        check("InvokeEndpoint", invocation)
    # sagemaker-runtime declares its own error; the body is sensitive, so AWS does not quote it.
    assert raised.value.response["Error"] == {
        "Code": "ValidationError",
        "Message": (
            "1 validation error detected: Value at 'body' failed to satisfy constraint: "
            "Member must have length less than or equal to 6291456"
        ),
    }


def test_it_measures_a_text_or_file_body_in_bytes() -> None:
    assert (
        only(validate("InvokeEndpoint", {"EndpointName": "e", "Body": "é" * 3_145_729})).kind == "max_length"
    )
    stream = io.BytesIO(b"x" * 6_291_460)
    stream.seek(4)
    assert validate("InvokeEndpoint", {"EndpointName": "e", "Body": stream}) == []
    assert stream.tell() == 4  # not consumed


def test_it_refuses_custom_attributes_over_1024_characters() -> None:
    invocation = {"EndpointName": "e", "Body": b"{}", "CustomAttributes": "a" * 1025}
    problem = only(validate("InvokeEndpoint", invocation))
    assert (problem.path, problem.kind) == ("CustomAttributes", "max_length")
    assert problem.aws_message == (
        "Value at 'customAttributes' failed to satisfy constraint: "
        "Member must have length less than or equal to 1024"
    )


@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("DescribeTrainingJob", {"TrainingJobName": "anyjob-1"}),
        ("StopTrainingJob", {"TrainingJobName": "anyjob-1"}),
        ("ListTrainingJobs", {"MaxResults": 100, "StatusEquals": "InProgress", "NameContains": "anyjob"}),
        (
            "CreateModel",
            {
                "ModelName": "anyjob-model",
                "ExecutionRoleArn": "arn:aws:iam::123456789012:role/AnyjobTraining",
                "PrimaryContainer": {
                    "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/anyjob:1.0",
                    "ModelDataUrl": "s3://anyjob-bucket/output/anyjob-1/output/model.tar.gz",
                    "Environment": {"SAGEMAKER_PROGRAM": "inference.py"},
                },
            },
        ),
        (
            "CreateEndpointConfig",
            {
                "EndpointConfigName": "anyjob-config",
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": "anyjob-model",
                        "InstanceType": "ml.m5.large",
                        "InitialInstanceCount": 1,
                    }
                ],
            },
        ),
        ("CreateEndpoint", {"EndpointName": "anyjob-endpoint", "EndpointConfigName": "anyjob-config"}),
        ("DeleteEndpoint", {"EndpointName": "anyjob-endpoint"}),
    ],
)
def test_it_accepts_the_other_requests_anyjob_sends(operation: str, params: dict[str, Any]) -> None:
    assert validate(operation, params) == []


def test_it_refuses_a_page_of_101_training_jobs() -> None:
    problem = only(validate("ListTrainingJobs", {"MaxResults": 101}))
    assert problem.message == "Max results must be at most 100, not 101."


def test_it_refuses_an_unknown_operation() -> None:
    with pytest.raises(ValueError, match="CreateTrainingJobs"):
        validate("CreateTrainingJobs", {})


def test_it_catches_what_boto3_lets_through() -> None:
    """Why this module exists: botocore checks types, required members and minimums only."""
    request = training_request(
        TrainingJobName="bad name",
        HyperParameters={"classes": "x" * 2501},
        InputDataConfig=[channel(f"c{i}") for i in range(21)],
        Tags=[{"Key": "cost#centre", "Value": "x"}],
        StoppingCondition={"MaxRuntimeInSeconds": 2_419_201},
    )
    client = boto3.client(
        "sagemaker", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    validate_parameters(request, client.meta.service_model.operation_model("CreateTrainingJob").input_shape)
    with Stubber(client) as stubber:
        arn = "arn:aws:sagemaker:us-east-1:123456789012:training-job/bad-name"
        stubber.add_response("create_training_job", {"TrainingJobArn": arn}, request)
        assert client.create_training_job(**request)["TrainingJobArn"] == arn  # boto3 would send it

    kinds = sorted(problem.kind for problem in validate("CreateTrainingJob", request))
    assert kinds == ["max_entries", "max_length", "max_value", "pattern", "pattern"]
