"""What the local backend answers: SageMaker's response shapes and error shapes.

Pure functions of the rows (``models.py``): ``describe`` (``DescribeTrainingJob``),
``describe_endpoint_row`` (``DescribeEndpoint``), log pages, list pages (``list_page``, one for
every ``List*`` call) and their tokens, and the errors as
botocore raises them for the service (``client_error``) and for its runtime
(``runtime_error``, ``model_error``, ``container_error``).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError
from django.conf import settings

from jobs import api_limits
from jobs.backends.local.models import EndpointStatus, LocalEndpoint, LocalLogEvent, LocalTrainingJob

ACCOUNT = "000000000000"  # the emulator's account id, as in ARNs
NOT_FOUND = "Requested resource not found."
VALIDATION = "ValidationException"
INVOKE = "InvokeEndpoint"
#: A list call's filters: its parameter → the rows' lookup (each call's service model says
#: which it takes; ``api_limits.check`` refuses the others before a query is made).
LIST_FILTERS = {
    "NameContains": "name__icontains",
    "CreationTimeAfter": "creation_time__gt",
    "CreationTimeBefore": "creation_time__lt",
    "LastModifiedTimeAfter": "last_modified_time__gt",
    "LastModifiedTimeBefore": "last_modified_time__lt",
    "StatusEquals": "status",
}
#: ``SortBy`` → the rows' field.
LIST_SORT_FIELDS = {"Name": "name", "CreationTime": "creation_time", "Status": "status"}


def _summary(kind: str, **more: str) -> dict[str, str]:
    """A list call's summary members (``list_page``), member → the row's attribute: the
    resource's ``<kind>Name``, ``<kind>Arn`` and ``CreationTime``, then ``more``."""
    return {f"{kind}Name": "name", f"{kind}Arn": "arn", "CreationTime": "creation_time", **more}


TRAINING_JOB_SUMMARY = _summary(
    "TrainingJob",
    LastModifiedTime="last_modified_time",
    TrainingJobStatus="status",
    SecondaryStatus="secondary_status",
    TrainingEndTime="training_end_time",
)
MODEL_SUMMARY = _summary("Model")
ENDPOINT_CONFIG_SUMMARY = _summary("EndpointConfig")
ENDPOINT_SUMMARY = _summary("Endpoint", LastModifiedTime="last_modified_time", EndpointStatus="status")
#: ``MaxResults`` when the request has none.
LIST_PAGE_SIZE = 10
#: Past this a token's offset is refused: the databases' OFFSET is a 64-bit integer (a larger
#: one would fail the query, not the request).
MAX_LIST_OFFSET = 2**62
_RUNTIME_ERROR_TYPES = {
    "ValidationError": 400,
    "ModelError": 424,
    "ServiceUnavailable": 503,
    "InternalFailure": 500,
}


def client_error(operation: str, code: str, message: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


def arn_for(kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:{settings.ANYJOB_REGION}:{ACCOUNT}:{kind}/{name.lower()}"


def could_not_find(operation: str, what: str, kind: str, name: str) -> ClientError:
    return client_error(operation, VALIDATION, f'Could not find {what} "{arn_for(kind, name)}".')


def log_group_arn(name: str) -> str:
    """The ARN of the endpoint's CloudWatch log group, as ``ModelError`` names it."""
    return f"arn:aws:logs:{settings.ANYJOB_REGION}:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/{name}"


def runtime_error(code: str, message: str, **fields: Any) -> ClientError:
    """A sagemaker-runtime error as botocore parses it: ``Error`` plus the error shape's own
    members (``OriginalStatusCode``, ``OriginalMessage``, ``LogStreamArn``) at the top level."""
    status = _RUNTIME_ERROR_TYPES[code]
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {
            "RequestId": str(uuid.uuid4()),
            "HTTPStatusCode": status,
            "HTTPHeaders": {"content-type": "application/json", "x-amzn-errortype": code},
            "RetryAttempts": 0,
        },
        "Message": message,
        **fields,
    }
    return ClientError(response, INVOKE)


def model_error(name: str, message: str, **fields: Any) -> ClientError:
    return runtime_error("ModelError", message, LogStreamArn=log_group_arn(name), **fields)


def container_error(name: str, status: int, body: bytes) -> ClientError:
    """A container's non-2xx answer, as SageMaker wraps it (HTTP 424 ``ModelError``)."""
    original = body.decode("utf-8", "replace")
    kind = "client" if 400 <= status < 500 else "server"
    region = settings.ANYJOB_REGION
    message = (
        f'Received {kind} error ({status}) from primary with message "{original}". See '
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logEventViewer:"
        f"group=/aws/sagemaker/Endpoints/{name} in account {ACCOUNT} for more information."
    )
    return model_error(name, message, OriginalStatusCode=status, OriginalMessage=original)


def log_page(events: Any, next_token: str | None, limit: int) -> dict[str, Any]:
    """A ``GetLogEvents`` page of ``events`` (a queryset of log events) after ``next_token``."""
    after = -1
    if next_token:
        try:
            after = int(next_token.removeprefix("f/"))
        except ValueError:
            raise client_error(
                "GetLogEvents", "InvalidParameterException", "The specified nextToken is invalid."
            ) from None
    page = list(events.filter(seq__gt=after).order_by("seq")[: max(1, min(limit, 10_000))])
    last = page[-1].seq if page else after
    return {"events": [_event(e) for e in page], "nextForwardToken": f"f/{last}"}


def log_tail(events: Any, lines: int) -> tuple[list[dict[str, Any]], str, bool]:
    """The newest ``lines`` of ``events`` (a queryset of log events), oldest first, the token
    to follow from, and whether older events exist."""
    newest = list(events.order_by("-seq")[: lines + 1])
    page = list(reversed(newest[:lines]))
    token = f"f/{page[-1].seq}" if page else "f/-1"
    return [_event(e) for e in page], token, len(newest) > lines


def _event(e: LocalLogEvent) -> dict[str, Any]:
    return {
        "logStreamName": e.stream,
        "timestamp": e.timestamp,
        "message": e.message,
        "ingestionTime": e.ingestion_time,
    }


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def describe(job: LocalTrainingJob) -> dict[str, Any]:
    """The row as ``DescribeTrainingJob`` answers."""
    req = job.request
    out: dict[str, Any] = {
        "TrainingJobName": job.name,
        "TrainingJobArn": job.arn,
        "TrainingJobStatus": job.status,
        "SecondaryStatus": job.secondary_status,
        "HyperParameters": req.get("HyperParameters", {}),
        "AlgorithmSpecification": {"TrainingInputMode": "File", **req.get("AlgorithmSpecification", {})},
        "RoleArn": req.get("RoleArn", ""),
        "InputDataConfig": req.get("InputDataConfig", []),
        "OutputDataConfig": req.get("OutputDataConfig", {}),
        "ResourceConfig": req.get("ResourceConfig", {}),
        "StoppingCondition": {
            "MaxRuntimeInSeconds": api_limits.DEFAULT_MAX_RUNTIME_IN_SECONDS,
            **req.get("StoppingCondition", {}),
        },
        "CreationTime": job.creation_time,
        "LastModifiedTime": job.last_modified_time,
        "SecondaryStatusTransitions": [
            {
                **t,
                "StartTime": _time(t["StartTime"]),
                **({"EndTime": _time(t["EndTime"])} if "EndTime" in t else {}),
            }
            for t in job.transitions
        ],
        "EnableNetworkIsolation": bool(req.get("EnableNetworkIsolation", False)),
        "EnableInterContainerTrafficEncryption": bool(
            req.get("EnableInterContainerTrafficEncryption", False)
        ),
        "EnableManagedSpotTraining": bool(req.get("EnableManagedSpotTraining", False)),
    }
    # (Tags are not part of DescribeTrainingJob's answer: ListTags returns them.)
    for key in ("Environment", "VpcConfig", "CheckpointConfig", "RetryStrategy"):
        if key in req:
            out[key] = req[key]
    if job.failure_reason:
        out["FailureReason"] = job.failure_reason
    if job.model_artifacts:
        out["ModelArtifacts"] = {"S3ModelArtifacts": job.model_artifacts}
    if job.final_metrics:
        out["FinalMetricDataList"] = [{**m, "Timestamp": _time(m["Timestamp"])} for m in job.final_metrics]
    if job.training_start_time:
        out["TrainingStartTime"] = job.training_start_time
    if job.training_end_time:
        out["TrainingEndTime"] = job.training_end_time
        seconds = max(
            1, round((job.training_end_time - (job.training_start_time or job.creation_time)).total_seconds())
        )
        out["TrainingTimeInSeconds"] = seconds
        out["BillableTimeInSeconds"] = seconds
    return out


def variant_name(endpoint: LocalEndpoint) -> str:
    return endpoint.config["ProductionVariants"][0].get("VariantName", "AllTraffic")


def describe_endpoint_row(endpoint: LocalEndpoint) -> dict[str, Any]:
    """The row as ``DescribeEndpoint`` answers."""
    out: dict[str, Any] = {
        "EndpointName": endpoint.name,
        "EndpointArn": endpoint.arn,
        "EndpointConfigName": endpoint.request["EndpointConfigName"],
        "EndpointStatus": endpoint.status,
        "CreationTime": endpoint.creation_time,
        "LastModifiedTime": endpoint.last_modified_time,
    }
    if endpoint.status == EndpointStatus.IN_SERVICE:
        image = (endpoint.model.get("PrimaryContainer") or {}).get("Image", "")
        out["ProductionVariants"] = [
            {
                "VariantName": variant_name(endpoint),
                "DeployedImages": [
                    {
                        "SpecifiedImage": image,
                        "ResolvedImage": image,
                        "ResolutionTime": endpoint.creation_time,
                    }
                ],
                "CurrentWeight": 1.0,
                "DesiredWeight": 1.0,
                "CurrentInstanceCount": 1,
                "DesiredInstanceCount": 1,
            }
        ]
    if endpoint.failure_reason:
        out["FailureReason"] = endpoint.failure_reason
    return out


def page_offset(operation: str, token: str | None) -> int:
    """Where a list call's ``NextToken`` (ours: ``next_token``) says the page starts."""
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
        if isinstance(offset, int) and 0 <= offset < MAX_LIST_OFFSET:
            return offset
    except (ValueError, KeyError, TypeError):
        pass
    raise client_error(operation, "ValidationException", "The pagination token is not valid.")


def list_token(offset: int) -> str:
    """The ``NextToken`` of the page that starts at ``offset``."""
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def list_page(
    operation: str, rows: Any, params: Mapping[str, Any], member: str, fields: Mapping[str, str]
) -> dict[str, Any]:
    """A ``List*`` answer (params already checked): ``rows`` (a queryset) filtered, sorted (ties
    by id, in the same direction) and cut to the page ``NextToken`` starts, as ``{member:
    [summary], "NextToken"?}``. A summary has each of ``fields`` (its member → the row's
    attribute) whose value is not None, as AWS leaves out what has none (a running job's
    ``TrainingEndTime``). One more row than the page is read to know whether a next one exists."""
    for param, lookup in LIST_FILTERS.items():
        if param in params:
            rows = rows.filter(**{lookup: params[param]})
    field = LIST_SORT_FIELDS[params.get("SortBy", "CreationTime")]
    descending = params.get("SortOrder", "Descending") == "Descending"
    rows = rows.order_by(f"-{field}" if descending else field, "-id" if descending else "id")
    offset = page_offset(operation, params.get("NextToken"))
    size = params.get("MaxResults", LIST_PAGE_SIZE)
    page = list(rows[offset : offset + size + 1])
    summaries = [
        {m: v for m, a in fields.items() if (v := getattr(row, a)) is not None} for row in page[:size]
    ]
    result: dict[str, Any] = {member: summaries}
    if len(page) > size:
        result["NextToken"] = list_token(offset + size)
    return result
