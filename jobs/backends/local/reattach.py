"""Endpoints whose host process is gone: a new host takes over, or a deletion is finished.

An endpoint that should be serving (``Creating``, ``InService``) whose host died (a machine
restart) is not failed but restarted: ``reattach`` starts a new generation's host for it
(``launch.launch_endpoint_host``). ``reattach_endpoints`` does it for every endpoint (a beat
task's job); ``DescribeEndpoint`` and ``InvokeEndpoint`` do it for theirs.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
from datetime import timedelta

from django.conf import settings
from django.utils.timezone import now

from jobs.backends.local import endpoint_host, launch
from jobs.backends.local.models import SERVING, EndpointStatus, LocalEndpoint

log = logging.getLogger(__name__)


def launch_host(endpoint: LocalEndpoint) -> None:
    """Start the endpoint's host process; an endpoint whose host cannot start fails, saying so."""
    try:
        launch.launch_endpoint_host(endpoint)
    except (OSError, subprocess.SubprocessError) as exc:
        log.exception("endpoint %s: could not start its host process", endpoint.name)
        LocalEndpoint.objects.filter(pk=endpoint.pk, generation=endpoint.generation).filter(
            status__in=SERVING
        ).update(
            status=EndpointStatus.FAILED,
            failure_reason=f"InternalServerError: could not start the endpoint's process: {exc}"[:1024],
            last_modified_time=now(),
            launched_at=None,
        )


def host_alive(endpoint: LocalEndpoint) -> bool:
    """Whether the endpoint's current host process is alive (or on its way up).

    On this machine the host's lock says it exactly; elsewhere (a shared database) the
    heartbeat does, after ``ANYJOB_LOCAL_HEARTBEAT_TIMEOUT``. A host launched but not yet
    in its row counts as alive for that long too."""
    cutoff = now() - timedelta(seconds=settings.ANYJOB_LOCAL_HEARTBEAT_TIMEOUT)
    starting = not endpoint.host and endpoint.launched_at is not None and endpoint.launched_at > cutoff
    if endpoint.machine == socket.gethostname():
        return starting or endpoint_host.lock_is_held(launch.endpoint_root(endpoint))
    return starting or (endpoint.heartbeat is not None and endpoint.heartbeat > cutoff)


def reattach(endpoint: LocalEndpoint) -> LocalEndpoint | None:
    """The endpoint after making sure a live host serves it (None once it is deleted)."""
    if endpoint.status == EndpointStatus.FAILED or host_alive(endpoint):
        return endpoint
    here = endpoint.machine == socket.gethostname()
    if endpoint.status == EndpointStatus.DELETING:
        LocalEndpoint.objects.filter(
            pk=endpoint.pk, generation=endpoint.generation, status=EndpointStatus.DELETING
        ).delete()
        if here:
            shutil.rmtree(launch.endpoint_root(endpoint), ignore_errors=True)
        return LocalEndpoint.objects.filter(pk=endpoint.pk).first()
    # Creating or InService with no host: a new generation takes over (exactly one caller
    # wins the update; a late host of the old generation can no longer claim the row).
    moved = (
        LocalEndpoint.objects.filter(pk=endpoint.pk, generation=endpoint.generation, status__in=SERVING)
        .exclude(status=EndpointStatus.FAILED)
        .update(
            generation=endpoint.generation + 1,
            host="",
            heartbeat=None,
            port=None,
            server_pid=None,
            launched_at=now(),
            machine=socket.gethostname(),
        )
    )
    fresh = LocalEndpoint.objects.filter(pk=endpoint.pk).first()
    if moved and fresh is not None:
        log.warning(
            "endpoint %s: its host process (%s) is gone; starting generation %d",
            fresh.name,
            endpoint.host or "never started",
            fresh.generation,
        )
        launch_host(fresh)
    return fresh


def reattach_endpoints() -> int:
    """Start a new host for every endpoint that should be serving (``Creating``,
    ``InService``) but whose host process is gone, and finish the deletion of ``Deleting``
    ones whose host is gone; returns how many. Cheap when all is well (one query, and a
    ``flock`` probe per endpoint of this machine): a beat task may call it every few
    seconds, and ``describe_endpoint`` does it for the endpoint it describes."""
    count = 0
    for endpoint in LocalEndpoint.objects.filter(status__in=[*SERVING, EndpointStatus.DELETING]):
        generation = endpoint.generation
        after = reattach(endpoint)
        if after is None or after.generation != generation:
            count += 1
    return count
