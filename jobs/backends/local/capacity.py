"""The machine's own capacity: the emulator runs at most ``ANYJOB_LOCAL_MAX_INSTANCES``
instances at once, training jobs and endpoints together (each is one instance locally).

A training job holds an instance while ``InProgress`` or ``Stopping`` (``models.ACTIVE``), an
endpoint while ``Creating`` or ``InService`` (``models.SERVING``). A create past the limit is
refused with ``ResourceLimitExceeded`` in AWS's words, as a request past an account quota is.

Counting and inserting must be one step across processes (two creates at once must not both
pass): ``locked()`` opens a transaction whose first act takes the database's write lock, the
caller inserts its row inside it, and ``exceeded()`` then counts with that row included::

    with capacity.locked():
        insert the row
        if (problem := capacity.exceeded(instance_type, "training job")):
            raise ...  # the transaction rolls the row back
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection, transaction

from jobs.backends.local.models import ACTIVE, SERVING, LocalEndpoint, LocalTrainingJob

#: PostgreSQL advisory lock key of the capacity check (any constant unique to it).
LOCK_KEY = zlib.crc32(b"anyjob.local.capacity")


def _take_write_lock() -> None:
    if connection.vendor == "postgresql":
        # Held until the transaction ends; other creates wait here, then count what we inserted.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
    else:
        # SQLite's first write takes its one write lock, held until the transaction ends (the
        # settings' immediate transactions take it at BEGIN already; this makes it certain).
        LocalTrainingJob.objects.filter(pk=-1).update(stop_reason="")


@contextmanager
def locked() -> Iterator[None]:
    """A transaction holding the capacity lock from its first statement to its end."""
    with transaction.atomic():
        _take_write_lock()
        yield


def in_use() -> int:
    """Instances running now (or about to): active training jobs and serving endpoints."""
    jobs = LocalTrainingJob.objects.filter(status__in=ACTIVE).count()
    endpoints = LocalEndpoint.objects.filter(status__in=SERVING).count()
    return jobs + endpoints


def exceeded(instance_type: str, usage: str) -> str | None:
    """AWS's refusal if the request just inserted (counted by ``in_use``) goes past the limit,
    else None. ``usage`` is "training job" or "endpoint", as in AWS's quota names."""
    limit = settings.ANYJOB_LOCAL_MAX_INSTANCES
    current = in_use() - 1  # without the request's own row
    if current + 1 <= limit:
        return None
    return (
        f"The account-level service limit '{instance_type} for {usage} usage' is {limit} Instances, "
        f"with current utilization of {current} Instances and a request delta of 1 Instances. "
        "Please contact AWS support to request an increase for this limit. (anyjob: "
        f"ANYJOB_LOCAL_MAX_INSTANCES={limit} is how many training jobs and endpoints this machine "
        "runs at once; wait for one to end, or ask the administrator to raise it.)"
    )
