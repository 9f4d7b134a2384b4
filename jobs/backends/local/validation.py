"""What the local backend refuses beyond AWS's own rules (``jobs.api_limits``), and how.

Each ``*_problems`` function lists ``(path, error code, message)``: the new-job and deploy
forms show them next to their fields (``LocalBackend.preflight``), and a create call refuses
with the first (``refuse``). ``file://`` locations must lie under ``ANYJOB_LOCAL_FILE_ROOTS``,
``s3://`` ones need a role with credentials here (unless ``s3://`` is the embedded S3), and
``*_s3_shaped`` lets AWS's length and pattern rules check ``file://`` URIs as S3 URIs of the
same length.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.conf import settings

from anyjob_container.environment import decode_value
from jobs import storage
from jobs.backends.local import contract, roles
from jobs.backends.local.resources import instance_type_problem
from jobs.backends.local.shapes import VALIDATION, client_error


def local_problems(request: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """What the emulator needs beyond what AWS checks, as ``(path, error code, message)``
    (AWS's serverless jobs may omit what is required here)."""
    problems: list[tuple[str, str, str]] = []
    spec = request.get("AlgorithmSpecification") or {}
    if not spec.get("TrainingImage"):
        problems.append(
            (
                "AlgorithmSpecification.TrainingImage",
                VALIDATION,
                "AlgorithmSpecification.TrainingImage is required.",
            )
        )
    problems += contract.command_problems(request)
    if spec.get("TrainingInputMode", "File") == "Pipe":
        problems.append(
            (
                "AlgorithmSpecification.TrainingInputMode",
                VALIDATION,
                "The local backend supports File and FastFile input modes.",
            )
        )
    resources = request.get("ResourceConfig") or {}
    if not resources.get("InstanceType"):
        problems.append(
            ("ResourceConfig.InstanceType", VALIDATION, "ResourceConfig.InstanceType is required.")
        )
    elif unknown := instance_type_problem(resources["InstanceType"]):
        problems.append(("ResourceConfig.InstanceType", VALIDATION, unknown))
    if resources.get("InstanceCount", 1) != 1:
        problems.append(
            (
                "ResourceConfig.InstanceCount",
                "ResourceLimitExceeded",
                f"The local backend runs one instance per job; InstanceCount {resources['InstanceCount']} "
                "needs the sagemaker backend.",
            )
        )
    code = decode_value((request.get("HyperParameters") or {}).get("sagemaker_submit_directory"))
    if isinstance(code, str) and code.startswith("/opt/ml/"):
        code = None  # inside the job's own /opt/ml (an isolated job's code channel): not the host's
    if isinstance(code, str) and code and "://" not in code:
        code = Path(code).absolute().as_uri()  # a plain path, as the container accepts it
    if isinstance(code, str):
        problems += file_root_problems("HyperParameters.sagemaker_submit_directory", code)
    output = (request.get("OutputDataConfig") or {}).get("S3OutputPath", "")
    if not isinstance(output, str) or not output.startswith(("s3://", "file://")):
        problems.append(
            (
                "OutputDataConfig.S3OutputPath",
                VALIDATION,
                f"S3OutputPath {output!r} must be an s3:// or file:// URI.",
            )
        )
    else:
        problems += file_root_problems("OutputDataConfig.S3OutputPath", output)
    for i, channel in enumerate(request.get("InputDataConfig") or []):
        source = (channel.get("DataSource") or {}).get("S3DataSource")
        name = channel.get("ChannelName")
        where = f"InputDataConfig[{i}]"
        if not source:
            problems.append(
                (where, VALIDATION, f"Channel {name}: the local backend reads S3DataSource only.")
            )
            continue
        if source.get("S3DataType", "S3Prefix") != "S3Prefix":
            problems.append(
                (where, VALIDATION, f"Channel {name}: the local backend reads S3Prefix data only.")
            )
        if channel.get("InputMode", spec.get("TrainingInputMode", "File")) == "Pipe":
            problems.append(
                (
                    f"{where}.InputMode",
                    VALIDATION,
                    f"Channel {name}: Pipe input mode is not supported locally.",
                )
            )
        uri = source.get("S3Uri")
        if isinstance(uri, str):
            problems += file_root_problems(f"{where}.DataSource.S3DataSource.S3Uri", uri)
    problems += role_problems(request.get("RoleArn"), training_s3_locations(request))
    return problems


def training_s3_locations(request: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(path, uri)`` of every location a training job reads or writes on its role's behalf."""
    found: list[tuple[str, Any]] = []
    for i, channel in enumerate(request.get("InputDataConfig") or []):
        source = (channel.get("DataSource") or {}).get("S3DataSource") or {}
        found.append((f"InputDataConfig[{i}].DataSource.S3DataSource.S3Uri", source.get("S3Uri")))
    code = decode_value((request.get("HyperParameters") or {}).get("sagemaker_submit_directory"))
    return [
        *found,
        ("OutputDataConfig.S3OutputPath", (request.get("OutputDataConfig") or {}).get("S3OutputPath")),
        ("HyperParameters.sagemaker_submit_directory", code),
        ("CheckpointConfig.S3Uri", (request.get("CheckpointConfig") or {}).get("S3Uri")),
    ]


def role_problems(role_arn: Any, locations: list[tuple[str, Any]]) -> list[tuple[str, str, str]]:
    """``s3://`` locations are read and written with the role's credentials, never the
    server's: a role without credentials here (``ANYJOB_LOCAL_ROLES``) may name none — unless
    ``s3://`` is anyjob's embedded store (``storage.s3_embedded()``), which the team shares as
    it shares the ``file://`` one: anyjob's own processes stage from it and upload to it, and
    the job's container gets no credentials for it either way (``roles.job_environment``)."""
    s3 = [path for path, uri in locations if isinstance(uri, str) and uri.startswith("s3://")]
    if not s3 or roles.is_mapped(role_arn if isinstance(role_arn, str) else None):
        return []
    if storage.s3_embedded():
        return []
    message = roles.unmapped_message(role_arn if isinstance(role_arn, str) else None)
    return [(path, VALIDATION, message) for path in s3]


def sandbox_refusal(operation: str) -> None:
    """Fail closed: with ``ANYJOB_SANDBOX=on`` (the default), no job or endpoint starts on a
    machine where the sandbox cannot run (``sandbox.isolation_problem``)."""
    from jobs.backends.local import sandbox
    from jobs.checks import SANDBOX_FIX

    try:
        problem = sandbox.isolation_problem()  # None when it can run, or when it is off
    except sandbox.SandboxError as exc:  # ANYJOB_SANDBOX itself is wrong
        problem = str(exc)
    if problem:
        message = f"The local backend cannot sandbox code on this machine, so it runs none: {problem}."
        raise client_error(operation, VALIDATION, f"{message} {SANDBOX_FIX}")


def file_root_problems(path: str, uri: str) -> list[tuple[str, str, str]]:
    """A ``file://`` URI must lie under one of ``ANYJOB_LOCAL_FILE_ROOTS``."""
    if not uri.startswith("file://"):
        return []
    roots = [Path(r) for r in settings.ANYJOB_LOCAL_FILE_ROOTS]
    try:
        target = storage.parse(uri, prefix=True).path.resolve()
    except (storage.StorageError, OSError, ValueError) as exc:
        return [(path, VALIDATION, str(exc))]
    if any(target == root or target.is_relative_to(root) for root in roots):
        return []
    allowed = ", ".join(str(r) for r in roots) or "(none: set ANYJOB_LOCAL_FILE_ROOTS)"
    return [
        (
            path,
            "AccessDenied",
            f"{uri} is outside the folders local jobs may read and write ({allowed}); "
            "set ANYJOB_LOCAL_FILE_ROOTS to allow more.",
        )
    ]


def _path_problems(path: str, value: str) -> list[tuple[str, str, str]]:
    """A local path or ``file://`` URI the endpoint reads must lie under the file roots."""
    if value.startswith("/"):
        if value == "/opt/ml" or value.startswith("/opt/ml/"):
            return []  # inside the container (e.g. /opt/ml/model/code)
        value = Path(value).as_uri()
    return file_root_problems(path, value)


def model_problems(request: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """What the emulator needs of a CreateModel request beyond AWS's rules."""
    problems: list[tuple[str, str, str]] = []
    container = request.get("PrimaryContainer")
    if not container:
        return [
            (
                "PrimaryContainer",
                VALIDATION,
                "The local backend serves models with one PrimaryContainer (not Containers).",
            )
        ]
    if container.get("Mode", "SingleModel") != "SingleModel":
        problems.append(
            ("PrimaryContainer.Mode", VALIDATION, "The local backend serves SingleModel containers only.")
        )
    if container.get("ModelDataSource"):
        problems.append(
            (
                "PrimaryContainer.ModelDataSource",
                VALIDATION,
                "The local backend reads the model from ModelDataUrl (a model.tar.gz), not ModelDataSource.",
            )
        )
    url = container.get("ModelDataUrl")
    if isinstance(url, str):
        if not url.startswith(("s3://", "file://")):
            problems.append(
                (
                    "PrimaryContainer.ModelDataUrl",
                    VALIDATION,
                    f"ModelDataUrl {url!r} must be an s3:// or file:// URI of a model.tar.gz.",
                )
            )
        else:
            problems += file_root_problems("PrimaryContainer.ModelDataUrl", url)
    code = (container.get("Environment") or {}).get("SAGEMAKER_SUBMIT_DIRECTORY")
    if isinstance(code, str) and code.startswith(("/", "file://")):
        problems += _path_problems("PrimaryContainer.Environment.SAGEMAKER_SUBMIT_DIRECTORY", code)
    locations = [
        ("PrimaryContainer.ModelDataUrl", url),
        ("PrimaryContainer.Environment.SAGEMAKER_SUBMIT_DIRECTORY", code),
    ]
    problems += role_problems(request.get("ExecutionRoleArn"), locations)
    return problems


def endpoint_config_problems(request: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """What the emulator needs of a CreateEndpointConfig request beyond AWS's rules."""
    problems: list[tuple[str, str, str]] = []
    variants = request.get("ProductionVariants") or []
    if len(variants) != 1:
        problems.append(
            (
                "ProductionVariants",
                VALIDATION,
                f"The local backend serves one production variant per endpoint, not {len(variants)}.",
            )
        )
    for i, variant in enumerate(variants[:1]):
        count = variant.get("InitialInstanceCount", 1)
        if count != 1:
            problems.append(
                (
                    f"ProductionVariants[{i}].InitialInstanceCount",
                    "ResourceLimitExceeded",
                    f"The local backend runs one instance per endpoint; InitialInstanceCount {count} "
                    "needs the sagemaker backend.",
                )
            )
    for key in ("AsyncInferenceConfig", "ShadowProductionVariants", "ExplainerConfig", "DataCaptureConfig"):
        if request.get(key):
            problems.append((key, VALIDATION, f"The local backend does not support {key}."))
    return problems


def refuse(operation: str, problems: list[tuple[str, str, str]]) -> None:
    if problems:
        _, code, message = problems[0]
        raise client_error(operation, code, message)


def _s3_shaped(uri: str) -> str:
    # file:///data/x is checked as s3://file/data/x: every rule but the scheme still applies.
    return "s3://file" + uri.removeprefix("file://") if uri.startswith("file://") else uri


def as_s3_shaped(request: Mapping[str, Any]) -> dict[str, Any]:
    """The request with its ``file://`` URIs in S3's shape, for validation.

    The local backend also reads channels from and writes artifacts to ``file://`` paths
    (as the SageMaker SDK's local mode does); AWS would refuse them, so they are checked
    as if they were S3 URIs of the same length.
    """
    shaped = copy.deepcopy(dict(request))
    for channel in shaped.get("InputDataConfig") or []:
        source = (channel.get("DataSource") or {}).get("S3DataSource") or {}
        if isinstance(source.get("S3Uri"), str):
            source["S3Uri"] = _s3_shaped(source["S3Uri"])
    output = shaped.get("OutputDataConfig") or {}
    if isinstance(output.get("S3OutputPath"), str):
        output["S3OutputPath"] = _s3_shaped(output["S3OutputPath"])
    return shaped


def model_s3_shaped(request: Mapping[str, Any]) -> dict[str, Any]:
    """A CreateModel request with its ``file://`` model data in S3's shape, for validation."""
    shaped = copy.deepcopy(dict(request))
    for container in [shaped.get("PrimaryContainer") or {}, *(shaped.get("Containers") or [])]:
        if isinstance(container, dict) and isinstance(container.get("ModelDataUrl"), str):
            container["ModelDataUrl"] = _s3_shaped(container["ModelDataUrl"])
    return shaped
