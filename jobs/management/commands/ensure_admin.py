"""``manage.py ensure_admin``: the first account, so a fresh install can be signed in to.

Creates the superuser ``admin`` when the database has no user at all (an existing user is
never touched). The password is ``ANYJOB_ADMIN_PASSWORD`` if set, else a random one that is
written to ``var/admin-password.txt`` (mode 0600) and shown once.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction


class Command(BaseCommand):
    help = "Create the superuser 'admin' if there is no user yet, and say how to sign in."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000/admin/", help="the sign-in address to show"
        )

    def handle(self, *args, url: str, **options) -> None:
        user_model = get_user_model()
        from_env = os.environ.get("ANYJOB_ADMIN_PASSWORD", "")
        password = from_env or secrets.token_urlsafe(12)
        with transaction.atomic():
            if user_model.objects.exists():
                return
            user_model.objects.create_superuser("admin", email="", password=password)
        if from_env:
            self.stdout.write(f"Sign in at {url} as admin with the password in ANYJOB_ADMIN_PASSWORD.")
            return
        path = _write_private(Path(settings.VAR_DIR) / "admin-password.txt", password + "\n")
        self.stdout.write(
            f"Sign in at {url} as admin / {password} (also in {_shown(path)}). Add teammates in the admin."
        )


def _write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (0600 from the start)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # the file may have existed with a wider mode
        f.write(text)
    return path


def _shown(path: Path) -> str:
    """``var/admin-password.txt`` inside the project, the full path elsewhere."""
    try:
        return str(path.relative_to(settings.BASE_DIR))
    except ValueError:
        return str(path)
