"""The serve process: settings from the environment, workers, timeouts, SIGTERM."""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.container.serving import serving
from tests.container.support import container_env, run_container
from tests.servers import free_port, start, stop, wait_for_port

# model_fn leaves one file per load, named by the worker's pid.
COUNTING_MODEL = """\
import os
import pathlib
import time


def model_fn(model_dir):
    loads = pathlib.Path(model_dir) / "loads"
    loads.mkdir(exist_ok=True)
    (loads / str(os.getpid())).touch()
    return os.getpid()


def predict_fn(data, model):
    if data == "sleep":
        time.sleep(30)
    return model
"""

SLOW_LOAD = "import time\n\n\ndef model_fn(model_dir):\n    time.sleep(60)\n"


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_it_starts_the_number_of_workers_asked_each_loading_the_model_once(tmp_path):
    with serving(tmp_path, code={"inference.py": COUNTING_MODEL}, workers=3) as srv:
        srv.wait_healthy()
        loads = tmp_path / "model" / "loads"
        _wait_for(lambda: len(list(loads.iterdir())) == 3)
        workers = _children(srv.proc.pid)
        assert len(workers) == 3
        for _ in range(20):  # whichever worker answers, it loaded its model once
            assert srv.invoke('"pid"').json() in workers
        assert {int(p.name) for p in loads.iterdir()} == workers
        # /ping names the worker that answered (anyjob's local host waits for every one).
        named = {int(srv.request("GET", "/ping").headers["x-anyjob-worker"]) for _ in range(30)}
        assert named <= workers and len(named) >= 2


@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_it_stops_cleanly_and_quickly_on_sigterm(tmp_path, worker_class):
    env = {"ANYJOB_SERVE_WORKER_CLASS": worker_class}
    with serving(tmp_path, code={"inference.py": COUNTING_MODEL}, workers=2, env=env) as srv:
        srv.wait_healthy()
        # An idle keep-alive connection must not hold the shutdown up.
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        conn.request("GET", "/ping")
        conn.getresponse().read()
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
        conn.close()
        assert "Shutting down: Master" in srv.log()


def test_it_stops_on_sigterm_while_a_model_is_still_loading(tmp_path):
    with serving(tmp_path, code={"inference.py": SLOW_LOAD}) as srv:
        assert srv.wait_ping(timeout=0.5).status == 503
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5


# Workers that take 0.3 s to install their signal handlers, forked back to back: a
# SIGTERM the master forwards in that window is lost unless it was held back.
SLOW_STARTING_WORKERS = """\
import sys, time
import gunicorn.arbiter, gunicorn.workers.base
from anyjob_container.__main__ import main

gunicorn.arbiter.random.random = lambda: 0.0
install = gunicorn.workers.base.Worker.init_signals
def slow_install(self):
    time.sleep(0.3)
    install(self)
gunicorn.workers.base.Worker.init_signals = slow_install
sys.exit(main(["serve"]))
"""


def test_it_stops_workers_that_were_still_starting(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text(COUNTING_MODEL)
    port = free_port()
    env = {
        "ANYJOB_BIND_HOST": "127.0.0.1",
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
    }
    proc = start([sys.executable, "-c", SLOW_STARTING_WORKERS], env=container_env(tmp_path, env))
    try:
        wait_for_port(port, proc=proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        stop(proc)


def test_it_stops_on_sigterm_while_installing_requirements(tmp_path):
    # A package index that accepts connections and never answers: pip hangs on it.
    with socket.create_server(("127.0.0.1", 0)) as index:
        index.settimeout(20)
        url = f"http://127.0.0.1:{index.getsockname()[1]}/simple"
        code = {"requirements.txt": f"--index-url {url}\nanyjob-never==1.0\n", "inference.py": ""}
        env = {"ANYJOB_PIP_TARGET": str(tmp_path / "site"), "PIP_FIND_LINKS": "", "PIP_RETRIES": "0"}
        with serving(tmp_path / "ml", code=code, env=env) as srv:
            connection, _ = index.accept()  # pip is waiting for the index now
            started = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            assert srv.proc.wait(timeout=10) == 0
            assert time.monotonic() - started < 3
            connection.close()


@pytest.mark.parametrize(
    ("worker_class", "logged"),
    [("sync", "WORKER TIMEOUT"), ("gthread", "(SAGEMAKER_MODEL_SERVER_TIMEOUT): replacing worker")],
)
def test_it_replaces_a_worker_whose_invocation_outlives_the_timeout(tmp_path, worker_class, logged):
    env = {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "1", "ANYJOB_SERVE_WORKER_CLASS": worker_class}
    with serving(tmp_path, code={"inference.py": COUNTING_MODEL}, env=env) as srv:
        srv.wait_healthy()
        first = srv.invoke('"pid"').json()
        started = time.monotonic()
        # sync: gunicorn answers 500 as it aborts the worker; gthread: the worker just goes.
        with contextlib.suppress(http.client.RemoteDisconnected, ConnectionError):
            assert srv.invoke('"sleep"').status == 500
        assert time.monotonic() - started < 5
        srv.wait_healthy()
        assert srv.invoke('"pid"').json() != first
        assert logged in srv.log()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SAGEMAKER_BIND_TO_PORT", "http", "SAGEMAKER_BIND_TO_PORT must be a whole number, not 'http'"),
        ("SAGEMAKER_BIND_TO_PORT", "70000", "SAGEMAKER_BIND_TO_PORT must be between 1 and 65535, not 70000"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "0", "SAGEMAKER_MODEL_SERVER_WORKERS must be between 1 and"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "two", "SAGEMAKER_MODEL_SERVER_WORKERS must be a whole number"),
        ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "1.5", "SAGEMAKER_MODEL_SERVER_TIMEOUT must be a whole number"),
        ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "-1", "SAGEMAKER_MODEL_SERVER_TIMEOUT must be between 1 and"),
        (
            "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT",
            "json",
            "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT must be a media",
        ),
        ("ANYJOB_BIND_HOST", "my host", "ANYJOB_BIND_HOST must be a host name or IP address"),
        ("ANYJOB_SERVE_WORKER_CLASS", "gevent", "ANYJOB_SERVE_WORKER_CLASS must be one of sync, gthread"),
    ],
)
def test_it_refuses_garbage_settings_with_one_line(tmp_path, name, value, message):
    result = run_container(tmp_path, "serve", {name: value}, timeout=20)
    assert result.returncode == 1
    assert result.stderr.startswith(f"anyjob: ConfigError: {message}")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
