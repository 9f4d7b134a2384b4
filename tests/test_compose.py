"""The one-file deployment: compose.yaml and the dashboard's image (webapp/Dockerfile).

No container engine runs here, so the compose file is checked by what needs none: its
structure (parsed YAML), and ``docker compose config`` / ``docker-compose config`` where one
of them is installed (.ci/sysdeps.sh installs Debian's docker-compose). The image's start
commands are then run the way the suite starts the stack, with the compose file's own
command lines and environment: web, worker and beat against a real PostgreSQL server and a
real Redis, until the compose health check (the same command) says all is well.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests import postgres
from tests.servers import free_port, redis_server, start, stop, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
DOCKERFILE = (ROOT / "webapp" / "Dockerfile").read_text()
APP_SERVICES = ("web", "worker", "beat")
SAMPLE_ENV = {
    "POSTGRES_PASSWORD": "compose-test-password",
    "DJANGO_SECRET_KEY": "compose-test-" + "k" * 50,
    "ANYJOB_PUBLIC_URL": "https://anyjob.example.com",
}


def test_it_has_every_part_with_its_volume_and_health_check() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"web", "worker", "beat", "redis", "db"}
    for name in APP_SERVICES:
        service = services[name]
        assert service["command"] == ["python", "-m", "webapp.run", name]
        assert service["build"] == {"context": ".", "dockerfile": "webapp/Dockerfile"}
        assert service["environment"]["DATABASE_URL"].startswith("postgres://anyjob:")
        assert service["environment"]["DATABASE_URL"].endswith("@db:5432/anyjob")
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert service["depends_on"] == {
            "db": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }
        assert "anyjob-var:/var/lib/anyjob" in service["volumes"]
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "postgres-data:/var/lib/postgresql/data" in services["db"]["volumes"]
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert set(COMPOSE["volumes"]) == {"anyjob-var", "redis-data", "postgres-data"}


def test_the_image_starts_as_the_web_service_does() -> None:
    cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.MULTILINE).group(1)
    assert yaml.safe_load(cmd) == COMPOSE["services"]["web"]["command"]
    assert "ANYJOB_BIND=0.0.0.0" in DOCKERFILE
    assert re.search(r"^USER anyjob$", DOCKERFILE, re.MULTILINE)  # not root
    assert "pip install -r requirements.txt" in DOCKERFILE
    assert "collectstatic" in DOCKERFILE


def compose_cli() -> list[str] | None:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "compose.yaml", tmp_path / "compose.yaml")
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in SAMPLE_ENV.items()))
    return tmp_path


def test_compose_config_accepts_it(project: Path) -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("no docker compose / docker-compose (sudo apt-get install docker-compose)")
    done = subprocess.run([*cli, "config", "-q"], cwd=project, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # Without the .env's values it names what is missing.
    (project / ".env").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in SAMPLE_ENV}
    done = subprocess.run(
        [*cli, "config", "-q"], cwd=project, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in done.stderr or "set DJANGO_SECRET_KEY in .env" in done.stderr


@contextlib.contextmanager
def a_postgres_database():
    if os.environ.get("ANYJOB_TEST_POSTGRES_HOST"):  # the PostgreSQL pass: its server
        yield postgres.new_database("anyjob_compose")
        return
    if postgres.missing():
        pytest.skip(postgres.missing())
    server = postgres.Server()
    try:
        import psycopg

        with psycopg.connect(
            host=server.host, user=postgres.USER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE anyjob")
        yield server.url("anyjob")
    finally:
        server.stop()


@pytest.mark.slow
def test_the_services_start_as_compose_starts_them_and_become_healthy(tmp_path: Path) -> None:
    port = free_port()
    with a_postgres_database() as database_url, redis_server(tmp_path) as redis_url:
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ANYJOB_", "DJANGO_", "DATABASE_", "REDIS_"))
        }
        env = {
            **base,
            **SAMPLE_ENV,
            # What the image sets (webapp/Dockerfile), on loopback and a free port here.
            "ANYJOB_VAR_DIR": str(tmp_path / "var"),
            "ANYJOB_BIND": "127.0.0.1",
            "ANYJOB_PORT": str(port),
            "PYTHONUNBUFFERED": "1",
            # compose.yaml's, pointed at this machine's servers instead of db and redis.
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "ANYJOB_WEB_WORKERS": "2",
            "ANYJOB_HEALTH_STALE_SECONDS": "10",
        }
        procs, logs = {}, {}
        try:
            for name in APP_SERVICES:
                command = COMPOSE["services"][name]["command"]
                logs[name] = tmp_path / f"{name}.log"
                with logs[name].open("wb") as out:
                    argv = [sys.executable, *command[1:]]  # the venv's python for "python"
                    procs[name] = start(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
                if name == "web":
                    wait_for_port(port, timeout=60, proc=procs[name])
            check = COMPOSE["services"]["web"]["healthcheck"]["test"]
            assert check[:2] == ["CMD", "python"]
            probe = [sys.executable, *[a.replace(":8000/", f":{port}/") for a in check[2:]]]
            deadline = time.monotonic() + 60
            while subprocess.run(probe, capture_output=True, timeout=30).returncode != 0:
                dead = [n for n, p in procs.items() if p.poll() is not None]
                assert not dead, f"{dead} exited: " + "".join(logs[n].read_text()[-1500:] for n in dead)
                assert time.monotonic() < deadline, "".join(
                    f"\n--- {n}\n" + logs[n].read_text()[-1500:] for n in logs
                )
                time.sleep(0.5)
            text = "".join(log.read_text() for log in logs.values())
            assert "Traceback" not in text
        finally:
            for proc in procs.values():
                stop(proc)
