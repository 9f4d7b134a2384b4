"""The ``local`` backend: SageMaker's API, answered by an emulator on this machine.

``LocalBackend`` is the facade: each method checks the request, reads or writes the rows
(``models.py``) and answers; the work is elsewhere, one module per job:

- ``validation.py``: what is refused beyond AWS's rules (``local_problems``, ``model_problems``).
- ``shapes.py``: the answers and errors, as botocore returns and raises them (``describe``).
- ``launch.py``: where a local job's or endpoint's process is started (``launch_executor``,
  ``launch_endpoint_host``); ``executor.py`` runs a training job, ``endpoint_host.py`` serves
  an endpoint, each detached.
- ``runtime.py``: ``InvokeEndpoint`` (connections, the route cache, reading the answer).
- ``reaping.py``: jobs whose process died are failed; ``reattach.py``: endpoints whose host
  died get a new one.

Nothing here waits for a job or an endpoint: every other call reads and writes their rows.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.db import IntegrityError, transaction
from django.utils.timezone import now

from jobs import api_limits
from jobs.backends.base import Backend, MetricsWanted, NewPoints
from jobs.backends.local import (
    capacity,
    launch,
    metric_points,
    reaping,
    reattach,
    runtime,
    states,
    validation,
)
from jobs.backends.local.models import (
    EndpointStatus,
    LocalEndpoint,
    LocalEndpointConfig,
    LocalEndpointLogEvent,
    LocalLogEvent,
    LocalModel,
    LocalTrainingJob,
    Status,
)
from jobs.backends.local.resources import instance_type_problem
from jobs.backends.local.shapes import (
    ENDPOINT_CONFIG_SUMMARY,
    ENDPOINT_SUMMARY,
    MODEL_SUMMARY,
    NOT_FOUND,
    TRAINING_JOB_SUMMARY,
    VALIDATION,
    arn_for,
    client_error,
    could_not_find,
    describe,
    describe_endpoint_row,
    list_page,
    list_token,
    log_page,
    log_tail,
    page_offset,
)
from jobs.backends.local.validation import (
    as_s3_shaped,
    endpoint_config_problems,
    local_problems,
    model_problems,
    model_s3_shaped,
    refuse,
)


def _record(request: Mapping[str, Any]) -> dict[str, Any]:
    """A request as kept in a JSON field (datetimes and the like as strings)."""
    return json.loads(json.dumps(dict(request), default=str))


def _insert(row: Any, op: str, code: str, message: str) -> None:
    """Save a new record; a name already taken is refused as the service refuses it."""
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError:
        raise client_error(op, code, message) from None


#: The tags a SageMaker resource may have.
MAX_TAGS = 50
#: The kind of an ARN (``…:training-job/name``) → the rows of that kind.
_TAGGED = {
    "training-job": LocalTrainingJob,
    "model": LocalModel,
    "endpoint-config": LocalEndpointConfig,
    "endpoint": LocalEndpoint,
}


def _tagged(op: str, arn: str, for_update: bool = False) -> Any:
    """The row of the resource ``arn`` (its request holds its tags): found by its kind and its
    name part (the lower-cased name, as the rows' ``key``), and the whole ARN must match."""
    kind, _, name = str(arn).rpartition(":")[2].partition("/")
    table = _TAGGED.get(kind)
    row = None
    if table is not None:
        rows = table.objects.select_for_update() if for_update else table.objects
        row = rows.filter(key=name.lower(), arn=arn).only("request").first()
    if row is None:
        raise client_error(op, VALIDATION, f"Resource {arn} does not exist.")
    return row


def _retag(op: str, arn: str, change: Callable[[list[dict[str, str]]], list[dict[str, str]]]) -> None:
    """Replace the tags of ``arn`` by ``change`` of them, under the row's lock (two changes at
    once both land); more than ``MAX_TAGS`` is refused and nothing changes."""
    with transaction.atomic():
        row = _tagged(op, arn, for_update=True)
        tags = change(list(row.request.get("Tags") or []))
        if len(tags) > MAX_TAGS:
            raise client_error(
                op,
                "ResourceLimitExceeded",
                f"You have exceeded the tag limit of {MAX_TAGS} tags for resource {arn}.",
            )
        row.request = {**row.request, "Tags": tags}
        row.save(update_fields=["request"])


class LocalBackend(Backend):
    name = "local"

    # -- training jobs ---------------------------------------------------------------------
    def create_training_job(self, request: Mapping[str, Any]) -> dict[str, Any]:
        op = "CreateTrainingJob"
        validation.sandbox_refusal(op)
        api_limits.check(op, as_s3_shaped(request))
        refuse(op, local_problems(request))
        instance_type = request["ResourceConfig"]["InstanceType"]
        if problem := instance_type_problem(instance_type):
            raise client_error(op, VALIDATION, problem)
        name = request["TrainingJobName"]
        arn = arn_for("training-job", name)
        at = now()
        job = LocalTrainingJob(
            name=name,
            key=name.lower(),
            arn=arn,
            request=_record(request),
            creation_time=at,
            last_modified_time=at,
        )
        states.advance(job, "Starting", at)
        reaping.reap_abandoned()  # a job whose process died gives its instance back
        with capacity.locked():  # count and insert as one step: two creates never both pass
            _insert(
                job,
                op,
                "ResourceInUse",
                "Training job names must be unique within an AWS account and region, "
                f"and a training job with this name already exists ({arn})",
            )
            if problem := capacity.exceeded(instance_type, "training job"):
                raise client_error(op, "ResourceLimitExceeded", problem)
        launch.launch_executor(job)
        return {"TrainingJobArn": arn}

    def describe_training_job(self, name: str) -> dict[str, Any]:
        api_limits.check("DescribeTrainingJob", {"TrainingJobName": name})
        reaping.reap_abandoned()
        return describe(self._get("DescribeTrainingJob", name))

    def list_training_jobs(self, **params: Any) -> dict[str, Any]:
        op = "ListTrainingJobs"
        api_limits.check(op, params)
        reaping.reap_abandoned()
        return list_page(
            op, LocalTrainingJob.objects.all(), params, "TrainingJobSummaries", TRAINING_JOB_SUMMARY
        )

    def stop_training_job(self, name: str) -> None:
        op = "StopTrainingJob"
        api_limits.check(op, {"TrainingJobName": name})
        with transaction.atomic():
            job = self._get(op, name, for_update=True)
            if job.status == Status.STOPPING:
                return
            if job.status != Status.IN_PROGRESS:
                raise client_error(
                    op,
                    "ValidationException",
                    f"The request was rejected because the training job is in status {job.status}.",
                )
            job.status = Status.STOPPING
            job.stop_reason = "user"
            states.advance(job, "Stopping")
            job.save()

    def get_training_logs(
        self, name: str, next_token: str | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        job = self._get("GetLogEvents", name)
        return log_page(LocalLogEvent.objects.filter(job=job), next_token, limit)

    def tail_training_logs(self, name: str, lines: int) -> tuple[list[dict[str, Any]], str | None, bool]:
        job = self._get("GetLogEvents", name)
        return log_tail(LocalLogEvent.objects.filter(job=job), lines)

    def tail_endpoint_logs(self, name: str, lines: int) -> tuple[list[dict[str, Any]], str | None, bool]:
        endpoint = self._endpoint("GetLogEvents", name)
        return log_tail(LocalEndpointLogEvent.objects.filter(endpoint=endpoint), lines)

    def preflight(
        self, request: Mapping[str, Any], operation: str = "CreateTrainingJob"
    ) -> list[tuple[str, str]]:
        check = {
            "CreateTrainingJob": local_problems,
            "CreateModel": model_problems,
            "CreateEndpointConfig": endpoint_config_problems,
        }.get(operation)
        return [(path, message) for path, _, message in check(request)] if check else []

    def api_shaped(self, operation: str, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """``file://`` locations checked as S3 URIs of the same length (``as_s3_shaped``)."""
        if operation == "CreateTrainingJob":
            return as_s3_shaped(request)
        if operation == "CreateModel":
            return model_s3_shaped(request)
        return request

    def list_tags(self, **params: Any) -> dict[str, Any]:
        """The tags each create request carried (``AddTags`` and ``DeleteTags`` change them
        there), found by the resource's ARN."""
        op = "ListTags"
        tags = list(_tagged(op, params.get("ResourceArn", "")).request.get("Tags") or [])
        offset = page_offset(op, params.get("NextToken"))
        size = params.get("MaxResults", 50)
        result: dict[str, Any] = {"Tags": tags[offset : offset + size]}
        if len(tags) > offset + size:
            result["NextToken"] = list_token(offset + size)
        return result

    def add_tags(self, arn: str, tags: Sequence[Mapping[str, str]]) -> None:
        op = "AddTags"
        api_limits.check(op, {"ResourceArn": arn, "Tags": list(tags)})

        def change(current: list[dict[str, str]]) -> list[dict[str, str]]:
            values = {t["Key"]: t.get("Value", "") for t in current}
            values.update({t["Key"]: t.get("Value", "") for t in tags})
            return [{"Key": k, "Value": v} for k, v in values.items()]

        _retag(op, arn, change)

    def delete_tags(self, arn: str, keys: Sequence[str]) -> None:
        op = "DeleteTags"
        api_limits.check(op, {"ResourceArn": arn, "TagKeys": list(keys)})
        gone = set(keys)
        _retag(op, arn, lambda current: [t for t in current if t["Key"] not in gone])

    def describe_model(self, name: str) -> dict[str, Any]:
        model = LocalModel.objects.filter(key=name.lower()).first()
        if model is None:
            raise could_not_find("DescribeModel", "model", "model", name)
        return {**model.request, "ModelArn": model.arn, "CreationTime": model.creation_time}

    def describe_endpoint_config(self, name: str) -> dict[str, Any]:
        config = LocalEndpointConfig.objects.filter(key=name.lower()).first()
        if config is None:
            raise could_not_find("DescribeEndpointConfig", "endpoint configuration", "endpoint-config", name)
        return {**config.request, "EndpointConfigArn": config.arn, "CreationTime": config.creation_time}

    def job_notes(self, name: str) -> list[str]:
        return list(self._get("DescribeTrainingJob", name).notes)

    def metric_points(self, wanted: Sequence[MetricsWanted]) -> dict[str, dict[str, NewPoints]]:
        return metric_points.metric_points(wanted)

    # -- endpoints -----------------------------------------------------------------------------
    def list_models(self, **params: Any) -> dict[str, Any]:
        op = "ListModels"
        api_limits.check(op, params)
        return list_page(op, LocalModel.objects.all(), params, "Models", MODEL_SUMMARY)

    def list_endpoint_configs(self, **params: Any) -> dict[str, Any]:
        op = "ListEndpointConfigs"
        api_limits.check(op, params)
        return list_page(
            op, LocalEndpointConfig.objects.all(), params, "EndpointConfigs", ENDPOINT_CONFIG_SUMMARY
        )

    def list_endpoints(self, **params: Any) -> dict[str, Any]:
        op = "ListEndpoints"
        api_limits.check(op, params)
        return list_page(op, LocalEndpoint.objects.all(), params, "Endpoints", ENDPOINT_SUMMARY)

    def create_model(self, request: Mapping[str, Any]) -> dict[str, Any]:
        op = "CreateModel"
        api_limits.check(op, model_s3_shaped(request))
        refuse(op, model_problems(request))
        name = request["ModelName"]
        arn = arn_for("model", name)
        model = LocalModel(
            name=name,
            key=name.lower(),
            arn=arn,
            request=_record(request),
            creation_time=now(),
        )
        _insert(model, op, VALIDATION, f'Cannot create already existing model "{arn}".')
        return {"ModelArn": arn}

    def create_endpoint_config(self, request: Mapping[str, Any]) -> dict[str, Any]:
        op = "CreateEndpointConfig"
        api_limits.check(op, request)
        refuse(op, endpoint_config_problems(request))
        name = request["EndpointConfigName"]
        arn = arn_for("endpoint-config", name)
        for variant in request["ProductionVariants"]:
            if not LocalModel.objects.filter(key=variant["ModelName"].lower()).exists():
                raise could_not_find(op, "model", "model", variant["ModelName"])
        config = LocalEndpointConfig(
            name=name,
            key=name.lower(),
            arn=arn,
            request=_record(request),
            creation_time=now(),
        )
        _insert(config, op, VALIDATION, f'Cannot create already existing endpoint configuration "{arn}".')
        return {"EndpointConfigArn": arn}

    def create_endpoint(self, request: Mapping[str, Any]) -> dict[str, Any]:
        op = "CreateEndpoint"
        validation.sandbox_refusal(op)
        api_limits.check(op, request)
        if request.get("DeploymentConfig"):
            raise client_error(op, VALIDATION, "The local backend does not support DeploymentConfig.")
        name = request["EndpointName"]
        arn = arn_for("endpoint", name)
        config_name = request["EndpointConfigName"]
        config = LocalEndpointConfig.objects.filter(key=config_name.lower()).first()
        if config is None:
            raise could_not_find(op, "endpoint configuration", "endpoint-config", config_name)
        model_name = config.request["ProductionVariants"][0]["ModelName"]
        model = LocalModel.objects.filter(key=model_name.lower()).first()
        if model is None:
            raise could_not_find(op, "model", "model", model_name)
        instance_type = config.request["ProductionVariants"][0].get("InstanceType")
        if instance_type and (problem := instance_type_problem(instance_type)):
            raise client_error(op, VALIDATION, problem)
        at = now()
        endpoint = LocalEndpoint(
            name=name,
            key=name.lower(),
            arn=arn,
            uid=uuid.uuid4().hex,
            request=_record(request),
            config=config.request,
            model=model.request,
            creation_time=at,
            last_modified_time=at,
            launched_at=at,
            machine=socket.gethostname(),
        )
        reaping.reap_abandoned()  # a job whose process died gives its instance back
        with capacity.locked():  # count and insert as one step: two creates never both pass
            _insert(endpoint, op, VALIDATION, f'Cannot create already existing endpoint "{arn}".')
            if problem := capacity.exceeded(instance_type or "serverless", "endpoint"):
                raise client_error(op, "ResourceLimitExceeded", problem)
        reattach.launch_host(endpoint)
        return {"EndpointArn": arn}

    def describe_endpoint(self, name: str) -> dict[str, Any]:
        op = "DescribeEndpoint"
        api_limits.check(op, {"EndpointName": name})
        endpoint = self._endpoint(op, name)
        endpoint = reattach.reattach(endpoint)  # a host that died is replaced (or a deletion finished)
        if endpoint is None:
            raise could_not_find(op, "endpoint", "endpoint", name)
        return describe_endpoint_row(endpoint)

    def delete_endpoint(self, name: str) -> None:
        op = "DeleteEndpoint"
        api_limits.check(op, {"EndpointName": name})
        runtime.forget_route(name)
        with transaction.atomic():
            endpoint = self._endpoint(op, name, for_update=True)
            if endpoint.status != EndpointStatus.DELETING:
                endpoint.status = EndpointStatus.DELETING
                endpoint.last_modified_time = now()
                endpoint.save(update_fields=["status", "last_modified_time"])
        # The host stops the server and removes the row; with no live host, that happens here.
        reattach.reattach(endpoint)

    def delete_endpoint_config(self, name: str) -> None:
        op = "DeleteEndpointConfig"
        api_limits.check(op, {"EndpointConfigName": name})
        deleted, _ = LocalEndpointConfig.objects.filter(key=name.lower()).delete()
        if not deleted:
            raise could_not_find(op, "endpoint configuration", "endpoint-config", name)

    def delete_model(self, name: str) -> None:
        op = "DeleteModel"
        api_limits.check(op, {"ModelName": name})
        deleted, _ = LocalModel.objects.filter(key=name.lower()).delete()
        if not deleted:
            raise could_not_find(op, "model", "model", name)

    def invoke_endpoint(self, name: str, body: bytes, **headers: Any) -> dict[str, Any]:
        """``InvokeEndpoint`` (``runtime.py``): ``content_type``, ``accept``, ``custom_attributes``."""
        return runtime.invoke_endpoint(name, body, **headers)

    def get_endpoint_logs(
        self, name: str, next_token: str | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        endpoint = self._endpoint("GetLogEvents", name)
        return log_page(LocalEndpointLogEvent.objects.filter(endpoint=endpoint), next_token, limit)

    def reattach_endpoints(self) -> int:
        """Start a new host for every endpoint whose host is gone (``reattach.py``)."""
        return reattach.reattach_endpoints()

    @staticmethod
    def reap_abandoned() -> int:
        """Fail active jobs whose process stopped sending heartbeats (``reaping.py``)."""
        return reaping.reap_abandoned()

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _endpoint(operation: str, name: str, for_update: bool = False) -> LocalEndpoint:
        rows = LocalEndpoint.objects.select_for_update() if for_update else LocalEndpoint.objects
        try:
            return rows.get(key=name.lower())
        except LocalEndpoint.DoesNotExist:
            raise could_not_find(operation, "endpoint", "endpoint", name) from None

    @staticmethod
    def _get(operation: str, name: str, for_update: bool = False) -> LocalTrainingJob:
        jobs = LocalTrainingJob.objects.select_for_update() if for_update else LocalTrainingJob.objects
        try:
            return jobs.get(key=name.lower())
        except LocalTrainingJob.DoesNotExist:
            raise client_error(operation, "ValidationException", NOT_FOUND) from None
