"""SageMaker's model, endpoint-config and endpoint operations through the API.

Each is the backend's own call (the same one the endpoints page makes), so an endpoint deployed
from the page is what ``DescribeEndpoint`` sees and the boto3 waiters follow. An endpoint made
through the API whose model is a history job's ``model.tar.gz`` (what SDK v2's ``deploy`` makes)
is also put on the endpoints page: a ``jobs.endpoints.models.Endpoint`` row owned by the key's
user, ``Creating``, which the endpoint poller then follows like one deployed from the page.

Models, configs and endpoints made here carry the tag ``anyjob:owner-id`` (never shown by
``ListTags``): deleting them is their owner's or staff's (``ownership``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.db import IntegrityError, transaction

from jobs.awsapi import ownership
from jobs.awsapi.common import OWNER_TAG, call, check, refuse_reserved_tags, shaped, timestamps
from jobs.awsapi.registry import Context, operation
from jobs.backends import get_backend
from jobs.endpoints.models import Endpoint
from jobs.models import TrainingJob
from jobs.tasks import move

log = logging.getLogger(__name__)

#: operation → (backend method, name member, ARN member of the describe answer).
_CREATES = {
    "CreateModel": ("create_model", "ModelName"),
    "CreateEndpointConfig": ("create_endpoint_config", "EndpointConfigName"),
    "CreateEndpoint": ("create_endpoint", "EndpointName"),
}
_DESCRIBES = {
    "DescribeModel": ("describe_model", "ModelName"),
    "DescribeEndpointConfig": ("describe_endpoint_config", "EndpointConfigName"),
    "DescribeEndpoint": ("describe_endpoint", "EndpointName"),
}
#: list operation → the backend method (its filters, sort and pages are the backend's).
_LISTS = {
    "ListModels": "list_models",
    "ListEndpointConfigs": "list_endpoint_configs",
    "ListEndpoints": "list_endpoints",
}
#: delete operation → (backend method, name member, describe method, ARN member).
_DELETES = {
    "DeleteModel": ("delete_model", "ModelName", "describe_model", "ModelArn"),
    "DeleteEndpointConfig": (
        "delete_endpoint_config",
        "EndpointConfigName",
        "describe_endpoint_config",
        "EndpointConfigArn",
    ),
    "DeleteEndpoint": ("delete_endpoint", "EndpointName", "describe_endpoint", "EndpointArn"),
}


def owned(ctx: Context, params: Mapping[str, Any]) -> dict[str, Any]:
    """The request with the owner's tag added to the user's own."""
    return {**params, "Tags": [*(params.get("Tags") or []), {"Key": OWNER_TAG, "Value": str(ctx.user.pk)}]}


def _create(operation_name: str) -> Any:
    method, _ = _CREATES[operation_name]

    def handler(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        backend = get_backend()
        check(operation_name, params, backend)
        refuse_reserved_tags(params.get("Tags"))
        request = owned(ctx, params)
        answer = call(getattr(backend, method), request)
        if operation_name == "CreateEndpoint":
            _dashboard_endpoint(ctx, backend, request)
        return shaped(operation_name, answer)

    handler.__name__ = method
    handler.__doc__ = f"``{operation_name}`` through the backend, tagged with its owner."
    return operation("sagemaker", operation_name)(handler)


def _describe(operation_name: str) -> Any:
    method, member = _DESCRIBES[operation_name]

    def handler(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        check(operation_name, params)
        return shaped(operation_name, call(getattr(get_backend(), method), params[member]))

    handler.__name__ = method
    handler.__doc__ = f"``{operation_name}``: the backend's answer, live."
    return operation("sagemaker", operation_name)(handler)


def _delete(operation_name: str) -> Any:
    method, member, describe, arn_member = _DELETES[operation_name]

    def handler(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        check(operation_name, params)
        backend = get_backend()
        name = params[member]
        arn = call(getattr(backend, describe), name)[arn_member]  # "Could not find …" when missing
        ownership.require_change(ctx, backend, operation_name, arn)
        call(getattr(backend, method), name)
        if operation_name == "DeleteEndpoint":
            for pk in Endpoint.objects.filter(name__iexact=name).values_list("pk", flat=True):
                move(Endpoint, pk, [*Endpoint.FOLLOWED, Endpoint.Status.PENDING], Endpoint.Status.DELETING)
        return {}

    handler.__name__ = method
    handler.__doc__ = f"``{operation_name}``: its owner's or staff's."
    return operation("sagemaker", operation_name)(handler)


def _list(operation_name: str) -> Any:
    method = _LISTS[operation_name]

    def handler(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        params = timestamps(operation_name, params)
        check(operation_name, params)
        return shaped(operation_name, call(getattr(get_backend(), method), **params))

    handler.__name__ = method
    handler.__doc__ = f"``{operation_name}`` with the service's filters, sort and pagination."
    return operation("sagemaker", operation_name)(handler)


for _name in _CREATES:
    _create(_name)
for _name in _DESCRIBES:
    _describe(_name)
for _name in _DELETES:
    _delete(_name)
for _name in _LISTS:
    _list(_name)


def model_job(url: str | None) -> TrainingJob | None:
    """The history job whose ``model.tar.gz`` is ``url`` (``<output>/<job>/output/model.tar.gz``,
    as SageMaker writes it): recorded on the row once the poller saw the job complete, else
    found by the job's name in the URL."""
    if not url:
        return None
    job = TrainingJob.objects.filter(model_artifacts=url).first()
    if job is None:
        parts = url.rstrip("/").rsplit("/", 3)
        if len(parts) == 4 and parts[2:] == ["output", "model.tar.gz"]:
            job = TrainingJob.objects.filter(name__iexact=parts[1]).first()
    return job


def _dashboard_endpoint(ctx: Context, backend: Any, request: Mapping[str, Any]) -> None:
    """Put an endpoint serving a history job's model on the endpoints page."""
    try:
        config = backend.describe_endpoint_config(request["EndpointConfigName"])
        variant = (config.get("ProductionVariants") or [{}])[0]
        model = backend.describe_model(variant.get("ModelName", ""))
    except (ClientError, BotoCoreError) as exc:
        log.info("endpoint %s is not put on the endpoints page: %s", request["EndpointName"], exc)
        return
    container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
    job = model_job(container.get("ModelDataUrl"))
    if job is None:
        return  # not a history job's model: the API (and the backend) have it, the page not
    environment = dict(container.get("Environment") or {})
    config_request = {k: v for k, v in config.items() if k not in ("EndpointConfigArn", "CreationTime")}
    model_request = {k: v for k, v in model.items() if k not in ("ModelArn", "CreationTime")}
    try:
        with transaction.atomic():
            Endpoint.objects.create(
                name=request["EndpointName"],
                job=job,
                owner=ctx.user,
                inference_entry_point=str(environment.get("SAGEMAKER_PROGRAM", "")),
                instance_type=str(variant.get("InstanceType", "")),
                instance_count=int(variant.get("InitialInstanceCount") or 1),
                environment={k: v for k, v in environment.items() if not k.startswith("SAGEMAKER_")},
                requests={
                    "CreateModel": _jsonable(model_request),
                    "CreateEndpointConfig": _jsonable(config_request),
                    "CreateEndpoint": dict(request),
                },
                status=Endpoint.Status.CREATING,
            )
    except IntegrityError:  # the name is an old (deleted) endpoint's on the page
        log.info("endpoint %s: the endpoints page has that name already", request["EndpointName"])


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))
