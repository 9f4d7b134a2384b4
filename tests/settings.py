"""Settings for the test run: the project's own, with everything under one temporary folder.

``ANYJOB_VAR_DIR`` is set in the environment (if not already), so the job processes the
tests start see the same folder, the same SQLite database and the same artifact store.
"""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("ANYJOB_VAR_DIR", tempfile.mkdtemp(prefix="anyjob-test-var-"))
# Building the image environment takes a while: keep it across test runs.
os.environ.setdefault(
    "ANYJOB_IMAGE_ENV_ROOT", str(Path(__file__).resolve().parent.parent / "var" / "test-cache" / "image")
)
os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-not-secret")
os.environ.setdefault("ANYJOB_LOCAL_HEARTBEAT_SECONDS", "0.2")
# Tests keep channels and outputs in tmp_path folders.
os.environ.setdefault(
    "ANYJOB_LOCAL_FILE_ROOTS",
    f"{tempfile.gettempdir()},{Path(__file__).resolve().parent.parent / 'container' / 'examples'}",
)
os.environ.setdefault("ANYJOB_LOCAL_STOP_GRACE_SECONDS", "5")
# Tests run several jobs and endpoints at once (the capacity tests set their own limit).
os.environ.setdefault("ANYJOB_LOCAL_MAX_INSTANCES", "16")

from webapp.settings import *  # noqa: F403
from webapp.settings import DATABASES, VAR_DIR

if os.environ.get("ANYJOB_TEST_DB") == "postgres":
    # A real PostgreSQL server the tests start (tests/postgres.py); the test database has a
    # fixed name, so job processes (other processes, same settings) reach it too.
    from tests.postgres import USER, server_for_the_run

    DATABASES["default"] = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": server_for_the_run(),
        "USER": USER,
        "NAME": "anyjob_test",
        "TEST": {"NAME": "anyjob_test"},
        "CONN_MAX_AGE": 0,
    }
else:
    # The test database is a file, so job processes (other processes) share it with the tests.
    DATABASES["default"]["NAME"] = str(VAR_DIR / "test.sqlite3")
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# whitenoise looks in STATIC_ROOT too (make run creates it; the test client does not).
Path(STATIC_ROOT).mkdir(parents=True, exist_ok=True)  # noqa: F405
