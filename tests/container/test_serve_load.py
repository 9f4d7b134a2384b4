"""Loading the model: /ping while it loads, and every way loading can fail."""

from __future__ import annotations

import time

import pytest

from tests.container.serving import serving

# Busy in Python bytecode (holding the GIL as real loading code does), not sleeping.
SLOW_MODEL = """\
import time


def model_fn(model_dir):
    end = time.monotonic() + 1.2
    while time.monotonic() < end:
        pass
    return "loaded"


def predict_fn(data, model):
    return model
"""


def test_it_answers_ping_at_once_while_a_slow_model_loads_then_200(tmp_path):
    with serving(tmp_path, code={"inference.py": SLOW_MODEL}) as srv:
        srv.wait_listening()
        started = time.monotonic()
        resp = srv.request("GET", "/ping")
        assert time.monotonic() - started < 0.5
        assert resp.status == 503
        assert resp.json() == {"error": "the model is still loading"}
        assert srv.invoke("[1]").status == 503

        srv.wait_healthy()
        assert srv.request("GET", "/ping").json() == {"status": "ready"}
        assert srv.request("HEAD", "/ping").status == 200
        assert srv.invoke("[1]").json() == "loaded"


# Each failure reaches /ping the same way; test_serve_module_rules.py covers the rest of
# the rules in process.
LOAD_FAILURES = {
    "missing package": (
        {"inference.py": "import not_installed_pkg_xyz\n"},
        {},
        "ImportModuleError: importing inference failed: ModuleNotFoundError: "
        "No module named 'not_installed_pkg_xyz'",
    ),
    "model_fn raises": (
        {"inference.py": "def model_fn(model_dir):\n    open(model_dir + '/missing.bin')\n"},
        {},
        "ModelLoadError: inference.model_fn failed: FileNotFoundError:",
    ),
    "transform_fn mixed": (
        {
            "inference.py": "def input_fn(b, c):\n    pass\n\ndef output_fn(p, a):\n    pass\n\n"
            "def transform_fn(m, b, c, a):\n    pass\n"
        },
        {},
        "ImportModuleError: inference defines transform_fn together with input_fn, output_fn: "
        "define transform_fn alone, or input_fn/predict_fn/output_fn without it",
    ),
    "program not found": (
        {"inference.py": ""},
        {"SAGEMAKER_PROGRAM": "serve_me.py"},
        "ImportModuleError: no module 'serve_me' in",
    ),
}


@pytest.mark.parametrize("case", LOAD_FAILURES)
def test_it_keeps_serving_and_reports_a_failed_load_on_ping(tmp_path, case):
    code, env, expected = LOAD_FAILURES[case]
    with serving(tmp_path, code=code, env=env) as srv:
        ping = srv.wait_ping()
        assert ping.status == 500, srv.log()
        message = ping.json()["error"]
        assert message.startswith(expected), message
        assert "\n" not in message

        invocation = srv.invoke("[1]")
        assert (invocation.status, invocation.body) == (500, ping.body)
        assert srv.proc.poll() is None
        assert srv.log().count("Booting worker") == 1  # no crash loop


def test_it_logs_the_traceback_of_a_failed_import(tmp_path):
    code = {"inference.py": "import helper\n", "helper.py": "raise RuntimeError('deep down')\n"}
    with serving(tmp_path, code=code) as srv:
        assert srv.wait_ping().json()["error"] == (
            "ImportModuleError: importing inference failed: RuntimeError: deep down"
        )
        log = srv.log()
        assert "Traceback (most recent call last)" in log
        assert 'helper.py", line 1' in log
