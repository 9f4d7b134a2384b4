"""Training jobs whose process died (machine restart, OOM kill): failed with a reason.

A job's process writes a heartbeat while it runs; one that stopped sending them for
``ANYJOB_LOCAL_HEARTBEAT_TIMEOUT`` is failed by ``reap_abandoned`` (which the backend's
describe, list and create calls run first) instead of staying ``InProgress`` forever.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils.timezone import now

from jobs.backends.local import resources, states, volume
from jobs.backends.local.executor import cgroup_name, executor_gone
from jobs.backends.local.models import ACTIVE, LocalTrainingJob, Status

log = logging.getLogger(__name__)


def reap_abandoned() -> int:
    """Fail active jobs whose process stopped sending heartbeats; returns how many."""
    timeout = timedelta(seconds=settings.ANYJOB_LOCAL_HEARTBEAT_TIMEOUT)
    cutoff = now() - timeout
    stale = Q(heartbeat__lt=cutoff) | Q(heartbeat__isnull=True, creation_time__lt=cutoff)
    reaped = 0
    for pk in LocalTrainingJob.objects.filter(stale, status__in=ACTIVE).values_list("pk", flat=True):
        with transaction.atomic():
            job = LocalTrainingJob.objects.select_for_update().filter(stale, pk=pk, status__in=ACTIVE).first()
            if job is None:
                continue  # it moved on meanwhile
            if job.executor:
                reason = (
                    f"InternalServerError: the process running this job ({job.executor}) stopped "
                    f"sending heartbeats for over {timeout.total_seconds():g} s; the job was abandoned."
                )
            else:
                reason = "InternalServerError: the process for this job never started."
            states.finish(job, Status.FAILED, "Failed", reason)
            job.save()
            reaped += 1
            log.warning("training job %s failed: %s", job.name, reason)
        _release_leftovers(job)
    return reaped


def _release_leftovers(job: LocalTrainingJob | None) -> None:
    """Unmount the volume of an abandoned job whose process is gone from this machine (it
    would have released it itself, had it not been killed)."""
    if job is None or not job.executor:
        return
    host, _, _ = job.executor.rpartition(":")
    root = Path(settings.ANYJOB_LOCAL_ROOT) / job.key
    if host != socket.gethostname():
        return  # another machine's: not ours to touch
    release_root(root)


def release_root(root: Path) -> bool:
    """What the killed process of the job under ``root`` would have released itself: its
    volume's mount and its cgroup, with whatever is left in it (its network helper, pasta).
    Nothing is touched while the process lives; returns whether it was gone."""
    if not executor_gone(root):
        return False
    volume.release(root)
    remove_cgroup(cgroup_name(root.name, root))
    return True


def remove_cgroup(name: str) -> None:
    """The cgroup ``name`` removed, what is left in it killed first (nothing where there are no
    cgroups, or it is gone already)."""
    if resources.detect().mode != "none":
        with contextlib.suppress(OSError):
            resources.create(name, resources.Limits(1.0, 64 * 1024**2, 16)).remove()
