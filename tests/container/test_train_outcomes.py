"""Success and failure files, exit codes, config errors and requirements."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from anyjob_container.train import FAILURE_REASON_LIMIT, shorten_middle
from tests.container.support import EXAMPLES, make_wheel, run_container, write_config


def run_script(
    tmp_path: Path, script: str, files: dict[str, str] | None = None, extra_env=None, channels=None
):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "train.py").write_text(script)
    for name, content in (files or {}).items():
        (src / name).write_text(content)
    base = tmp_path / "ml"
    write_config(base, {"sagemaker_program": "train.py", "sagemaker_submit_directory": str(src)}, channels)
    return base, run_container(base, extra_env=extra_env)


def test_success_writes_the_success_file(tmp_path: Path) -> None:
    base, result = run_script(tmp_path, "print('hello from the script')\n")
    assert result.returncode == 0
    assert (base / "output" / "success").exists()
    assert not (base / "output" / "failure").exists()
    assert "hello from the script" in result.stdout


def test_a_failing_script_exits_1_with_its_traceback_in_the_failure_file(tmp_path: Path) -> None:
    base, result = run_script(tmp_path, "import sys\nsys.exit(3)\n")
    assert result.returncode == 1
    text = (base / "output" / "failure").read_text()
    assert text.splitlines()[:2] == ["ExecuteUserScriptError:", "ExitCode 3"]
    assert 'Command "' in text and "train.py" in text
    assert not (base / "output" / "success").exists()


def test_the_failing_example_reaches_the_failure_file(tmp_path: Path) -> None:
    base = tmp_path / "ml"
    write_config(
        base,
        {"sagemaker_program": "train.py", "sagemaker_submit_directory": str(EXAMPLES / "failing")},
        {"train": {}},
    )
    result = run_container(base)
    assert result.returncode == 1
    short = (base / "output" / "failure").read_text()
    full = (base / "output" / "data" / "failure").read_text()
    assert short.startswith("ExecuteUserScriptError:\nExitCode 1\n")
    assert "Traceback (most recent call last):" in short
    assert (
        short.rstrip().splitlines()[-1].startswith("FileNotFoundError: [Errno 2] No such file or directory")
    )
    assert full == short, "a short error fits whole"
    assert "Traceback" in result.stderr, "stderr still streams to the job log"


def test_a_long_traceback_is_cut_from_the_middle(tmp_path: Path) -> None:
    script = (
        "import sys\nfor i in range(5000):\n    print(f'noise line {i}', file=sys.stderr)\n"
        "raise ValueError('the real cause')\n"
    )
    base, result = run_script(tmp_path, script)
    assert result.returncode == 1
    short = (base / "output" / "failure").read_text()
    full = (base / "output" / "data" / "failure").read_text()
    assert len("AlgorithmError: " + short) <= 1024
    assert short.startswith("ExecuteUserScriptError:\nExitCode 1\nCommand ")
    assert short.rstrip().endswith("ValueError: the real cause")
    assert "characters cut ...]" in short
    assert full.startswith("ExecuteUserScriptError:\nExitCode 1\nCommand ")
    assert full.rstrip().endswith("ValueError: the real cause")
    assert 60_000 < len(full) < 66_000, "the full text keeps the last 64 KiB of stderr"


def test_a_failure_file_the_script_wrote_is_kept(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "open(os.environ['SM_OUTPUT_DIR'] + '/failure', 'w').write('MyError: bad data in row 7')\n"
        "sys.exit(2)\n"
    )
    base, result = run_script(tmp_path, script)
    assert result.returncode == 1
    assert (base / "output" / "failure").read_text() == "MyError: bad data in row 7"
    assert (
        (base / "output" / "data" / "failure").read_text().startswith("ExecuteUserScriptError:\nExitCode 2")
    )


def test_stale_verdicts_from_an_earlier_run_are_removed(tmp_path: Path) -> None:
    (tmp_path / "ml" / "output").mkdir(parents=True)
    (tmp_path / "ml" / "output" / "failure").write_text("old")
    base, result = run_script(tmp_path, "pass\n")
    assert result.returncode == 0
    assert not (base / "output" / "failure").exists()


def test_killed_by_a_signal_names_the_signal(tmp_path: Path) -> None:
    base, result = run_script(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert result.returncode == 1
    assert "ExitCode -9 (killed by SIGKILL)" in (base / "output" / "failure").read_text()


@pytest.mark.parametrize("name", ["hyperparameters.json", "inputdataconfig.json", "resourceconfig.json"])
def test_malformed_config_json_is_a_config_error(tmp_path: Path, name: str) -> None:
    base = tmp_path / "ml"
    write_config(base, {"sagemaker_program": "train.py", "sagemaker_submit_directory": str(tmp_path)})
    (base / "input" / "config" / name).write_text("{not json")
    assert run_container(base).returncode == 1
    text = (base / "output" / "failure").read_text()
    assert text.startswith(f"ConfigError: {name} is not valid JSON (")
    assert "\n" not in text


def test_a_config_that_is_not_an_object_is_a_config_error(tmp_path: Path) -> None:
    base = tmp_path / "ml"
    write_config(base, {})
    (base / "input" / "config" / "hyperparameters.json").write_text("[1, 2]")
    assert run_container(base).returncode == 1
    assert (
        base / "output" / "failure"
    ).read_text() == "ConfigError: hyperparameters.json must hold a JSON object, not list"


def test_a_channel_without_its_directory_is_a_config_error(tmp_path: Path) -> None:
    base = tmp_path / "ml"
    write_config(
        base, {"sagemaker_program": "train.py", "sagemaker_submit_directory": str(tmp_path)}, {"train": {}}
    )
    shutil.rmtree(base / "input" / "data" / "train")
    assert run_container(base).returncode == 1
    assert (base / "output" / "failure").read_text() == (
        f"ConfigError: channel 'train' is listed in inputdataconfig.json but "
        f"{base}/input/data/train does not exist"
    )


def test_no_code_at_all_is_reported(tmp_path: Path) -> None:
    base = tmp_path / "ml"
    write_config(base, {"sagemaker_program": "train.py"})
    assert run_container(base).returncode == 1
    assert (base / "output" / "failure").read_text().startswith("CodeFetchError: no code")


def test_requirements_are_installed_before_the_script(tmp_path: Path) -> None:
    make_wheel(tmp_path / "src" / "wheels", "tinydep", "1.0", "VALUE = 42\n")
    target = tmp_path / "site"
    script = "import os, tinydep\nopen(os.environ['SM_MODEL_DIR'] + '/v', 'w').write(str(tinydep.VALUE))\n"
    requirements = "--no-index\n--find-links wheels\ntinydep==1.0\n"
    base, result = run_script(
        tmp_path, script, {"requirements.txt": requirements}, {"ANYJOB_PIP_TARGET": str(target)}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (base / "model" / "v").read_text() == "42"
    assert (target / "tinydep.py").exists()


def test_a_failed_requirements_install_fails_the_job(tmp_path: Path) -> None:
    requirements = "--no-index\nno-such-package-anyjob==9.9\n"
    base, result = run_script(
        tmp_path,
        "print('never')\n",
        {"requirements.txt": requirements},
        {"ANYJOB_PIP_TARGET": str(tmp_path / "t")},
    )
    assert result.returncode == 1
    text = (base / "output" / "failure").read_text()
    first = text.splitlines()[0]
    assert first.startswith(
        "InstallRequirementsError: pip install -r requirements.txt failed with exit code 1: ERROR:"
    )
    assert "no-such-package-anyjob" in first
    assert "never" not in result.stdout


def test_the_linear_example_trains_a_model(tmp_path: Path) -> None:
    base = tmp_path / "ml"
    write_config(
        base,
        {
            "sagemaker_program": "train.py",
            "sagemaker_submit_directory": str(EXAMPLES / "linear"),
            "epochs": "300",
        },
        {"train": {"ContentType": "text/csv"}},
    )
    shutil.copy(EXAMPLES / "linear" / "data" / "train.csv", base / "input" / "data" / "train")
    result = run_container(base)
    assert result.returncode == 0, result.stderr
    model = json.loads((base / "model" / "model.json").read_text())
    assert model["features"] == 2
    assert model["weights"] == [pytest.approx(3.0, abs=0.05), pytest.approx(-2.0, abs=0.05)]
    assert model["bias"] == pytest.approx(0.5, abs=0.1)
    assert "epoch=300 loss=" in result.stdout


def test_shorten_middle_keeps_short_texts_whole() -> None:
    assert shorten_middle("ExecuteUserScriptError:\nExitCode 1") == "ExecuteUserScriptError:\nExitCode 1"


def test_shorten_middle_counts_characters_not_bytes() -> None:
    text = "Header\nExitCode 1\nCommand x\n" + "é" * 5000 + "\nLastError: ünïcode"
    short = shorten_middle(text)
    assert len(short) <= FAILURE_REASON_LIMIT
    assert short.startswith("Header\nExitCode 1\nCommand x")
    assert short.endswith("LastError: ünïcode")
