"""``GET /healthz``: is every part of anyjob alive? For load balancers and ``make run``.

Four parts, each checked for real: the database (a query), Redis (a ping), at least one Celery
worker (the heartbeat each worker writes to Redis every 2 s, see ``webapp.celery``) and beat
(its last tick: it writes one each time it sends a task). 200 with ``{"status": "ok", ...}``
when all answer, else 503 with the parts that do not, each with a one-line reason.
"""

from __future__ import annotations

import time

import redis
from django.conf import settings
from django.db import DatabaseError, connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

WORKER_KEY = "anyjob:health:worker:"
BEAT_KEY = "anyjob:health:beat"
PARTS = ("database", "redis", "worker", "beat")


def redis_client(url: str | None = None) -> redis.Redis:
    """A client for ``REDIS_URL`` (Celery's ``redis+socket://`` form included), quick to fail."""
    url = url or settings.REDIS_URL
    if url.startswith("redis+socket://"):
        url = "unix://" + url.removeprefix("redis+socket://")
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def record_worker_heartbeat(client: redis.Redis, hostname: str) -> None:
    client.set(WORKER_KEY + hostname, f"{time.time():.3f}", ex=settings.ANYJOB_HEALTH_STALE_SECONDS)


def forget_worker(client: redis.Redis, hostname: str) -> None:
    client.delete(WORKER_KEY + hostname)


def record_beat_tick(client: redis.Redis) -> None:
    client.set(BEAT_KEY, f"{time.time():.3f}", ex=settings.ANYJOB_HEALTH_STALE_SECONDS)


def _database() -> str | None:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        connections["default"].close()
        return _one_line(exc)
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def problems() -> dict[str, str]:
    """The parts that are down, each with why (empty when all is well)."""
    down: dict[str, str] = {}
    if (reason := _database()) is not None:
        down["database"] = reason
    stale = f"no sign of life for {settings.ANYJOB_HEALTH_STALE_SECONDS:g} s"
    client = redis_client()
    try:
        client.ping()
        workers = sum(1 for _ in client.scan_iter(match=WORKER_KEY + "*", count=100))
        beat = client.exists(BEAT_KEY)
    except redis.RedisError as exc:
        down["redis"] = _one_line(exc)
        # Workers and beat report through Redis: without it nothing says they are alive.
        down["worker"] = down["beat"] = "unknown while Redis is down"
    else:
        if not workers:
            down["worker"] = f"no Celery worker heartbeat ({stale})"
        if not beat:
            down["beat"] = f"no tick from Celery beat ({stale})"
    finally:
        client.close()
    return down


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    down = problems()
    body = {
        "status": "down" if down else "ok",
        "parts": {part: ("down: " + down[part]) if part in down else "ok" for part in PARTS},
    }
    if down:
        body["down"] = sorted(down, key=PARTS.index)
    return JsonResponse(body, status=503 if down else 200)
