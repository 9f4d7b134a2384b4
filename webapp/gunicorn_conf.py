"""gunicorn's settings for anyjob's web server: ``gunicorn -c python:webapp.gunicorn_conf webapp.wsgi``.

``make run`` and the image start it this way (``webapp.run``). Where it listens comes from the
same settings as everything else (``ANYJOB_BIND``, ``ANYJOB_PORT``); the number of worker
processes from the core count unless ``ANYJOB_WEB_WORKERS`` says otherwise.
"""

import os

from django.conf import settings

from webapp.env import env_number

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

_host = settings.ANYJOB_BIND
bind = f"[{_host}]:{settings.ANYJOB_PORT}" if ":" in _host else f"{_host}:{settings.ANYJOB_PORT}"
# The classic rule (2 × cores + 1) with a few threads each: a page waits mostly on the database.
workers = int(env_number("ANYJOB_WEB_WORKERS", 2 * (os.cpu_count() or 1) + 1, minimum=1))
worker_class = "gthread"
threads = int(env_number("ANYJOB_WEB_THREADS", 4, minimum=1))
# Load Django once in the master: a broken setting fails once, before any worker forks.
preload_app = True
timeout = 60
graceful_timeout = 10
keepalive = 5
# No control socket: it would be one path per user (~/.gunicorn), shared by every instance.
control_socket_disable = True
errorlog = "-"
_access = bool(os.environ.get("ANYJOB_ACCESS_LOG"))
accesslog = "-" if _access else None
# The launcher prefixes each line with "web"; no second timestamp format of gunicorn's own.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["console"] if _access else [], "level": "INFO", "propagate": False},
    },
}
