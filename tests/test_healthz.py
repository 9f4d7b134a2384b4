"""``GET /healthz``: 200 when the database, Redis, a worker and beat are alive; 503 naming the rest.

The worker and beat parts are read from what they write to Redis (``webapp.celery``); here the
test writes it, with the same functions, to a real redis-server. ``tests/test_make_run.py``
stops each real part of a running stack in turn.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import connection

from tests.servers import free_port, redis_server
from webapp import health

pytestmark = pytest.mark.django_db(transaction=True)
PARTS = ["database", "redis", "worker", "beat"]


@pytest.fixture
def redis_url(tmp_path: Path, settings) -> str:
    with redis_server(tmp_path) as url:
        settings.REDIS_URL = url
        yield url


def test_it_is_ok_when_every_part_is_alive(client, redis_url: str) -> None:
    redis = health.redis_client()
    health.record_worker_heartbeat(redis, "celery@host-1")
    health.record_beat_tick(redis)
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "parts": dict.fromkeys(PARTS, "ok")}
    assert "no-cache" in response["Cache-Control"]


def test_it_needs_no_sign_in_and_names_a_missing_worker_and_beat(client, redis_url: str) -> None:
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["worker", "beat"]
    assert body["parts"]["worker"] == "down: no Celery worker heartbeat (no sign of life for 20 s)"
    assert body["parts"]["beat"] == "down: no tick from Celery beat (no sign of life for 20 s)"
    assert body["parts"]["database"] == body["parts"]["redis"] == "ok"


def test_a_worker_that_stopped_is_forgotten(client, redis_url: str) -> None:
    redis = health.redis_client()
    health.record_worker_heartbeat(redis, "celery@host-1")
    health.record_beat_tick(redis)
    health.forget_worker(redis, "celery@host-1")
    assert client.get("/healthz").json()["down"] == ["worker"]


def test_redis_down(client, settings) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["redis", "worker", "beat"]
    assert body["parts"]["redis"].startswith("down: Error 111 connecting to 127.0.0.1")
    assert body["parts"]["worker"] == "down: unknown while Redis is down"


def test_the_database_down(client, redis_url: str, tmp_path: Path) -> None:
    redis = health.redis_client()
    health.record_worker_heartbeat(redis, "celery@host-1")
    health.record_beat_tick(redis)
    saved = dict(connection.settings_dict)
    connection.close()
    # A database that is not there: a missing folder for SQLite, a missing socket for PostgreSQL.
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = str(tmp_path / "gone" / "db.sqlite3")
    else:
        connection.settings_dict["HOST"] = str(tmp_path / "gone")
    try:
        response = client.get("/healthz")
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["database"]
    assert body["parts"]["database"].startswith("down: ")
