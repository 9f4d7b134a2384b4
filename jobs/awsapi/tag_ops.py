"""``AddTags``, ``ListTags``, ``DeleteTags`` by ARN: training jobs, models, endpoint configs and
endpoints.

anyjob's own tags (``anyjob:…``: the row ids, the owner) are neither shown nor settable.
Changing tags is a change: the resource's owner's or staff's (``ownership``). A training job's
tags are mirrored on its history row, where the job page shows them.
"""

from __future__ import annotations

from typing import Any

from jobs.awsapi import ownership
from jobs.awsapi.common import RESERVED_TAG_PREFIX, call, check, refuse_reserved_tags
from jobs.awsapi.registry import ApiError, Context, operation
from jobs.backends import get_backend
from jobs.backends.base import tags_of
from jobs.models import TrainingJob

DEFAULT_LIST_TAGS = 50


def _mirror(backend: Any, arn: str) -> None:
    kind, name = ownership.kind_and_name(arn)
    if kind != "training-job":
        return
    tags = call(tags_of, backend, arn)
    rows = [{"key": k, "value": v} for k, v in tags.items() if not k.lower().startswith(RESERVED_TAG_PREFIX)]
    TrainingJob.objects.filter(name__iexact=name).update(tags=rows)


@operation("sagemaker", "AddTags")
def add_tags(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    op = "AddTags"
    check(op, params)
    refuse_reserved_tags(params["Tags"])
    backend = get_backend()
    arn = params["ResourceArn"]
    ownership.require_change(ctx, backend, op, arn)
    call(backend.add_tags, arn, list(params["Tags"]))
    _mirror(backend, arn)
    return {"Tags": list(params["Tags"])}


@operation("sagemaker", "DeleteTags")
def delete_tags(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    op = "DeleteTags"
    check(op, params)
    refuse_reserved_tags([{"Key": key} for key in params["TagKeys"]])
    backend = get_backend()
    arn = params["ResourceArn"]
    ownership.require_change(ctx, backend, op, arn)
    call(backend.delete_tags, arn, list(params["TagKeys"]))
    _mirror(backend, arn)
    return {}


@operation("sagemaker", "ListTags")
def list_tags(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    op = "ListTags"
    check(op, params)
    tags = [
        {"Key": key, "Value": value}
        for key, value in call(tags_of, get_backend(), params["ResourceArn"]).items()
        if not key.lower().startswith(RESERVED_TAG_PREFIX)
    ]
    offset = _offset(params.get("NextToken"))
    size = params.get("MaxResults", DEFAULT_LIST_TAGS)
    result: dict[str, Any] = {"Tags": tags[offset : offset + size]}
    if len(tags) > offset + size:
        result["NextToken"] = str(offset + size)
    return result


def _offset(token: str | None) -> int:
    if not token:
        return 0
    if not token.isdigit():
        raise ApiError("ValidationException", "The pagination token is not valid.")
    return int(token)
