import stat
from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command
from django.test import RequestFactory

pytestmark = pytest.mark.django_db
# (django-axes counts sign-ins per request: authenticate() is given one.)


def run() -> str:
    out = StringIO()
    call_command("ensure_admin", url="http://127.0.0.1:8000/admin/", stdout=out)
    return out.getvalue()


def test_it_creates_admin_with_a_private_random_password(monkeypatch):
    monkeypatch.delenv("ANYJOB_ADMIN_PASSWORD", raising=False)
    out = run()
    path = settings.VAR_DIR / "admin-password.txt"
    password = path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"Sign in at http://127.0.0.1:8000/admin/ as admin / {password} " in out
    user = authenticate(RequestFactory().post("/accounts/login/"), username="admin", password=password)
    assert user is not None and user.is_superuser


def test_it_never_touches_existing_users(monkeypatch):
    monkeypatch.delenv("ANYJOB_ADMIN_PASSWORD", raising=False)
    get_user_model().objects.create_user("alice", password="wonderland")
    assert run() == ""
    assert not get_user_model().objects.filter(username="admin").exists()


def test_it_takes_the_password_from_the_environment(monkeypatch):
    monkeypatch.setenv("ANYJOB_ADMIN_PASSWORD", "chosen-by-me")
    out = run()
    assert "chosen-by-me" not in out
    assert (
        authenticate(RequestFactory().post("/accounts/login/"), username="admin", password="chosen-by-me")
        is not None
    )
