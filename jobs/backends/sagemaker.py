"""The ``sagemaker`` backend: the same jobs on AWS, through boto3 and the standard credential chain.

Every call goes through a client from ``jobs.aws`` (adaptive retries: throttling backs off).
The clients can be given to the constructor, which is how the tests put botocore's ``Stubber``
in front of real clients.

Logs are CloudWatch Logs ``/aws/sagemaker/TrainingJobs``, one stream per host
(``<job>/algo-1-<epoch>``). A log token of this backend is the ``nextForwardToken`` of each
stream, as compact JSON in URL-safe base64, so the job page's follow mode works across hosts.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError
from django.conf import settings

from jobs import api_limits, aws, storage
from jobs.backends import cloudwatch_metrics
from jobs.backends.base import Backend, MetricsWanted, NewPoints

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
ENDPOINT_LOG_GROUP = "/aws/sagemaker/Endpoints/{name}"
#: At most this many host streams are read for one job (SageMaker names one per instance).
MAX_STREAMS = 50
MAX_TOKEN_CHARS = 8192


class LogTokenError(ValueError):
    """A log token this backend did not make."""


def encode_token(tokens: Mapping[str, str]) -> str:
    raw = json.dumps(dict(tokens), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str | None) -> dict[str, str]:
    if not token:
        return {}
    if len(token) > MAX_TOKEN_CHARS:
        raise LogTokenError("the log token is too long")
    try:
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        raise LogTokenError("the log token is not valid") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise LogTokenError("the log token is not valid")
    return value


class SageMakerBackend(Backend):
    """Amazon SageMaker, in ``settings.ANYJOB_REGION``."""

    name = "sagemaker"

    def __init__(
        self,
        *,
        sagemaker: Any = None,
        logs: Any = None,
        s3: Any = None,
        runtime: Any = None,
        cloudwatch: Any = None,
    ) -> None:
        self._sagemaker, self._logs, self._s3, self._runtime = sagemaker, logs, s3, runtime
        self._cloudwatch = cloudwatch

    @property
    def sagemaker(self) -> Any:
        return self._sagemaker or aws.client("sagemaker", region=settings.ANYJOB_REGION)

    @property
    def logs(self) -> Any:
        return self._logs or aws.client("logs", region=settings.ANYJOB_REGION)

    @property
    def s3(self) -> Any:
        return self._s3 or aws.client("s3")

    @property
    def cloudwatch(self) -> Any:
        return self._cloudwatch or aws.client("cloudwatch", region=settings.ANYJOB_REGION)

    #: CloudWatch's periods are a minute, and each metric asked for is billed.
    metrics_interval = 60.0

    def metric_points(self, wanted: Sequence[MetricsWanted]) -> dict[str, dict[str, NewPoints]]:
        """``GetMetricData`` for every wanted metric, up to 500 a call (``cloudwatch_metrics``)."""
        return cloudwatch_metrics.metric_points(self.cloudwatch, wanted)

    # -- the control plane ---------------------------------------------------------------------
    def create_training_job(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return self.sagemaker.create_training_job(**request)

    def describe_training_job(self, name: str) -> dict[str, Any]:
        return self.sagemaker.describe_training_job(TrainingJobName=name)

    def list_training_jobs(self, **params: Any) -> dict[str, Any]:
        return self.sagemaker.list_training_jobs(**params)

    def stop_training_job(self, name: str) -> None:
        self.sagemaker.stop_training_job(TrainingJobName=name)

    def list_tags(self, **params: Any) -> dict[str, Any]:
        return self.sagemaker.list_tags(**params)

    def add_tags(self, arn: str, tags: Sequence[Mapping[str, str]]) -> None:
        self.sagemaker.add_tags(ResourceArn=arn, Tags=list(tags))

    def delete_tags(self, arn: str, keys: Sequence[str]) -> None:
        self.sagemaker.delete_tags(ResourceArn=arn, TagKeys=list(keys))

    # -- what AWS refuses that its API model does not say -------------------------------------
    def preflight(
        self, request: Mapping[str, Any], operation: str = "CreateTrainingJob"
    ) -> list[tuple[str, str]]:
        """SageMaker reads and writes S3 only: a ``file://`` location (which the local backend
        takes) is refused here, at the form, rather than by AWS at submit."""
        return [
            (path, f"{uri} is a file:// location: SageMaker on AWS reads and writes s3:// only.")
            for path, uri in _locations(operation, request)
            if isinstance(uri, str) and uri.startswith("file://")
        ]

    # -- inputs ----------------------------------------------------------------------------------
    def check_inputs(self, request: Mapping[str, Any]) -> None:
        """Each channel's prefix must hold an object anyjob can see, in the job's region: AWS
        would fail the job only after starting an instance."""
        for channel in request.get("InputDataConfig") or []:
            source = (channel.get("DataSource") or {}).get("S3DataSource") or {}
            uri = source.get("S3Uri", "")
            if not uri.startswith("s3://"):
                continue
            bucket, _, prefix = uri[len("s3://") :].partition("/")
            name = channel.get("ChannelName")
            try:
                found = self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
                where = self.s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code == "NoSuchBucket":
                    raise ValueError(f"Channel {name}: the bucket {bucket} does not exist.") from None
                if code in ("AccessDenied", "AllAccessDisabled"):
                    raise ValueError(
                        f"Channel {name}: {uri} cannot be read with the workers' credentials ({code}); "
                        "the job's role will most likely be refused too."
                    ) from None
                raise
            if not found.get("KeyCount") and not found.get("Contents"):
                raise ValueError(f"Channel {name}: there are no objects under {uri}.")
            if where != settings.ANYJOB_REGION:
                raise ValueError(
                    f"Channel {name}: the bucket {bucket} is in {where}, the job runs in "
                    f"{settings.ANYJOB_REGION}; SageMaker reads channels from its own region."
                )

    # -- logs ------------------------------------------------------------------------------------
    def _streams(self, name: str, group: str = LOG_GROUP) -> list[str]:
        streams: list[str] = []
        kwargs: dict[str, Any] = {"logGroupName": group}
        if group == LOG_GROUP:
            kwargs["logStreamNamePrefix"] = f"{name}/"
        try:
            while len(streams) < MAX_STREAMS:
                page = self.logs.describe_log_streams(**kwargs)
                streams += [s["logStreamName"] for s in page.get("logStreams", [])]
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return []  # no log group yet: no job has logged in this account and region
            raise
        return sorted(streams)[:MAX_STREAMS]

    def get_training_logs(
        self, name: str, next_token: str | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        return self._read_logs(name, LOG_GROUP, next_token, limit)

    def get_endpoint_logs(
        self, name: str, next_token: str | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        return self._read_logs(name, ENDPOINT_LOG_GROUP.format(name=name), next_token, limit)

    def _read_logs(self, name: str, group: str, next_token: str | None, limit: int) -> dict[str, Any]:
        tokens = decode_token(next_token)
        per_stream: list[list[dict[str, Any]]] = []
        for stream in self._streams(name, group):
            kwargs: dict[str, Any] = {
                "logGroupName": group,
                "logStreamName": stream,
                "startFromHead": True,
                "limit": max(1, min(limit, 10_000)),
            }
            if stream in tokens:
                kwargs["nextToken"] = tokens[stream]
            page = self.logs.get_log_events(**kwargs)
            tokens[stream] = page.get("nextForwardToken") or tokens.get(stream, "")
            per_stream.append([{**e, "logStreamName": stream} for e in page.get("events", [])])
        events = list(heapq.merge(*per_stream, key=lambda e: e.get("timestamp", 0)))
        return {"events": events, "nextForwardToken": encode_token(tokens)}

    def tail_training_logs(self, name: str, lines: int) -> tuple[list[dict[str, Any]], str | None, bool]:
        return self._tail_logs(name, LOG_GROUP, lines)

    def tail_endpoint_logs(self, name: str, lines: int) -> tuple[list[dict[str, Any]], str | None, bool]:
        return self._tail_logs(name, ENDPOINT_LOG_GROUP.format(name=name), lines)

    def _tail_logs(self, name: str, group: str, lines: int) -> tuple[list[dict[str, Any]], str | None, bool]:
        tokens: dict[str, str] = {}
        per_stream: list[list[dict[str, Any]]] = []
        older = False
        for stream in self._streams(name, group):
            page = self.logs.get_log_events(
                logGroupName=group, logStreamName=stream, startFromHead=False, limit=lines
            )
            events = page.get("events", [])
            tokens[stream] = page.get("nextForwardToken", "")
            older = older or len(events) >= lines
            per_stream.append([{**e, "logStreamName": stream} for e in events])
        merged = list(heapq.merge(*per_stream, key=lambda e: e.get("timestamp", 0)))
        older = older or len(merged) > lines
        return merged[-lines:], encode_token(tokens), older

    # -- endpoints ---------------------------------------------------------------------------
    @property
    def runtime(self) -> Any:
        return self._runtime or aws.client("sagemaker-runtime", region=settings.ANYJOB_REGION)

    def create_model(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return self.sagemaker.create_model(**request)

    def create_endpoint_config(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return self.sagemaker.create_endpoint_config(**request)

    def create_endpoint(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return self.sagemaker.create_endpoint(**request)

    def list_models(self, **params: Any) -> dict[str, Any]:
        return self.sagemaker.list_models(**params)

    def list_endpoint_configs(self, **params: Any) -> dict[str, Any]:
        return self.sagemaker.list_endpoint_configs(**params)

    def list_endpoints(self, **params: Any) -> dict[str, Any]:
        return self.sagemaker.list_endpoints(**params)

    def describe_model(self, name: str) -> dict[str, Any]:
        return self.sagemaker.describe_model(ModelName=name)

    def describe_endpoint_config(self, name: str) -> dict[str, Any]:
        return self.sagemaker.describe_endpoint_config(EndpointConfigName=name)

    def describe_endpoint(self, name: str) -> dict[str, Any]:
        return self.sagemaker.describe_endpoint(EndpointName=name)

    def delete_endpoint(self, name: str) -> None:
        self.sagemaker.delete_endpoint(EndpointName=name)

    def delete_endpoint_config(self, name: str) -> None:
        self.sagemaker.delete_endpoint_config(EndpointConfigName=name)

    def delete_model(self, name: str) -> None:
        self.sagemaker.delete_model(ModelName=name)

    def invoke_endpoint(
        self,
        name: str,
        body: bytes,
        *,
        content_type: str = "application/json",
        accept: str | None = None,
        custom_attributes: str | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"EndpointName": name, "Body": body, "ContentType": content_type}
        if accept:
            params["Accept"] = accept
        if custom_attributes:
            params["CustomAttributes"] = custom_attributes
        api_limits.check("InvokeEndpoint", params)  # the service's limits, before sending 6 MiB
        answer = self.runtime.invoke_endpoint(**params)
        return {
            "Body": answer["Body"].read(),
            "ContentType": answer.get("ContentType"),
            "CustomAttributes": answer.get("CustomAttributes"),
            "InvokedProductionVariant": answer.get("InvokedProductionVariant"),
        }

    # -- artifacts -------------------------------------------------------------------------------
    def download_url(self, uri: str, filename: str) -> str | None:
        return storage.download_url(uri, expires=settings.ANYJOB_DOWNLOAD_URL_SECONDS, filename=filename)


def _locations(operation: str, request: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(request path, URI)`` of every storage location ``request`` names."""
    if operation == "CreateModel":
        container = request.get("PrimaryContainer") or {}
        code = (container.get("Environment") or {}).get("SAGEMAKER_SUBMIT_DIRECTORY")
        return [
            ("PrimaryContainer.ModelDataUrl", container.get("ModelDataUrl")),
            ("PrimaryContainer.Environment.SAGEMAKER_SUBMIT_DIRECTORY", code),
        ]
    if operation != "CreateTrainingJob":
        return []
    found: list[tuple[str, Any]] = []
    for i, channel in enumerate(request.get("InputDataConfig") or []):
        source = (channel.get("DataSource") or {}).get("S3DataSource") or {}
        found.append((f"InputDataConfig[{i}].DataSource.S3DataSource.S3Uri", source.get("S3Uri")))
    code = (request.get("HyperParameters") or {}).get("sagemaker_submit_directory", "")
    return [
        *found,
        ("OutputDataConfig.S3OutputPath", (request.get("OutputDataConfig") or {}).get("S3OutputPath")),
        ("HyperParameters.sagemaker_submit_directory", code.strip('"') if isinstance(code, str) else code),
        ("CheckpointConfig.S3Uri", (request.get("CheckpointConfig") or {}).get("S3Uri")),
    ]
