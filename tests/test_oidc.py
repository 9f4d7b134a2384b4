"""Single sign-on end to end, against a small OpenID Connect provider on loopback.

The test client plays the browser: anyjob's /oidc/authenticate/ sends it to the provider,
which sends it back to /oidc/callback/ with a code; anyjob trades the code for tokens over
real HTTP, checks the ID token's signature (the provider's JWKS) and nonce, reads the user
info, and signs the person in.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model

from tests.oidc_provider import oidc_provider

pytestmark = pytest.mark.django_db
User = get_user_model()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def at_provider(url: str) -> str:
    """The browser at the provider: where it is sent back to (the 302's Location)."""
    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(url, timeout=10)
    except urllib.error.HTTPError as exc:
        assert exc.code == 302, exc.read()
        return exc.headers["Location"]
    raise AssertionError("the provider did not redirect")


@pytest.fixture
def provider(settings):
    claims = {"sub": "u-1", "email": "dora@example.com", "email_verified": True, "preferred_username": "dora"}
    with oidc_provider(claims) as provider:
        for name, value in provider.settings().items():
            setattr(settings, name, value)
        settings.AUTHENTICATION_BACKENDS = [
            *settings.AUTHENTICATION_BACKENDS,
            "webapp.signin.TeamOIDCBackend",
        ]
        yield provider


def sign_in_with_sso(client, next_path: str = "/jobs/"):
    page = client.get("/accounts/login/?next=" + next_path).content.decode()
    assert 'id="sso"' in page and "Sign in with single sign-on" in page
    response = client.get("/oidc/authenticate/?next=" + next_path)
    assert response.status_code == 302
    back = at_provider(response["Location"])
    parts = urlsplit(back)
    assert parts.path == "/oidc/callback/"
    return client.get(parts.path + "?" + parts.query)


def test_a_new_teammate_signs_in_with_sso(client, provider) -> None:
    response = sign_in_with_sso(client)
    assert response.status_code == 302
    assert response["Location"] == "/jobs/"
    dora = User.objects.get(username="dora")
    assert dora.email == "dora@example.com"
    assert not dora.has_usable_password()
    assert client.get("/jobs/").status_code == 200
    assert provider.requests == ["/authorize", "/token", "/jwks", "/userinfo"]


def test_an_existing_account_is_found_by_its_email(client, provider, alice) -> None:
    alice.email = "Dora@Example.com"
    alice.save()
    assert sign_in_with_sso(client).status_code == 302
    assert int(client.session["_auth_user_id"]) == alice.pk
    assert not User.objects.filter(username="dora").exists()


def test_a_forged_state_is_refused(client, provider) -> None:
    response = client.get("/oidc/authenticate/")
    back = at_provider(response["Location"])
    query = parse_qs(urlsplit(back).query)
    response = client.get("/oidc/callback/", {"code": query["code"][0], "state": "forged"})
    assert "_auth_user_id" not in client.session
    assert response.status_code in {302, 400}


def test_an_unverified_email_does_not_sign_in(client, provider) -> None:
    provider.claims["email_verified"] = False
    response = sign_in_with_sso(client)
    assert response.status_code == 302
    assert response["Location"] != "/jobs/"
    assert "_auth_user_id" not in client.session


def test_without_a_client_id_there_is_no_sso(client) -> None:
    assert 'id="sso"' not in client.get("/accounts/login/").content.decode()
    assert client.get("/oidc/authenticate/").status_code == 404
