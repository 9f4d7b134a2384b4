"""The Celery app: settings are Django's ``CELERY_*``, tasks each app's ``tasks.py``.

Workers and beat also say they are alive, for ``GET /healthz`` (``webapp.health``): each
worker on every event heartbeat (every 2 s), beat each time it sends a task.
"""

import contextlib
import os
import socket

import redis
from celery import Celery
from celery.signals import beat_init, before_task_publish, heartbeat_sent, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("anyjob")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

_health_redis = None


def _client():
    global _health_redis
    if _health_redis is None:
        from webapp.health import redis_client

        _health_redis = redis_client()
    return _health_redis


def _hostname(heart) -> str:
    return getattr(getattr(heart, "eventer", None), "hostname", None) or socket.gethostname()


@heartbeat_sent.connect
def _worker_alive(sender, **_kwargs) -> None:
    from webapp.health import record_worker_heartbeat

    with contextlib.suppress(redis.RedisError):  # Redis down: /healthz says so itself
        record_worker_heartbeat(_client(), _hostname(sender))


@worker_shutdown.connect
def _worker_gone(sender, **_kwargs) -> None:
    from webapp.health import forget_worker

    with contextlib.suppress(redis.RedisError):
        forget_worker(_client(), getattr(sender, "hostname", None) or socket.gethostname())


def _beat_ticked(**_kwargs) -> None:
    from webapp.health import record_beat_tick

    with contextlib.suppress(redis.RedisError):
        record_beat_tick(_client())


@beat_init.connect
def _in_beat(**_kwargs) -> None:
    # Only in the beat process: a task sent from a view or a worker is not a tick.
    before_task_publish.connect(_beat_ticked, weak=False)
