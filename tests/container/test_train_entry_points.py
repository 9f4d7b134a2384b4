"""Entry point types and names (toolkit rules, with names that could escape refused)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.container.support import run_container, write_config

RECORD = (
    "import os, sys\nopen(os.path.join(os.environ['SM_MODEL_DIR'], 'argv'), 'w').write(repr(sys.argv[1:]))\n"
)


def run_program(tmp_path: Path, files: dict[str, str], program: str, hps: dict | None = None):
    src = tmp_path / "src"
    for name, content in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(content)
    base = tmp_path / "ml"
    write_config(base, {"sagemaker_program": program, "sagemaker_submit_directory": str(src), **(hps or {})})
    return base, run_container(base)


def test_a_python_script_runs_with_python(tmp_path: Path) -> None:
    base, result = run_program(tmp_path, {"sub/train.py": RECORD}, "sub/train.py", {"lr": "0.1"})
    assert result.returncode == 0, result.stderr
    assert (base / "model" / "argv").read_text() == "['--lr', '0.1']"


def test_a_shell_script_runs_with_sh_and_quoted_arguments(tmp_path: Path) -> None:
    script = '#!/bin/sh\nprintf "%s|" "$@" > "$SM_MODEL_DIR/argv"\n'
    base, result = run_program(tmp_path, {"run.sh": script}, "run.sh", {"msg": '"two words; rm -rf /"'})
    assert result.returncode == 0, result.stderr
    assert (base / "model" / "argv").read_text() == "--msg|two words; rm -rf /|"
    assert "/bin/sh -c './run.sh --msg '\"'\"'two words; rm -rf /'\"'\"''" in result.stdout


def test_a_module_with_setup_py_runs_with_python_m(tmp_path: Path) -> None:
    record = (
        "import sys\n"
        + RECORD
        + "open(__import__('os').environ['SM_MODEL_DIR'] + '/name', 'w').write(__name__)\n"
    )
    files = {
        "setup.py": "from setuptools import setup\nsetup(name='x')\n",
        "trainer/__init__.py": "",
        "trainer/task.py": record,
    }
    base, result = run_program(tmp_path, files, "trainer/task.py", {"e": "1"})
    assert result.returncode == 0, result.stderr
    assert (base / "model" / "name").read_text() == "__main__"
    assert (base / "model" / "argv").read_text() == "['-e', '1']"
    assert " -m trainer.task -e 1" in result.stdout


def test_any_other_file_is_made_executable_and_run(tmp_path: Path) -> None:
    script = '#!/bin/sh\necho "$@" > "$SM_MODEL_DIR/argv"\n'
    base, result = run_program(tmp_path, {"train": script}, "train", {"x": "1"})
    assert result.returncode == 0, result.stderr
    assert (base / "model" / "argv").read_text() == "-x 1\n"


@pytest.mark.parametrize(
    "name", ["../train.py", "/etc/passwd", "-c", "a b.py", "x;rm.py", "sub/../../t.py", "$(id).py", ""]
)
def test_it_refuses_forbidden_entry_points(tmp_path: Path, name: str) -> None:
    base, result = run_program(tmp_path, {"train.py": RECORD}, name)
    assert result.returncode == 1
    text = (base / "output" / "failure").read_text()
    assert text.startswith("InvalidEntryPointError: ")
    assert "\n" not in text


def test_it_reports_a_missing_entry_point(tmp_path: Path) -> None:
    base, result = run_program(tmp_path, {"train.py": RECORD}, "trian.py")
    assert result.returncode == 1
    assert (base / "output" / "failure").read_text() == (
        "InvalidEntryPointError: entry point 'trian.py' does not exist in the code"
    )
