"""Fixtures for the API's tests: boto3 clients signed with a user's access key.

``api`` is the fast path: pytest-django's ``live_server`` (the same Django, URLconf and
middleware, in a thread of the test process) with one user and one key; ``api.client(service)``
is an unmodified boto3 client whose endpoint URL is ``<server>/aws``. ``web_server`` is the real
stack's web server (``python -m webapp.run web``: checks, migrations, gunicorn) in its own
``var/`` folder, for the tests that must go through gunicorn.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port, redis_server, start, stop, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
#: Client processes reach nothing but the server: a proxy on a closed loopback port.
CLOSED_PROXY = "http://127.0.0.1:9"
NO_PROXY_ENV = {"HTTP_PROXY": CLOSED_PROXY, "HTTPS_PROXY": CLOSED_PROXY, "NO_PROXY": "", "no_proxy": ""}


@dataclass
class Api:
    url: str
    user: Any
    key_id: str
    secret: str
    region: str = "us-east-1"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return self.url + "/aws"

    def client(self, service: str, *, key_id: str | None = None, secret: str | None = None, **config: Any):
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id=key_id or self.key_id,
            aws_secret_access_key=secret or self.secret,
            region_name=self.region,
            config=Config(retries={"max_attempts": 1}, **config),
        )


@pytest.fixture
def api(live_server, django_user_model, monkeypatch: pytest.MonkeyPatch) -> Api:
    from jobs.awsapi.models import AccessKey

    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    user = django_user_model.objects.create_user("dora", password="explorer-password")
    key, secret = AccessKey.create_for(user, "tests")
    return Api(live_server.url, user, key.access_key_id, secret)


STATE = {
    "ANYJOB_VAR_DIR",
    "ANYJOB_LOCAL_ROOT",
    "ANYJOB_ARTIFACT_STORE",
    "ANYJOB_PORT",
    "DATABASE_URL",
    "REDIS_URL",
    "DJANGO_SETTINGS_MODULE",
    "ANYJOB_PUBLIC_URL",
    "ANYJOB_ADMIN_PASSWORD",
}


@dataclass
class WebServer:
    url: str
    env: dict[str, str]

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """gunicorn through ``webapp.run web`` on a free port, with its own database and Redis."""
    folder = tmp_path_factory.mktemp("api-web")
    port = free_port()
    with redis_server(folder) as redis_url:
        env = {k: v for k, v in os.environ.items() if k not in STATE and not k.startswith("AWS_")}
        env.update(
            ANYJOB_VAR_DIR=str(folder / "var"),
            DJANGO_SETTINGS_MODULE="webapp.settings",
            DJANGO_SECRET_KEY="api-tests-" + "s" * 40,
            REDIS_URL=redis_url,
            ANYJOB_PORT=str(port),
            ANYJOB_WEB_WORKERS="2",
            ANYJOB_ADMIN_PASSWORD="an-admin-password-for-tests",
            PYTHONUNBUFFERED="1",
        )
        log = folder / "web.log"
        with log.open("wb") as out:
            proc = start(
                [sys.executable, "-m", "webapp.run", "web"], cwd=ROOT, env=env, stdout=out, stderr=out
            )
        try:
            wait_for_port(port, timeout=90, proc=proc)
            yield WebServer(f"http://127.0.0.1:{port}", env)
        finally:
            stop(proc)
            text = log.read_text(errors="replace")
            assert "Traceback" not in text, text[-3000:]
