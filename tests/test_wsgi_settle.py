"""The web server's process settles before its first request (``webapp.wsgi.settle``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import gc, json
import webapp.wsgi
frozen = gc.get_freeze_count()
walked = len(gc.get_objects())  # what a full collection walks (the frozen ones are not)
import sys
print(json.dumps({"frozen": frozen, "walked": walked,
                  "views": "jobs.views" in sys.modules and "jobs.awsapi.views" in sys.modules}))
"""


def test_importing_the_wsgi_module_freezes_what_start_up_made(tmp_path) -> None:
    """The views are imported and the objects start-up made (over 100,000: Django, the apps,
    botocore's service models) are out of the collector's reach: a full collection afterwards
    walks a few of them (~80 ms on these machines when it walked them all). Checked in a
    process of its own, as gunicorn's worker imports the module."""
    import json

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "ANYJOB_VAR_DIR": str(tmp_path),
        "DJANGO_SECRET_KEY": "settle-test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    env.pop("ANYJOB_TEST_DB", None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["views"]
    assert found["frozen"] > 100_000, found
    assert found["walked"] < found["frozen"] / 10, found
