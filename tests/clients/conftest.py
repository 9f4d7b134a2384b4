"""Real clients (boto3, the AWS CLI, the SageMaker SDK v2 and v3) against the real anyjob.

``stack`` is anyjob as ``make run`` starts it (``python -m webapp.run``: the embedded Redis, a
Celery worker and beat, gunicorn), on a free port with its own ``var/`` (the browser tests'
machinery, ``tests/browser/conftest.py``), started once for this folder. ``user`` is an account
on it with an access key from ``manage.py create_access_key`` (its ``export`` lines, parsed).

Each client runs as its own process from its own cached venv (``venvs.py``), with an
environment built from nothing but what it needs: the key's ``AWS_*`` lines, a ``HOME`` of its
own (no ``~/.aws``), the SDK's telemetry off (its config file), instance metadata off, and
``HTTP(S)_PROXY``/``ALL_PROXY`` on a closed loopback port with only ``127.0.0.1`` in
``NO_PROXY``: a client that tried to reach anything but anyjob would fail, not leave the machine.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.browser.conftest import (
    Stack,
    run_stack,
    tail,
)
from tests.clients import venvs

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SCRIPTS = HERE / "scripts"
CODE = HERE / "code"
OUTPUT = ROOT / "test-output" / "clients"
#: What the SDKs read as their defaults file: telemetry off (both v2 and v3 honour this key).
SDK_CONFIG = "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"
#: The role jobs run under: anyjob's default (``ANYJOB_ROLE_ARN``), which its IAM knows (GetRole,
#: SimulatePrincipalPolicy) as SDK v3 requires.
ROLE_ARN = "arn:aws:iam::000000000000:role/anyjob-local"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Client:
    """One user's client environment; ``run`` starts a client process in it."""

    env: dict[str, str]
    home: Path
    stack: Stack

    @property
    def endpoint(self) -> str:
        return self.env["AWS_ENDPOINT_URL"]

    def run(
        self,
        venv: venvs.Venv,
        *args: str,
        tool: str = "python",
        timeout: float = 300,
        check: bool = True,
        extra_env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess:
        """``<venv>/bin/<tool> ARGS``; with ``check`` a non-zero exit fails the test with the
        client's output and the end of the stack's log."""
        done = subprocess.run(
            [str(venv.bin(tool)), *args],
            env={**self.env, "PATH": f"{venv.root / 'bin'}:/usr/bin:/bin", **(extra_env or {})},
            cwd=cwd or self.home,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{tool} {' '.join(args)[:300]} exited with {done.returncode}\n"
                f"--- stdout ---\n{done.stdout[-6000:]}\n--- stderr ---\n{done.stderr[-6000:]}\n"
                f"--- stack log ---\n{tail(self.stack.log_path, 4000)}"
            )
        return done

    def script(self, venv: venvs.Venv, name: str, *args: str, **kwargs) -> dict:
        """Run ``scripts/<name>`` with the venv's python; its last stdout line is JSON: returned."""
        return self.script_output(venv, name, *args, **kwargs)[0]

    def script_output(self, venv: venvs.Venv, name: str, *args: str, **kwargs) -> tuple[dict, str]:
        """``script``'s findings, and everything the script printed (stdout and stderr)."""
        done = self.run(venv, str(SCRIPTS / name), *args, **kwargs)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        assert lines, f"{name} printed no result\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return json.loads(lines[-1]), done.stdout + done.stderr


def venv_fixture(name: str):
    @pytest.fixture(scope="session")
    def fixture(request: pytest.FixtureRequest) -> venvs.Venv:
        started = time.monotonic()
        venv = venvs.ensure(name)
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            print(f"\n{venvs.describe(venv)} ({time.monotonic() - started:.1f} s)", flush=True)
        return venv

    return fixture


aws_venv = venv_fixture("aws")
sdk_v2_venv = venv_fixture("sdk-v2")
sdk_v3_venv = venv_fixture("sdk-v3")


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """anyjob as ``make run`` runs it, on a free port, with its own var/ folder."""
    yield from run_stack(tmp_path_factory.mktemp("clients-stack") / "var", OUTPUT, client_env=False)


EXPORT = re.compile(r"^export (AWS_[A-Z_]+)=(\S+)$")


def client_for(stack: Stack, username: str, home: Path) -> Client:
    """A new user with a new key, and a client environment that uses it."""
    stack.create_user(username, secrets.token_urlsafe(16))
    lines = stack.manage("create_access_key", username).splitlines()
    exported = dict(m.groups() for line in lines if (m := EXPORT.match(line.strip())))
    assert set(exported) == {
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
    }, lines
    assert exported["AWS_ENDPOINT_URL"] == f"{stack.base_url}/aws", exported
    home.mkdir(parents=True, exist_ok=True)
    config = home / "sagemaker-config.yaml"
    config.write_text(SDK_CONFIG)
    proxy = f"http://127.0.0.1:{closed_port()}"
    env = {
        **exported,
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_RETRY_MODE": "standard",
        "AWS_MAX_ATTEMPTS": "2",
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
        "SAGEMAKER_ADMIN_CONFIG_OVERRIDE": str(config),
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "ALL_PROXY": proxy,
        "http_proxy": proxy,
        "https_proxy": proxy,
        "all_proxy": proxy,
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
        "ANYJOB_TEST_ROLE_ARN": ROLE_ARN,
        "ANYJOB_TEST_CODE": str(CODE),
    }
    return Client(env=env, home=home, stack=stack)


@pytest.fixture(scope="package")
def user(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Client:
    """``carol``'s client environment (see ``client_for``)."""
    return client_for(stack, "carol", tmp_path_factory.mktemp("carol-home"))


@pytest.fixture(scope="package")
def teammate(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Client:
    """``dave``, on the same team as carol but owning none of her jobs."""
    return client_for(stack, "dave", tmp_path_factory.mktemp("dave-home"))


@pytest.fixture
def bucket() -> str:
    """A bucket name of the test's own (S3's rules: lower case, digits, hyphens)."""
    return f"clients-{secrets.token_hex(4)}"


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"
