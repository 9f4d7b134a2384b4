"""Where local jobs and endpoints are started: one detached process each.

``launch_executor`` starts a training job's process (``executor.py``), ``launch_endpoint_host``
an endpoint's host process (``endpoint_host.py``). Each writes a plan file (everything the
process needs before Django is set up; readable by anyjob alone) and runs
``python -m <module> --detach PLAN``, which ``detach``-es: the process outlives the worker or
web process that asked, and nothing waits for it.

Only the process side (``detach``) runs before Django is set up: Django is imported inside
the launching functions, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.backends.local.models import LocalEndpoint, LocalTrainingJob

#: The server's own credentials: a job's process works with its role's alone, so that no step
#: of it can fall back to them (boto3's chain would find these first).
SERVER_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
}


def write_private(path: Path, text: str) -> None:
    """Write a plan file readable by anyjob alone (0600): it holds the request, whose
    Environment may carry secrets."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)  # an older file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def child_environment() -> dict[str, str]:
    """The environment of a job's or an endpoint's process: ours without the server's
    credentials, with this process's ``ANYJOB_LOCAL_ROLES``, ``ANYJOB_S3``, ``ANYJOB_S3_ROOT``
    and ``ANYJOB_BACKEND`` (which ``roles`` and ``s3_store`` read there before Django is set up)."""
    from django.conf import settings

    from jobs.backends.local import image, roles

    env = {k: v for k, v in os.environ.items() if k not in SERVER_CREDENTIALS}
    env[roles.SETTING] = settings.ANYJOB_LOCAL_ROLES
    # Which S3 ``s3://`` is and where the embedded store lives (``s3_store.mode``/``root``),
    # as this process decided them: the job's process stages channels before Django is set up.
    env["ANYJOB_S3"] = str(settings.ANYJOB_S3)
    env["ANYJOB_S3_ROOT"] = str(settings.ANYJOB_S3_ROOT)
    env["ANYJOB_BACKEND"] = str(settings.ANYJOB_BACKEND)
    # This checkout's container package (the hyperparameter decoder), whatever the .pth says.
    env["PYTHONPATH"] = os.pathsep.join([str(image.CONTAINER_DIR), *filter(None, [env.get("PYTHONPATH")])])
    return env


def hidden_paths(databases: Mapping[str, Any] | None = None) -> list[str]:
    """What looks empty inside every sandbox: anyjob's state (``var/``: the database, the
    secret key, the Redis socket, artifacts, other jobs), the emulator's folders, the home
    folder (credentials), the embedded S3 (``ANYJOB_S3_ROOT``), and a SQLite database
    (``settings.DATABASES``) wherever it is."""
    from django.conf import settings

    # The embedded S3's files too, wherever ANYJOB_S3_ROOT puts them: a job reaches the store
    # only through what anyjob stages for it.
    paths = [settings.VAR_DIR, settings.ANYJOB_LOCAL_ROOT, settings.ANYJOB_S3_ROOT, Path.home()]
    for database in (settings.DATABASES if databases is None else databases).values():
        if "sqlite" in database.get("ENGINE", "") and str(database.get("NAME", "")).startswith("/"):
            name = Path(database["NAME"])
            paths += [name, Path(f"{name}-wal"), Path(f"{name}-shm"), Path(f"{name}-journal")]
    return list(dict.fromkeys(str(p) for p in paths))


def _common_plan() -> dict[str, Any]:
    """What both kinds of process are told: the image, the sandbox, the timings, Django's settings."""
    from django.conf import settings

    return {
        "image_env_root": str(settings.ANYJOB_IMAGE_ENV_ROOT),
        # Hidden inside the sandbox: the database, sockets, artifacts, other jobs, credentials.
        "hide": hidden_paths(),
        "stop_grace_seconds": settings.ANYJOB_LOCAL_STOP_GRACE_SECONDS,
        "heartbeat_seconds": settings.ANYJOB_LOCAL_HEARTBEAT_SECONDS,
        "max_log_events": settings.ANYJOB_LOCAL_MAX_LOG_EVENTS,
        "max_processes": settings.ANYJOB_LOCAL_MAX_PROCESSES,
        "django_settings": os.environ.get("DJANGO_SETTINGS_MODULE", "webapp.settings"),
    }


def launch(module: str, plan_file: Path, plan: dict[str, Any]) -> None:
    """Write ``plan`` to ``plan_file`` and run ``python -m module --detach plan_file``; returns
    once the process has detached (``detach``)."""
    from django.conf import settings

    write_private(plan_file, json.dumps(plan))
    subprocess.run(
        [sys.executable, "-m", module, "--detach", str(plan_file)],
        cwd=settings.BASE_DIR,
        env=child_environment(),
        stdin=subprocess.DEVNULL,
        check=True,
        timeout=30,
    )


def endpoint_root(endpoint: LocalEndpoint) -> Path:
    """The endpoint's folder on this machine (its ``ml/`` is ``/opt/ml`` for the server).
    ``_`` cannot start a SageMaker name, so no training job's folder is ever called that."""
    from django.conf import settings

    return Path(settings.ANYJOB_LOCAL_ROOT) / "_endpoints" / f"{endpoint.key}-{endpoint.uid}"


def launch_executor(job: LocalTrainingJob) -> None:
    """Start the job's process, detached: it outlives the worker or web process that asked.

    Everything it needs before Django is set up goes into its plan file, so the container can
    start while the process is still importing Django.
    """
    from django.conf import settings

    job_root = Path(settings.ANYJOB_LOCAL_ROOT) / job.key
    job_root.mkdir(parents=True, exist_ok=True)
    plan = {
        "name": job.name,
        "key": job.key,
        "arn": job.arn,
        "request": job.request,
        "job_root": str(job_root),
        "max_channel_bytes": settings.ANYJOB_LOCAL_MAX_CHANNEL_BYTES,
        "training_image": settings.ANYJOB_TRAINING_IMAGE,  # any other URI gets a job note
        **_common_plan(),
    }
    launch("jobs.backends.local.executor", job_root / "plan.json", plan)


def launch_endpoint_host(endpoint: LocalEndpoint) -> None:
    """Start the endpoint's host process for its current generation, detached (see
    ``endpoint_host.py``). Returns once the host holds the endpoint's lock."""
    from django.conf import settings

    from jobs.backends.local.shapes import variant_name

    root = endpoint_root(endpoint)
    root.mkdir(parents=True, exist_ok=True)
    variant = endpoint.config["ProductionVariants"][0]
    plan = {
        "name": endpoint.name,
        "key": endpoint.key,
        "generation": endpoint.generation,
        "root": str(root),
        "model": endpoint.model,
        "variant": variant_name(endpoint),
        "instance_type": variant.get("InstanceType", ""),
        "volume_gb": variant.get("VolumeSizeInGB"),
        "region": settings.ANYJOB_REGION,
        "startup_seconds": settings.ANYJOB_LOCAL_ENDPOINT_STARTUP_SECONDS,
        **_common_plan(),
    }
    launch("jobs.backends.local.endpoint_host", root / f"plan-{endpoint.generation}.json", plan)


def detach() -> None:
    """In the launched process: double fork, so the caller returns at once and the process
    belongs to no one, with its standard streams on ``/dev/null``."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
