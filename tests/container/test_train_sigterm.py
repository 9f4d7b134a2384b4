"""Stop: SIGTERM reaches the user's process group, which gets the grace period, then SIGKILL."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.container.support import EXAMPLES, container_env, write_config
from tests.servers import alive, wait_for_file


def start_training(
    base: Path, src: Path, hps=None, extra_env=None, data: Path | None = None
) -> subprocess.Popen:
    write_config(
        base,
        {"sagemaker_program": "train.py", "sagemaker_submit_directory": str(src), **(hps or {})},
        {"train": {}},
    )
    if data:
        shutil.copy(data, base / "input" / "data" / "train")
    return subprocess.Popen(
        [sys.executable, "-m", "anyjob_container", "train"],
        env=container_env(base, extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


GRACEFUL = """
import os, signal, sys, time
model = os.environ["SM_MODEL_DIR"]
def on_term(signum, frame):
    open(os.path.join(model, "saved-on-stop"), "w").write("checkpoint")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
open(os.path.join(model, "started"), "w").close()
while True:
    time.sleep(0.05)
"""


def test_sigterm_reaches_the_script_which_can_save_its_model(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(GRACEFUL)
    base = tmp_path / "ml"
    proc = start_training(base, src)
    wait_for_file(base / "model" / "started")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert (base / "model" / "saved-on-stop").read_text() == "checkpoint"
    assert proc.returncode == 0
    assert "SIGTERM received; forwarding it to the user process group" in err


def test_a_script_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(
        "import os, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open(os.environ['SM_MODEL_DIR'] + '/started', 'w').close()\ntime.sleep(600)\n"
    )
    base = tmp_path / "ml"
    proc = start_training(base, src, extra_env={"ANYJOB_STOP_GRACE_SECONDS": "1"})
    wait_for_file(base / "model" / "started")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert 0.9 < time.monotonic() - started < 10
    assert proc.returncode == 1
    assert "ExitCode -9 (killed by SIGKILL)" in (base / "output" / "failure").read_text()


def test_children_that_ignore_sigterm_die_with_the_job(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen(['sh', '-c', 'trap \"\" TERM; sleep 600'])\n"
        "open(os.environ['SM_MODEL_DIR'] + '/child', 'w').write(str(child.pid))\n"
        "time.sleep(600)\n"
    )
    base = tmp_path / "ml"
    proc = start_training(base, src, extra_env={"ANYJOB_STOP_GRACE_SECONDS": "1"})
    wait_for_file(base / "model" / "child")
    time.sleep(0.1)
    child_pid = int((base / "model" / "child").read_text())
    assert alive(child_pid)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    deadline = time.monotonic() + 5
    while alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child_pid)


def test_the_linear_example_saves_its_model_when_stopped(tmp_path: Path) -> None:
    base = tmp_path / "ml"
    data = EXAMPLES / "linear" / "data" / "train.csv"
    proc = start_training(base, EXAMPLES / "linear", hps={"epochs": "100000000"}, data=data)
    for line in proc.stdout:
        if line.startswith("epoch=5 "):
            break
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "SIGTERM received: saving the model trained so far" in out
    assert json.loads((base / "model" / "model.json").read_text())["features"] == 2
