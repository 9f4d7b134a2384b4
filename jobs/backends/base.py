"""The backend interface: SageMaker's own requests and response shapes, wherever jobs run.

Everything the dashboard and the workers send is a real SageMaker request, and every answer
has the service's shape (the dicts boto3 returns, with ``datetime`` values), so no caller
branches on where a job runs. Errors are botocore ``ClientError``s with the service's codes:
``ValidationException`` (bad request, or no such job: "Requested resource not found."),
``ResourceInUse`` (the name is taken), ``ResourceLimitExceeded``, ``ThrottlingException``.

A backend is one small class registered in ``jobs.backends.BACKENDS``; endpoints
(CreateModel, CreateEndpointConfig, CreateEndpoint, InvokeEndpoint, ...) are methods of the
same class, in the same manner.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobs import storage

#: Size cap for one file read out of an artifact for display.
MAX_ARTIFACT_READ = 16 * 1024 * 1024

ARTIFACTS = {"model": "model.tar.gz", "output": "output.tar.gz"}


@dataclass(frozen=True)
class MetricsWanted:
    """What the poller asks of one job's metrics (``Backend.metric_points``): ``metrics``, the
    names its MetricDefinitions give; ``seen``, per metric already stored, the points received
    (kept and dropped: the next step is one more) and the unix ms of the last; ``start_ms`` and
    ``end_ms`` (``None`` while it runs) bound where to look."""

    job: str
    metrics: tuple[str, ...]
    seen: Mapping[str, tuple[int, int | None]] = field(default_factory=dict)
    start_ms: int | None = None
    end_ms: int | None = None


@dataclass
class NewPoints:
    """A metric's points after what was ``seen`` (``(unix_ms, value)``, in order), and how many
    more the backend counted without keeping (past its own bound)."""

    points: list[tuple[int, float]] = field(default_factory=list)
    dropped: int = 0


class Backend:
    """Base class: the contract each backend implements (all methods are thread-safe)."""

    name = "base"

    def create_training_job(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """``CreateTrainingJob``: validate and start; returns ``{"TrainingJobArn": ...}``."""
        raise NotImplementedError

    def describe_training_job(self, name: str) -> dict[str, Any]:
        """``DescribeTrainingJob``: the job as the service describes it."""
        raise NotImplementedError

    def list_training_jobs(self, **params: Any) -> dict[str, Any]:
        """``ListTrainingJobs`` with the service's parameters (``LastModifiedTimeAfter``,
        ``StatusEquals``, ``NameContains``, ``NextToken``, ``MaxResults`` ≤ 100, ...).
        A page may be short or empty while ``NextToken`` is present: follow it to the end."""
        raise NotImplementedError

    def stop_training_job(self, name: str) -> None:
        """``StopTrainingJob``: the job goes ``Stopping`` at once and ``Stopped`` later."""
        raise NotImplementedError

    def get_training_logs(
        self, name: str, next_token: str | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        """The job's log events after ``next_token`` (CloudWatch ``GetLogEvents``-shaped):
        ``{"events": [{"logStreamName", "timestamp", "message", "ingestionTime"}],
        "nextForwardToken": str}``. Pass ``nextForwardToken`` back to follow the log."""
        raise NotImplementedError

    def tail_training_logs(self, name: str, lines: int) -> tuple[list[dict[str, Any]], str | None, bool]:
        """The last ``lines`` events of the job's log, the token to follow from, and whether
        older events exist. This default reads the whole log; backends override it."""
        return _tail(self.get_training_logs, name, lines)

    def tail_endpoint_logs(self, name: str, lines: int) -> tuple[list[dict[str, Any]], str | None, bool]:
        """``tail_training_logs`` for an endpoint's log."""
        return _tail(self.get_endpoint_logs, name, lines)

    def check_inputs(self, request: Mapping[str, Any]) -> None:
        """Called by the worker just before ``create_training_job``: raise ``ValueError`` with
        a sentence for the user when the job cannot read its inputs (the service would fail it
        minutes later). The default checks nothing."""

    def download_url(self, uri: str, filename: str) -> str | None:
        """A URL the browser downloads ``uri`` from directly, or None to stream it through
        the web process (``file://``)."""
        return None

    def preflight(
        self, request: Mapping[str, Any], operation: str = "CreateTrainingJob"
    ) -> list[tuple[str, str]]:
        """What this backend would refuse in ``request`` (of ``operation``: CreateTrainingJob,
        CreateModel, CreateEndpointConfig) beyond the API's own rules, as ``(request path,
        message)``: the new-job and deploy forms show each next to its field. Each backend owns
        its rules (which URI schemes, which folders); no caller branches on the backend."""
        return []

    def api_shaped(self, operation: str, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """``request`` as the service's own rules (``jobs.api_limits``) should see it: a backend
        that accepts more than AWS in some field (the local ``file://`` URIs) puts it in AWS's
        shape here, so every other rule still applies. The default: the request itself."""
        return request

    def list_tags(self, **params: Any) -> dict[str, Any]:
        """``ListTags``: ``ResourceArn`` (a training job's, model's, endpoint config's or
        endpoint's), ``NextToken``, ``MaxResults``; answers ``{"Tags": [{"Key", "Value"}],
        "NextToken"?}``."""
        raise NotImplementedError

    def add_tags(self, arn: str, tags: Sequence[Mapping[str, str]]) -> None:
        """``AddTags``: each ``{"Key", "Value"}`` set on the resource ``arn`` (a key it has
        already gets the new value). More than 50 tags in all is ``ResourceLimitExceeded``, and
        an unknown resource a ``ValidationException``."""
        raise NotImplementedError

    def delete_tags(self, arn: str, keys: Sequence[str]) -> None:
        """``DeleteTags``: the tags ``keys`` removed from the resource ``arn`` (a key it does
        not have is no error)."""
        raise NotImplementedError

    def metric_points(self, wanted: Sequence[MetricsWanted]) -> dict[str, dict[str, NewPoints]]:
        """The new points of many jobs' metrics at once (one poll cycle): ``{job name: {metric:
        NewPoints}}``, only what is new since ``seen`` (a metric or job with nothing new may be
        left out). Each backend bounds its own cost: a few calls or queries for all of them."""
        raise NotImplementedError

    #: Seconds between two ``metric_points`` passes of the poller (a backend whose metrics
    #: cost a paid call each, CloudWatch's, asks less often than the 2 s status poll).
    metrics_interval = 0.0

    def job_notes(self, name: str) -> list[str]:
        """Facts about how the job ran that the service's shape has no field for."""
        return []

    # -- artifacts: the same for every backend, given describe_training_job -----------------
    def artifact_uri(self, name: str, which: str) -> str | None:
        """The URI of ``model.tar.gz`` (``which="model"``) or ``output.tar.gz`` (``"output"``)."""
        if which not in ARTIFACTS:
            raise ValueError(f"unknown artifact {which!r}: use one of {sorted(ARTIFACTS)}")
        job = self.describe_training_job(name)
        model = (job.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        if not model:
            return None
        return model if which == "model" else model.rsplit("/", 1)[0] + "/" + ARTIFACTS[which]

    def list_artifact_files(self, name: str, which: str) -> list[storage.MemberInfo]:
        uri = self.artifact_uri(name, which)
        return storage.list_tar_members(uri) if uri else []

    def read_artifact_file(
        self, name: str, which: str, member: str, max_bytes: int = MAX_ARTIFACT_READ
    ) -> bytes:
        uri = self.artifact_uri(name, which)
        if not uri:
            raise storage.StorageError(f"training job {name} has no {ARTIFACTS[which]}")
        return storage.read_tar_member(uri, member, max_bytes)

    # -- endpoints (serving a job's model with the generic image's ``serve``) -----------------
    # Requests and answers have the shapes of the SageMaker API calls of the same names, and
    # errors are ClientErrors with the service's codes, so the dashboard never branches on the
    # backend. A model, an endpoint config and an endpoint are named independently (anyjob uses
    # the endpoint's name for all three).

    def create_model(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """``CreateModel``: ``ModelName``, ``ExecutionRoleArn``, ``PrimaryContainer`` (``Image``,
        ``ModelDataUrl``, ``Environment``); returns ``{"ModelArn": ...}``."""
        raise NotImplementedError

    def create_endpoint_config(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """``CreateEndpointConfig``: ``EndpointConfigName``, ``ProductionVariants`` (one variant
        ``AllTraffic`` with ``ModelName``, ``InstanceType``, ``InitialInstanceCount``)."""
        raise NotImplementedError

    def create_endpoint(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """``CreateEndpoint``: ``EndpointName``, ``EndpointConfigName``; the endpoint is
        ``Creating`` at once and ``InService`` (or ``Failed`` with ``FailureReason``) later."""
        raise NotImplementedError

    def list_models(self, **params: Any) -> dict[str, Any]:
        """``ListModels`` with the service's parameters (``NameContains``,
        ``CreationTimeAfter``/``Before``, ``SortBy`` Name|CreationTime, ``SortOrder``,
        ``NextToken``, ``MaxResults`` ≤ 100); answers ``{"Models": [{"ModelName", "ModelArn",
        "CreationTime"}], "NextToken"?}``."""
        raise NotImplementedError

    def list_endpoint_configs(self, **params: Any) -> dict[str, Any]:
        """``ListEndpointConfigs``: ``list_models``' parameters; answers ``{"EndpointConfigs":
        [{"EndpointConfigName", "EndpointConfigArn", "CreationTime"}], "NextToken"?}``."""
        raise NotImplementedError

    def list_endpoints(self, **params: Any) -> dict[str, Any]:
        """``ListEndpoints``: ``list_models``' parameters, plus ``LastModifiedTimeAfter``/
        ``Before``, ``StatusEquals`` and ``SortBy`` Status; answers ``{"Endpoints":
        [{"EndpointName", "EndpointArn", "CreationTime", "LastModifiedTime",
        "EndpointStatus"}], "NextToken"?}``."""
        raise NotImplementedError

    def describe_model(self, name: str) -> dict[str, Any]:
        """``DescribeModel``: ``ModelName``, ``ModelArn``, ``PrimaryContainer``, … ;
        ``ValidationException`` ("Could not find model") when there is none."""
        raise NotImplementedError

    def describe_endpoint_config(self, name: str) -> dict[str, Any]:
        """``DescribeEndpointConfig``: ``EndpointConfigName``, ``EndpointConfigArn``,
        ``ProductionVariants``, … ; ``ValidationException`` when there is none."""
        raise NotImplementedError

    def describe_endpoint(self, name: str) -> dict[str, Any]:
        """``DescribeEndpoint``: ``EndpointStatus`` (Creating, InService, Failed, Deleting, …),
        ``FailureReason``, ``CreationTime``, ``LastModifiedTime``. ``ValidationException``
        ("Could not find endpoint") once it is gone."""
        raise NotImplementedError

    def delete_endpoint(self, name: str) -> None:
        """``DeleteEndpoint``: stops serving; its processes or instances go away."""
        raise NotImplementedError

    def delete_endpoint_config(self, name: str) -> None:
        raise NotImplementedError

    def delete_model(self, name: str) -> None:
        raise NotImplementedError

    def invoke_endpoint(
        self,
        name: str,
        body: bytes,
        *,
        content_type: str = "application/json",
        accept: str | None = None,
        custom_attributes: str | None = None,
    ) -> dict[str, Any]:
        """``InvokeEndpoint`` (sagemaker-runtime): ``{"Body": bytes, "ContentType": str,
        "CustomAttributes": str | None, "InvokedProductionVariant": "AllTraffic"}``.

        Refuses as the service does: a body over 6,291,456 bytes or a header over 1,024
        characters (``ValidationError``), an endpoint not ``InService`` (``ValidationError``),
        no answer within 60 s (``ModelError``), and a container's non-2xx answer as
        ``ModelError`` (HTTP 424) whose error carries ``OriginalStatusCode`` and
        ``OriginalMessage``."""
        raise NotImplementedError

    def get_endpoint_logs(
        self, name: str, next_token: str | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        """The endpoint's log (``get_training_logs``' shape and tokens)."""
        raise NotImplementedError

    def reattach_endpoints(self) -> int:
        """Bring back every endpoint that should be serving but whose process is gone (a
        machine or worker restart); returns how many were restarted or finished deleting.
        Called by a periodic task; backends whose endpoints live elsewhere (AWS) do nothing."""
        return 0


def tags_of(backend: Backend, arn: str) -> dict[str, str]:
    """Every tag of the resource ``arn`` (``ListTags`` followed to its last page)."""
    tags: dict[str, str] = {}
    params: dict[str, Any] = {"ResourceArn": arn, "MaxResults": 100}
    while True:
        page = backend.list_tags(**params)
        tags.update({t["Key"]: t.get("Value", "") for t in page.get("Tags", [])})
        if not page.get("NextToken"):
            return tags
        params["NextToken"] = page["NextToken"]


def _tail(read: Any, name: str, lines: int) -> tuple[list[dict[str, Any]], str | None, bool]:
    """The tail of a log read from its start with ``read`` (``get_*_logs``)."""
    tail: deque[dict[str, Any]] = deque(maxlen=lines)
    token: str | None = None
    seen = 0
    while True:
        page = read(name, token, 10_000)
        events = page.get("events", [])
        tail.extend(events)
        seen += len(events)
        token = page.get("nextForwardToken") or token
        if not events:
            return list(tail), token, seen > len(tail)
