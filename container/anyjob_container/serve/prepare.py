"""Before the workers start: find the code, fetch it if it is remote, install its requirements.

This runs once, in the master, so the workers start with everything in place and
``/ping`` cannot answer 200 before ``requirements.txt`` is installed. A failure here does
not stop the server: it becomes the answer of every ``/ping`` (500), which is how
SageMaker learns why the endpoint cannot come up.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from ..code import fetch_code, local_path
from ..errors import CodeFetchError, InstallRequirementsError
from ..paths import Layout
from ..requirements import install_requirements, pip_target, python_path_env
from .app import Plan
from .settings import Settings

log = logging.getLogger(__name__)


def locate_code(settings: Settings, layout: Layout) -> Path:
    """The directory holding the handlers' module, fetched into ``code/`` when remote.

    ``SAGEMAKER_SUBMIT_DIRECTORY``: a local directory, as a path or ``file://`` URI (such as
    ``/opt/ml/model/code``, code repacked into ``model.tar.gz``), is used in place;
    ``s3://`` or an archive is fetched into ``code/``. Unset: ``model/code`` if it exists, else
    ``code/``. Raises ``CodeFetchError``.
    """
    source = settings.submit_directory
    if not source:
        candidate = layout.model_dir / "code"
        return candidate if candidate.is_dir() else layout.code_dir
    if not source.startswith("s3://") and local_path(source).is_dir():
        return local_path(source)
    fetch_code(source, layout.code_dir, region=settings.region or None)
    return layout.code_dir


def prepare(settings: Settings, layout: Layout) -> Plan:
    """Get the code ready and make it importable; failures are recorded in the plan."""
    plan = Plan(
        code_dir=layout.code_dir,
        program=settings.program,
        model_dir=layout.model_dir,
        default_accept=settings.default_accept,
    )
    try:
        code_dir = locate_code(settings, layout)
        plan = replace(plan, code_dir=code_dir)
        install_requirements(code_dir, dict(os.environ))
    except (CodeFetchError, InstallRequirementsError) as exc:
        log.error("%s", exc.failure_text())
        return replace(plan, error=exc)
    # The module and its siblings first, then what requirements.txt installed.
    target = pip_target()
    for path in (target, str(code_dir)):
        if path and path not in sys.path:
            sys.path.insert(0, path)
    os.environ.update(python_path_env(dict(os.environ)))  # for subprocesses the handlers start
    return plan
