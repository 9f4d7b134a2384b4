"""Who owns a resource the API changes (stop, delete, tag): the owner rule of the dashboard
(``jobs.permissions.may_change``: the owner or staff), applied to ARNs.

- a training job: its history row's owner;
- an endpoint: its endpoints-page row's owner, while the row is live;
- otherwise (a model, an endpoint config, an endpoint made outside the history's jobs) the tag
  the API put on it when it made it (``anyjob:owner-id``), or the endpoint row named by the
  dashboard's own tag (``anyjob:endpoint-id``).

A resource with none of these (made outside anyjob) has no owner here, and anyone may change it.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from jobs.awsapi.common import OWNER_TAG, access_denied, from_client_error
from jobs.awsapi.registry import Context
from jobs.backends.base import tags_of
from jobs.endpoints.models import Endpoint
from jobs.models import TrainingJob
from jobs.permissions import may_change
from jobs.requests import ENDPOINT_ID_TAG


def kind_and_name(arn: str) -> tuple[str, str]:
    """``("endpoint", "name")`` of ``arn:aws:sagemaker:region:account:endpoint/name``."""
    kind, _, name = arn.rpartition(":")[2].partition("/")
    return kind, name


def owner_id(backend: Any, arn: str) -> int | None:
    kind, name = kind_and_name(arn)
    if kind == "training-job":
        found = TrainingJob.objects.filter(name__iexact=name).values_list("owner_id", flat=True).first()
        if found is not None:
            return found
    if kind == "endpoint":
        live = Endpoint.objects.filter(name__iexact=name).exclude(status__in=Endpoint.FINAL)
        found = live.values_list("owner_id", flat=True).first()
        if found is not None:
            return found
    try:
        tags = tags_of(backend, arn)
    except ClientError as exc:
        raise from_client_error(exc) from None
    if OWNER_TAG in tags and tags[OWNER_TAG].isdigit():
        return int(tags[OWNER_TAG])
    if tags.get(ENDPOINT_ID_TAG, "").isdigit():
        return (
            Endpoint.objects.filter(pk=int(tags[ENDPOINT_ID_TAG])).values_list("owner_id", flat=True).first()
        )
    return None


def require_change(ctx: Context, backend: Any, operation: str, arn: str) -> None:
    """Refuse (``AccessDeniedException``) unless the key's user may change ``arn``."""
    owner = owner_id(backend, arn)
    if owner is not None and not may_change(ctx.user, owner):
        raise access_denied(ctx, operation, arn)
