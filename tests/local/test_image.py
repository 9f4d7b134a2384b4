"""The image environment: built once however many processes ask, never seen half-built.

These build real virtualenvs from a tiny requirements file (~6 s each: ``ensurepip``
dominates); the full one, with ``container/requirements.txt``, is the session fixture.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobs.backends.local import image
from tests.local.conftest import REPO

pytestmark = pytest.mark.slow

BUILD = """
import logging, sys
from pathlib import Path
from jobs.backends.local import image
logging.basicConfig(level=logging.INFO, format="%(message)s")
print(image.ensure_image_env(Path(sys.argv[1]), requirements=Path(sys.argv[2])))
"""


def test_concurrent_callers_build_it_once_and_all_get_a_working_environment(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# nothing beyond the container package itself\n")
    root = tmp_path / "image envs"
    callers = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD, str(root), str(requirements)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    answers = [caller.communicate(timeout=120) for caller in callers]
    assert all(caller.returncode == 0 for caller in callers), answers
    pythons = {out.strip() for out, _ in answers}
    assert len(pythons) == 1
    assert sum("built the image environment" in err for _, err in answers) == 1
    python = Path(pythons.pop())
    env = python.parent.parent
    assert env.parent == root.resolve() and env.name.startswith("image-env-")
    assert (env / image.READY).is_file()
    assert [p.name for p in root.iterdir() if p.is_dir()] == [env.name], "no temporary folders left"
    # Moved into place after the build: the scripts pip wrote still find their python.
    pip = subprocess.run([env / "bin" / "pip", "--version"], capture_output=True, text=True, check=True)
    assert str(env) in pip.stdout
    check = subprocess.run(
        [
            python,
            "-c",
            "import anyjob_container, sys; print(anyjob_container.__file__, sys.prefix, sep='\\n')",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert check.stdout.splitlines() == [
        str(REPO / "container" / "anyjob_container" / "__init__.py"),
        str(env),
    ]
    # A second call is a lookup.
    assert image.ensure_image_env(root, requirements=requirements) == python


def test_a_failing_pip_is_reported_and_leaves_nothing_behind(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("--no-index\nanyjob-no-such-package==1.0\n")
    root = tmp_path / "envs"
    with pytest.raises(image.ImageEnvError) as failure:
        image.ensure_image_env(root, requirements=requirements)
    message = str(failure.value)
    assert message.startswith(
        "could not build the image environment: pip install -r requirements.txt failed with exit code 1: "
    )
    assert "anyjob-no-such-package" in message
    assert "anyjob-no-such-package" in failure.value.details
    assert [p for p in root.iterdir() if p.is_dir()] == []
