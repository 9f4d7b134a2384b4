"""Requests in the order the service model lists their members.

PostgreSQL stores ``JSONField`` values as ``jsonb``, which keeps no key order (SQLite keeps the
text as written): a request read back from it would show ``Tags`` before ``TrainingJobName``.
The pages show a stored request in the service's own order, the order boto3 and the AWS CLI
documentation use. Maps (``HyperParameters``, ``Environment``) keep the order they have.
"""

from __future__ import annotations

import functools
from typing import Any

import botocore.loaders
import botocore.model


@functools.cache
def _service(service: str) -> botocore.model.ServiceModel:
    return botocore.model.ServiceModel(botocore.loaders.Loader().load_service_model(service, "service-2"))


def in_shape_order(operation: str, params: dict[str, Any], service: str = "sagemaker") -> dict[str, Any]:
    """``params`` of ``operation`` with every structure's keys in the model's member order
    (keys the model does not know last, as they were)."""
    shape = _service(service).operation_model(operation).input_shape
    return _ordered(shape, params)


def _ordered(shape: botocore.model.Shape | None, value: Any) -> Any:
    if shape is None:
        return value
    if shape.type_name == "structure" and isinstance(value, dict):
        members = shape.members
        known = [(k, _ordered(members[k], value[k])) for k in members if k in value]
        return dict(known + [(k, v) for k, v in value.items() if k not in members])
    if shape.type_name == "list" and isinstance(value, list):
        return [_ordered(shape.member, item) for item in value]
    if shape.type_name == "map" and isinstance(value, dict):
        return {k: _ordered(shape.value, v) for k, v in value.items()}
    return value
