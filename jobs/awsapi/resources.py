"""What the API needs of a backend that ``jobs.backends.base.Backend`` does not declare yet:
listing models, endpoint configs and endpoints, and changing a resource's tags.

One adapter per backend, chosen by ``backend.name`` in this module only (callers never branch):
the ``sagemaker`` backend passes each call to AWS through its own client; the ``local`` one
answers from the emulator's rows, with the service's filters, sort orders and pagination. Were
the backend interface to grow these methods, this module would call them and shrink to nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from jobs.awsapi.registry import ApiError

#: ``kind`` of an ARN (``…:training-job/name``) → the local backend's table.
_LOCAL_TABLES = {
    "training-job": "LocalTrainingJob",
    "model": "LocalModel",
    "endpoint-config": "LocalEndpointConfig",
    "endpoint": "LocalEndpoint",
}
#: The list operations: (local table, summary list member, name member, ARN member, more fields).
_LISTS = {
    "ListModels": ("LocalModel", "Models", "ModelName", "ModelArn"),
    "ListEndpointConfigs": (
        "LocalEndpointConfig",
        "EndpointConfigs",
        "EndpointConfigName",
        "EndpointConfigArn",
    ),
    "ListEndpoints": ("LocalEndpoint", "Endpoints", "EndpointName", "EndpointArn"),
}
#: The tags a SageMaker resource may have.
MAX_TAGS = 50
_BOTO3_METHODS = {
    "ListModels": "list_models",
    "ListEndpointConfigs": "list_endpoint_configs",
    "ListEndpoints": "list_endpoints",
}


def list_resources(backend: Any, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``ListModels``, ``ListEndpointConfigs`` or ``ListEndpoints`` (params already checked)."""
    if backend.name == "sagemaker":
        return getattr(backend.sagemaker, _BOTO3_METHODS[operation])(**params)
    return _local_list(operation, params)


def add_tags(backend: Any, arn: str, tags: list[dict[str, str]]) -> None:
    """``AddTags``: each key set to its new value (a key given twice: the last one wins)."""
    if backend.name == "sagemaker":
        backend.sagemaker.add_tags(ResourceArn=arn, Tags=tags)
        return

    def change(current: list[dict[str, str]]) -> list[dict[str, str]]:
        values = {t["Key"]: t.get("Value", "") for t in current}
        values.update({t["Key"]: t.get("Value", "") for t in tags})
        return [{"Key": k, "Value": v} for k, v in values.items()]

    _local_retag(arn, change)


def delete_tags(backend: Any, arn: str, keys: list[str]) -> None:
    """``DeleteTags``: a key the resource does not have is not an error (as AWS)."""
    if backend.name == "sagemaker":
        backend.sagemaker.delete_tags(ResourceArn=arn, TagKeys=keys)
        return
    gone = set(keys)
    _local_retag(arn, lambda current: [t for t in current if t["Key"] not in gone])


def _local_retag(arn: str, change: Any) -> None:
    """Rewrite the tags of the local resource ``arn`` (kept in its request, where ``ListTags``
    reads them), under the row's lock."""
    table = _local_table_of(arn)
    name = arn.rpartition(":")[2].partition("/")[2]
    with transaction.atomic():
        row = table.objects.select_for_update().filter(key=name.lower(), arn=arn).first() if table else None
        if row is None:
            raise ApiError("ValidationException", f"Resource {arn} does not exist.")
        tags = change(list(row.request.get("Tags") or []))
        if len(tags) > MAX_TAGS:
            raise ApiError(
                "ResourceLimitExceeded",
                f"You have exceeded the tag limit of {MAX_TAGS} tags for resource {arn}.",
            )
        row.request = {**row.request, "Tags": tags}
        row.save(update_fields=["request"])


def _local_table_of(arn: str) -> Any:
    from jobs.backends.local import models

    kind = arn.rpartition(":")[2].partition("/")[0]
    name = _LOCAL_TABLES.get(kind)
    return getattr(models, name) if name else None


def _local_list(operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
    from jobs.backends.local import models

    table, member, name_member, arn_member = _LISTS[operation]
    rows = getattr(models, table).objects.all()
    filters = {
        "NameContains": "name__icontains",
        "CreationTimeAfter": "creation_time__gt",
        "CreationTimeBefore": "creation_time__lt",
        "LastModifiedTimeAfter": "last_modified_time__gt",
        "LastModifiedTimeBefore": "last_modified_time__lt",
        "StatusEquals": "status",
    }
    for param, lookup in filters.items():
        if param in params:
            rows = rows.filter(**{lookup: params[param]})
    field = {"Name": "name", "CreationTime": "creation_time", "Status": "status"}[
        params.get("SortBy", "CreationTime")
    ]
    descending = params.get("SortOrder", "Descending") == "Descending"
    rows = rows.order_by(f"-{field}" if descending else field, "-id" if descending else "id")
    offset = _offset(params.get("NextToken"))
    size = params.get("MaxResults", 10)
    page = list(rows[offset : offset + size + 1])
    summaries = []
    for row in page[:size]:
        summary: dict[str, Any] = {
            name_member: row.name,
            arn_member: row.arn,
            "CreationTime": row.creation_time,
        }
        if operation == "ListEndpoints":
            summary.update(LastModifiedTime=row.last_modified_time, EndpointStatus=row.status)
        summaries.append(summary)
    result: dict[str, Any] = {member: summaries}
    if len(page) > size:
        result["NextToken"] = _token(offset + size)
    return result


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        offset = None
    if not isinstance(offset, int) or offset < 0:
        raise ApiError("ValidationException", "The pagination token is not valid.")
    return offset
