"""Signing in as a team: password rules, throttled failures (django-axes), invitations by link."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail

pytestmark = pytest.mark.django_db
User = get_user_model()


def sign_in(client, username: str, password: str, address: str = "10.0.0.1"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def test_a_good_password_signs_in(client, alice) -> None:
    response = sign_in(client, "alice", "wonderland")
    assert response.status_code == 302
    assert response["Location"] == "/jobs/"


def test_failures_for_one_user_lock_that_user_out_and_say_when_to_try_again(client, alice, settings) -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = sign_in(client, "alice", "wrong")
        assert response.status_code == 200
        assert "didn't match" in response.content.decode()
    response = sign_in(client, "alice", "wrong")  # the fifth: locked from now on
    assert response.status_code == 429
    # Even the right password, even from elsewhere, until the cool-off is over.
    response = sign_in(client, "alice", "wonderland", address="10.9.9.9")
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many failed sign-ins for this account or from this address: try again in 15 minutes." in page
    assert "_auth_user_id" not in client.session


def test_failures_from_one_address_lock_that_address_out(client, alice, bob, settings) -> None:
    for n in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, f"someone-{n}", "guess", address="10.6.6.6")
    assert sign_in(client, "bob", "builder", address="10.6.6.6").status_code == 429
    # Another address is not concerned.
    assert sign_in(client, "bob", "builder", address="10.7.7.7").status_code == 302


def test_a_success_resets_the_count(client, alice, settings) -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(client, "alice", "wrong")
    assert sign_in(client, "alice", "wonderland").status_code == 302
    client.logout()
    assert sign_in(client, "alice", "wrong").status_code == 200


def test_behind_the_proxy_the_address_is_the_one_the_proxy_added(alice, settings) -> None:
    from django.test import RequestFactory

    from webapp.signin import client_ip

    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    assert client_ip(request) == "10.0.0.2"  # no public URL: no proxy to believe
    settings.PUBLIC_URL = ("https", "anyjob.example.com", "https://anyjob.example.com")
    assert client_ip(request) == "203.0.113.9"  # what the client wrote itself comes first


# --- invitations ---------------------------------------------------------------------------------


@pytest.fixture
def admin_user_client(client):
    admin = User.objects.create_superuser("root", password="rooted-deeply-42")
    client.force_login(admin)
    return client


def invite(client, **data) -> str:
    response = client.post("/accounts/invite/", {"username": "dora", **data})
    assert response.status_code == 200, response.content.decode()
    return re.search(r'<pre id="invite-link">([^<]+)</pre>', response.content.decode()).group(1)


def test_an_invitation_link_sets_a_password_once(admin_user_client, client_factory=None) -> None:
    from django.test import Client

    link = invite(admin_user_client)
    dora = User.objects.get(username="dora")
    assert not dora.has_usable_password()
    path = link.removeprefix("http://testserver")

    guest = Client()
    response = guest.get(path)
    assert response.status_code == 302  # the token moves into the session, out of the URL
    form_url = response["Location"]
    page = guest.get(form_url).content.decode()
    assert "Welcome, dora" in page
    # Django's password validators apply.
    response = guest.post(form_url, {"new_password1": "password", "new_password2": "password"})
    page = response.content.decode()
    assert "This password is too short" in page
    assert "This password is too common" in page
    response = guest.post(
        form_url, {"new_password1": "a-fine-long-phrase", "new_password2": "a-fine-long-phrase"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/jobs/"
    assert guest.get("/jobs/").status_code == 200  # signed in

    # Used once: the link no longer works, for anyone.
    again = Client().get(path, follow=True)
    assert "This link does not work any more" in again.content.decode()
    dora.refresh_from_db()
    assert dora.check_password("a-fine-long-phrase")


def test_an_invitation_is_mailed_when_a_mail_server_is_set(admin_user_client, settings) -> None:
    settings.EMAIL_HOST = "mail.example.com"
    link = invite(admin_user_client, email="dora@example.com")
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["dora@example.com"]
    assert link in mail.outbox[0].body


def test_only_who_may_add_users_invites(client, alice) -> None:
    client.force_login(alice)
    response = client.get("/accounts/invite/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert "Invite" not in client.get("/jobs/").content.decode().split("<main>")[0]


def test_an_existing_name_is_refused(admin_user_client, alice) -> None:
    response = admin_user_client.post("/accounts/invite/", {"username": "Alice"})
    assert "There is already an account with this name." in response.content.decode()
