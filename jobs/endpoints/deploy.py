"""The three requests that deploy a job's model, as pure functions (no I/O).

The generic image serves: ``SAGEMAKER_PROGRAM`` names the inference script and
``SAGEMAKER_SUBMIT_DIRECTORY`` the job's code bundle, which the container fetches itself, and
``ModelDataUrl`` is the job's ``model.tar.gz`` (extracted at ``/opt/ml/model``).

Each request carries the tag ``anyjob:endpoint-id`` = the row's id (once it has one): a worker
that finds the name taken proves by it that the model, config or endpoint is this row's own.
"""

from __future__ import annotations

from typing import Any

from jobs.requests import ENDPOINT_ID_TAG

VARIANT = "AllTraffic"


def _tagged(request: dict[str, Any], endpoint: Any) -> dict[str, Any]:
    if getattr(endpoint, "pk", None) is not None:
        request["Tags"] = [{"Key": ENDPOINT_ID_TAG, "Value": str(endpoint.pk)}]
    return request


def model_request(
    endpoint: Any,
    job: Any,
    *,
    image: str,
    role_arn: str,
    region: str,
    subnets: list[str] | tuple[str, ...] = (),
    security_group_ids: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    environment = {
        "SAGEMAKER_PROGRAM": endpoint.inference_entry_point,
        "SAGEMAKER_SUBMIT_DIRECTORY": job.source_uri,
        "SAGEMAKER_REGION": region,
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        **{str(k): str(v) for k, v in (endpoint.environment or {}).items()},
    }
    request: dict[str, Any] = {
        "ModelName": endpoint.name,
        "ExecutionRoleArn": role_arn,
        "PrimaryContainer": {"Image": image, "ModelDataUrl": job.model_artifacts, "Environment": environment},
    }
    if subnets or security_group_ids:
        request["VpcConfig"] = {"SecurityGroupIds": list(security_group_ids), "Subnets": list(subnets)}
    return _tagged(request, endpoint)


def config_request(endpoint: Any, *, kms_key_id: str = "") -> dict[str, Any]:
    request: dict[str, Any] = {
        "EndpointConfigName": endpoint.name,
        "ProductionVariants": [
            {
                "VariantName": VARIANT,
                "ModelName": endpoint.name,
                "InstanceType": endpoint.instance_type,
                "InitialInstanceCount": endpoint.instance_count,
            }
        ],
    }
    if kms_key_id:
        request["KmsKeyId"] = kms_key_id
    return _tagged(request, endpoint)


def endpoint_request(endpoint: Any) -> dict[str, Any]:
    return _tagged({"EndpointName": endpoint.name, "EndpointConfigName": endpoint.name}, endpoint)


def requests_for(endpoint: Any, job: Any, settings: Any) -> dict[str, dict[str, Any]]:
    """All three, from anyjob's settings (any object with the ``ANYJOB_*`` attributes)."""
    return {
        "CreateModel": model_request(
            endpoint,
            job,
            image=settings.ANYJOB_TRAINING_IMAGE,
            role_arn=settings.ANYJOB_ROLE_ARN,
            region=settings.ANYJOB_REGION,
            subnets=settings.ANYJOB_VPC_SUBNETS,
            security_group_ids=settings.ANYJOB_VPC_SECURITY_GROUPS,
        ),
        "CreateEndpointConfig": config_request(endpoint, kms_key_id=settings.ANYJOB_KMS_KEY_ID),
        "CreateEndpoint": endpoint_request(endpoint),
    }
