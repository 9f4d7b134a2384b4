"""The ``CreateTrainingJob`` request for a ``TrainingJob``: a pure function, no I/O.

Hyperparameters are JSON-encoded as the SageMaker Python SDK does for framework estimators
(the container decodes each value with ``json.loads``): a string ``abc`` → ``"abc"``, a number
→ ``5`` or ``0.1``, a boolean → ``true``/``false``, a JSON value → compact JSON. The reserved
``sagemaker_*`` hyperparameters, which tell the generic image what to run, are encoded the same
(``reserved_hyperparameters``: the new-job preview shows the map this builds, nothing else).

With ``EnableNetworkIsolation`` the container has no network and no credentials, so it cannot
fetch its code from S3: as the SDK's ``Framework._prepare_for_training`` does, the code bundle
then travels as one more input channel, ``code`` (last, with the fields ``TrainingInput``
gives it by default), and ``sagemaker_submit_directory`` names where SageMaker puts it,
``/opt/ml/input/data/code/sourcedir.tar.gz``.

Each request carries the tag ``anyjob:job-id`` = the row's id: a worker that meets
``ResourceInUse`` proves by it that the job with that name is this row's own.
"""

from __future__ import annotations

import json
from typing import Any

#: The container's log level, as the SDK sends it (logging.INFO).
CONTAINER_LOG_LEVEL = 20
RESERVED = (
    "sagemaker_program",
    "sagemaker_submit_directory",
    "sagemaker_job_name",
    "sagemaker_region",
    "sagemaker_container_log_level",
)
TYPES = ("string", "number", "boolean", "json")
#: The channel that carries the code of a network-isolated job, and where the container finds it
#: (the SDK's ``code_channel_name`` and ``CONTAINER_CODE_CHANNEL_SOURCEDIR_PATH``).
CODE_CHANNEL = "code"
CODE_CHANNEL_PATH = "/opt/ml/input/data/code/sourcedir.tar.gz"
#: The tag naming the ``TrainingJob`` (or ``Endpoint``) row a request was made for.
JOB_ID_TAG = "anyjob:job-id"
ENDPOINT_ID_TAG = "anyjob:endpoint-id"
RESERVED_TAGS = (JOB_ID_TAG, ENDPOINT_ID_TAG)


def encode_hyperparameter(value: Any, kind: str) -> str:
    """One user hyperparameter as the string SageMaker carries. ``ValueError`` if it does not
    fit its type."""
    if kind == "string":
        return json.dumps(str(value))
    if kind == "number":
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a number")
        if isinstance(value, str):
            text = value.strip()
            try:
                value = int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    raise ValueError(f"{value!r} is not a number") from None
        if not isinstance(value, int | float) or value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value!r} is not a finite number")
        return json.dumps(value)
    if kind == "boolean":
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in ("true", "false"):
                raise ValueError(f"{value!r} is not true or false")
            return lowered
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not true or false")
        return "true" if value else "false"
    if kind == "json":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{value!r} is not valid JSON ({exc.msg})") from None
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    raise ValueError(f"unknown hyperparameter type {kind!r}: use one of {', '.join(TYPES)}")


def reserved_hyperparameters(
    *, entry_point: str, job_name: str, code_uri: str, region: str, network_isolation: bool
) -> dict[str, str]:
    """The ``sagemaker_*`` hyperparameters anyjob sets, as the SDK encodes them. ``code_uri`` is
    the job's own copy of its bundle; an isolated job reads it from the ``code`` channel."""
    return {
        "sagemaker_program": json.dumps(entry_point),
        "sagemaker_submit_directory": json.dumps(CODE_CHANNEL_PATH if network_isolation else code_uri),
        "sagemaker_job_name": json.dumps(job_name),
        "sagemaker_region": json.dumps(region),
        "sagemaker_container_log_level": json.dumps(CONTAINER_LOG_LEVEL),
    }


def code_channel(code_uri: str) -> dict[str, Any]:
    """The ``code`` channel of an isolated job, field for field as the SDK's
    ``_Job._prepare_channel`` makes it (``TrainingInput(code_uri).config``)."""
    return {
        "ChannelName": CODE_CHANNEL,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": code_uri,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
    }


def build_training_request(
    job: Any,
    *,
    code_uri: str,
    image: str,
    role_arn: str,
    region: str,
    default_output_path: str,
    kms_key_id: str = "",
    subnets: list[str] | tuple[str, ...] = (),
    security_group_ids: list[str] | tuple[str, ...] = (),
    job_id: int | None = None,
) -> dict[str, Any]:
    """The ``CreateTrainingJob`` request for ``job`` (a ``TrainingJob`` or anything with its
    fields). ``default_output_path`` is used when the job names none; ``kms_key_id`` encrypts
    the artifacts and the volume; ``subnets``/``security_group_ids`` put the job in a VPC;
    ``job_id`` (default: ``job.pk``, when it has one) goes in the ``anyjob:job-id`` tag."""
    hyperparameters: dict[str, str] = {}
    for item in job.hyperparameters or []:
        key = item["key"]
        if key in RESERVED:
            raise ValueError(f"hyperparameter {key!r} is reserved: anyjob sets it")
        hyperparameters[key] = encode_hyperparameter(item["value"], item.get("type", "string"))
    isolated = bool(job.network_isolation)
    hyperparameters.update(
        reserved_hyperparameters(
            entry_point=job.entry_point,
            job_name=job.name,
            code_uri=code_uri,
            region=region,
            network_isolation=isolated,
        )
    )
    request: dict[str, Any] = {
        "TrainingJobName": job.name,
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
        "RoleArn": role_arn,
        "HyperParameters": hyperparameters,
        "OutputDataConfig": {"S3OutputPath": job.output_path or default_output_path},
        "ResourceConfig": {
            "InstanceType": job.instance_type,
            "InstanceCount": job.instance_count,
            "VolumeSizeInGB": job.volume_size_gb,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": job.max_runtime_seconds},
        "EnableNetworkIsolation": isolated,
    }
    definitions = getattr(job, "metric_definitions", None) or []
    if definitions:  # AWS refuses an empty list
        request["AlgorithmSpecification"]["MetricDefinitions"] = [
            {"Name": d["name"], "Regex": d["regex"]} for d in definitions
        ]
    if kms_key_id:
        request["OutputDataConfig"]["KmsKeyId"] = kms_key_id
        request["ResourceConfig"]["VolumeKmsKeyId"] = kms_key_id
    if subnets or security_group_ids:
        request["VpcConfig"] = {"SecurityGroupIds": list(security_group_ids), "Subnets": list(subnets)}
    channels = []
    for channel in job.channels or []:
        entry: dict[str, Any] = {
            "ChannelName": channel["name"],
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": channel["uri"],
                }
            },
        }
        if channel.get("content_type"):
            entry["ContentType"] = channel["content_type"]
        if channel.get("input_mode"):
            entry["InputMode"] = channel["input_mode"]
        channels.append(entry)
    if isolated:
        if any(c["ChannelName"] == CODE_CHANNEL for c in channels):
            raise ValueError(
                f"channel {CODE_CHANNEL!r} is reserved with network isolation: it carries the code"
            )
        channels.append(code_channel(code_uri))
    if channels:  # AWS refuses an empty list
        request["InputDataConfig"] = channels
    if job.environment:
        request["Environment"] = {str(k): str(v) for k, v in job.environment.items()}
    tags = [{"Key": t["key"], "Value": t["value"]} for t in job.tags or []]
    for tag in tags:
        if tag["Key"] in RESERVED_TAGS:
            raise ValueError(f"tag {tag['Key']!r} is reserved: anyjob sets it")
    if job_id is None:
        job_id = getattr(job, "pk", None)
    if job_id is not None:
        tags.append({"Key": JOB_ID_TAG, "Value": str(job_id)})
    if tags:
        request["Tags"] = tags
    return request


def settings_kwargs(settings: Any) -> dict[str, Any]:
    """``build_training_request``'s keyword arguments from anyjob's settings (any object with
    the ``ANYJOB_*`` attributes): what every request of this installation shares."""
    store = settings.ANYJOB_ARTIFACT_STORE.rstrip("/")
    return {
        "image": settings.ANYJOB_TRAINING_IMAGE,
        "role_arn": settings.ANYJOB_ROLE_ARN,
        "region": settings.ANYJOB_REGION,
        "default_output_path": f"{store}/output",
        "kms_key_id": settings.ANYJOB_KMS_KEY_ID,
        "subnets": settings.ANYJOB_VPC_SUBNETS,
        "security_group_ids": settings.ANYJOB_VPC_SECURITY_GROUPS,
    }
