"""The one place in ``jobs/`` and ``webapp/`` that creates boto3 sessions and clients.

Every client gets the same retry and timeout policy: botocore's *adaptive* retry mode (exponential
backoff with jitter on throttling and transient errors, plus a client-side rate limiter that slows
down after ``ThrottlingException``), 10 retries, and bounded connect/read timeouts. SageMaker
publishes no throttling rates, so backing off is the only correct answer (contract §4).

Endpoints, credentials and regions come from boto3's own chain, untouched: ``AWS_ENDPOINT_URL``,
``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL_SAGEMAKER``, ``endpoint_url`` in ``~/.aws/config``,
``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS``, profiles, ``AWS_DEFAULT_REGION``, … This module never
passes ``endpoint_url`` itself; a caller may.

Clients are cached. A boto3 client is thread-safe and may be shared; a ``Session`` is not, so each
client is built from a fresh session under a lock. The cache key includes the process id (a client
inherited through ``fork`` — Celery's prefork pool — would share its parent's sockets) and the
``AWS_*`` environment, so a test or a process that changes ``AWS_ENDPOINT_URL_S3`` gets a client
that honours it. ``reset()`` empties the cache (after credential files change, or in tests).

``credentials=`` gives a client someone else's credentials instead of the chain's: the local
backend's execution roles (``jobs.backends.local.roles``) stage a job's data with its role's.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from jobs.backends.local.roles import Credentials

# boto3 itself (~0.15 s to import) is imported on first use: a local job with file:// data
# never pays for it.


def __getattr__(name: str) -> Any:
    if name == "ERRORS":
        # Everything a call through boto3 may raise for a remote or configuration problem: a
        # service's error answer (ClientError), a transport or credentials problem
        # (BotoCoreError), and the managed transfers' wrappers (Boto3Error, e.g.
        # S3UploadFailedError, whose __context__ is the ClientError).
        from boto3.exceptions import Boto3Error

        return (ClientError, BotoCoreError, Boto3Error)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# 10 retries (11 attempts in all) in adaptive mode; a connect that takes 10 s is a dead endpoint,
# and 60 s of read silence is botocore's own default.
DEFAULT_CONFIG = Config(
    retries={"mode": "adaptive", "max_attempts": 10},
    connect_timeout=10,
    read_timeout=60,
    tcp_keepalive=True,
)

_lock = threading.Lock()
_clients: dict[tuple, Any] = {}


def client(
    service: str, *, region: str | None = None, credentials: Credentials | None = None, **kwargs: Any
) -> Any:
    """A cached botocore client for ``service`` with the retry/timeout policy above.

    ``region`` is the region name (``None``: the credentials' region, else boto3's default
    chain). ``credentials`` (a role's, see ``jobs.backends.local.roles``) replace the chain's
    credentials entirely: the environment's ``AWS_ACCESS_KEY_ID`` and profiles are not
    consulted for them. ``kwargs`` go to ``Session.client`` as they are (``endpoint_url``, …);
    a ``config`` among them is merged over ``DEFAULT_CONFIG``, its values winning. ``kwargs``
    are part of the cache key, so pass one long-lived ``Config`` object rather than a new one
    per call.
    """
    if credentials is not None:
        region = region or credentials.region
        kwargs["aws_access_key_id"] = credentials.access_key_id
        kwargs["aws_secret_access_key"] = credentials.secret_access_key
        kwargs["aws_session_token"] = credentials.session_token
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    key = (os.getpid(), service, region, env, tuple(sorted(kwargs.items(), key=lambda kv: kv[0])))
    cached = _clients.get(key)
    if cached is not None:
        return cached
    config = kwargs.pop("config", None)
    merged = DEFAULT_CONFIG.merge(config) if config is not None else DEFAULT_CONFIG
    with _lock:
        cached = _clients.get(key)
        if cached is None:
            import boto3.session

            session = boto3.session.Session()
            cached = session.client(service, region_name=region, config=merged, **kwargs)
            _clients[key] = cached
    return cached


def reset() -> None:
    """Forget every cached client; the next ``client()`` call builds a new one."""
    with _lock:
        _clients.clear()
