"""Serving a team: ``ANYJOB_PUBLIC_URL`` behind an HTTPS proxy, through the image's start command.

``python -m webapp.run web`` is what the image (``Dockerfile``, ``compose.yaml``) runs: the
checks, the migrations, the first admin, then gunicorn. Here it runs against its own database
and a real Redis, and a client plays the proxy: it talks plain HTTP to gunicorn and says
``X-Forwarded-Proto: https`` with the public host name.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from tests.servers import free_port, redis_server, start, stop, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = "https://anyjob.example.com"
SECRET = "team-test-" + "k" * 50
STATE = {"DATABASE_URL", "REDIS_URL", "ANYJOB_PUBLIC_URL", "DJANGO_SECRET_KEY", "ANYJOB_PORT", "ANYJOB_BIND"}


def team_env(var: Path, **variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in STATE}
    env.update(
        ANYJOB_VAR_DIR=str(var),
        DJANGO_SETTINGS_MODULE="webapp.settings",
        ANYJOB_PUBLIC_URL=PUBLIC,
        DJANGO_SECRET_KEY=SECRET,
        PYTHONUNBUFFERED="1",
        **variables,
    )
    if os.environ.get("ANYJOB_TEST_POSTGRES_HOST"):  # the PostgreSQL pass: a database of its own
        from tests.postgres import new_database

        env["DATABASE_URL"] = new_database("anyjob_team")
    return env


def test_check_deploy_is_clean_with_a_public_url(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=team_env(tmp_path / "var"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "System check identified no issues (0 silenced)."


class Proxy:
    """What the HTTPS proxy in front of gunicorn sends on: the public host, and the scheme."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: dict | None = None, https: bool = True):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Host": "anyjob.example.com"}
        if https:
            headers["X-Forwarded-Proto"] = "https"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        data = None
        if body is not None:
            data = urllib.parse.urlencode(body)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Referer"] = PUBLIC + path
            headers["Origin"] = PUBLIC
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        page = response.read().decode()
        set_cookies = response.headers.get_all("Set-Cookie") or []
        for cookie in set_cookies:
            name, value = cookie.split(";", 1)[0].split("=", 1)
            self.cookies[name] = value
        conn.close()
        return response, page, set_cookies


@pytest.mark.slow
def test_it_signs_in_through_gunicorn_behind_a_proxy(tmp_path: Path) -> None:
    port = free_port()
    with redis_server(tmp_path) as redis_url:
        env = team_env(
            tmp_path / "var",
            REDIS_URL=redis_url,
            ANYJOB_PORT=str(port),
            ANYJOB_ADMIN_PASSWORD="a-long-team-password",
            ANYJOB_WEB_WORKERS="2",
        )
        log = tmp_path / "web.log"
        with log.open("wb") as out:
            web = start(
                [sys.executable, "-m", "webapp.run", "web"], cwd=ROOT, env=env, stdout=out, stderr=out
            )
        try:
            wait_for_port(port, timeout=60, proc=web)
            proxy = Proxy(port)

            # Plain HTTP is sent to HTTPS, except the health check (load balancers probe it so).
            response, _, _ = proxy.request("GET", "/accounts/login/", https=False)
            assert response.status == 301
            assert response.getheader("Location") == PUBLIC + "/accounts/login/"
            response, page, _ = proxy.request("GET", "/healthz", https=False)
            assert response.status == 503  # no worker nor beat here
            assert '"down": ["worker", "beat"]' in page

            response, page, cookies = proxy.request("GET", "/accounts/login/")
            assert response.status == 200
            assert (
                response.getheader("Strict-Transport-Security")
                == "max-age=31536000; includeSubDomains; preload"
            )
            assert any(c.startswith("csrftoken=") and "; Secure" in c for c in cookies), cookies
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)

            form = {"csrfmiddlewaretoken": token, "username": "admin", "password": "a-long-team-password"}
            response, _, cookies = proxy.request("POST", "/accounts/login/", form)
            assert response.status == 302, log.read_text()[-2000:]
            assert response.getheader("Location") == "/jobs/"
            assert any(c.startswith("sessionid=") and "; Secure" in c and "HttpOnly" in c for c in cookies)

            response, page, _ = proxy.request("GET", "/jobs/")
            assert response.status == 200
            assert "<h2>Jobs</h2>" in page
            # Static files come from whitenoise, in the same gunicorn.
            response, _, _ = proxy.request("GET", "/static/admin/css/base.css")
            assert response.status == 200

            assert "Traceback" not in log.read_text()

            # A host other than the public one is refused.
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request(
                "GET", "/accounts/login/", headers={"Host": "evil.example.net", "X-Forwarded-Proto": "https"}
            )
            assert conn.getresponse().status == 400
            conn.close()
        finally:
            stop(web)


def test_gunicorn_listens_where_anyjob_bind_says_with_workers_from_the_cores(tmp_path: Path) -> None:
    show = "import os, webapp.gunicorn_conf as c; print(c.bind, c.workers, c.threads, os.cpu_count())"
    for variables, expected in (
        ({}, "127.0.0.1:8000"),
        ({"ANYJOB_BIND": "0.0.0.0", "ANYJOB_PORT": "9000"}, "0.0.0.0:9000"),
        ({"ANYJOB_BIND": "::", "ANYJOB_WEB_WORKERS": "3"}, "[::]:8000"),
    ):
        env = {k: v for k, v in team_env(tmp_path / "var").items() if k not in {"ANYJOB_BIND", "ANYJOB_PORT"}}
        env.pop("DATABASE_URL", None)
        done = subprocess.run(
            [sys.executable, "-c", show], cwd=ROOT, env={**env, **variables}, capture_output=True, text=True
        )
        bind, workers, threads, cores = done.stdout.split()
        assert bind == expected, done.stderr
        assert int(workers) == int(variables.get("ANYJOB_WEB_WORKERS", 2 * int(cores) + 1))
        assert threads == "4"
