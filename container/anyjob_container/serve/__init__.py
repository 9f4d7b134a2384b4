"""``serve``: the SageMaker hosting contract (spec section 2) for any inference module.

``main()`` reads the settings (a bad value: one line, exit 1), prepares the code in this
process (fetch, ``requirements.txt``), then runs gunicorn in-process on
``ANYJOB_BIND_HOST`` (default 0.0.0.0) : ``SAGEMAKER_BIND_TO_PORT`` (default 8080) with
``SAGEMAKER_MODEL_SERVER_WORKERS`` workers, each loading the model once. It returns 0
after SIGTERM.

Modules: ``settings`` (environment), ``prepare`` (code and requirements), ``server``
(gunicorn), ``app`` (the WSGI app and model loading), ``handlers`` (the user's module),
``codecs`` and ``npy`` (default formats), ``context`` (what handlers see of a request).
"""

from __future__ import annotations

import logging
import signal
import sys

from ..errors import ConfigError
from ..paths import Layout
from . import server
from .app import ServingApp
from .prepare import prepare
from .settings import Settings

LOG_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT)
    # Until gunicorn installs its own handlers, SIGTERM (docker stop) during the code fetch
    # or pip install ends us with 0 too (a pip child is killed on the way out).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"anyjob: {exc.failure_text()}", file=sys.stderr)
        return 1
    try:
        plan = prepare(settings, Layout.from_env())
    except SystemExit as exc:
        return 0 if exc.code in (None, 0) else 1
    watchdog = None if server.enforces_timeout(settings.worker_class) else settings.timeout
    return server.run(settings, lambda: ServingApp(plan, watchdog).start())
