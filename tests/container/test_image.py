"""The image's entry point: `docker run IMAGE train|serve` reaches `python -m anyjob_container`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib

from tests.container.support import CONTAINER_SRC, container_env


def dockerfile() -> str:
    return (CONTAINER_SRC / "Dockerfile").read_text()


def test_the_entrypoint_is_exec_form_and_dispatches_on_the_first_argument() -> None:
    lines = [line for line in dockerfile().splitlines() if line.startswith("ENTRYPOINT")]
    assert len(lines) == 1
    assert json.loads(lines[0].removeprefix("ENTRYPOINT")) == ["python", "-m", "anyjob_container"]
    assert "CMD" not in dockerfile(), "SageMaker supplies the argument (train or serve)"


def test_the_base_image_is_a_pinned_slim_python_311() -> None:
    base = re.search(r"^FROM (\S+)", dockerfile(), re.M).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base)


def test_the_image_installs_the_pinned_requirements_and_the_package() -> None:
    requirements = (CONTAINER_SRC / "requirements.txt").read_text()
    pins = [line for line in requirements.splitlines() if line and not line.startswith("#")]
    assert pins and all("==" in pin for pin in pins)
    packages = tomllib.loads((CONTAINER_SRC / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert "anyjob_container" in packages and "anyjob_container.serve" in packages


def test_the_build_context_leaves_out_everything_but_the_package() -> None:
    ignore = (CONTAINER_SRC / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*")] == "*" and "!anyjob_container/" in ignore


def test_an_unknown_mode_prints_usage(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "anyjob_container", "fit"],
        env=container_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "usage: python -m anyjob_container {train|serve}" in result.stderr
