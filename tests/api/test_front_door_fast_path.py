"""``/aws`` past the browser's middleware (``jobs.awsapi.middleware``), seen from outside.

The requests go through Django's real WSGI handler (``WSGIHandler``, what gunicorn calls), not
the test client, which would leave the database connection open whatever the settings say. Each
is signed by botocore's own SigV4 signer. What is checked: an API answer carries the headers the
full stack gave it and nothing of a browser's session; a kept SQLite connection is reused by
the next API call, never by a page; and revoking a key, or deactivating its user, from another
connection is seen by the very next call on a kept connection (the row is read every time; only
the signing key derived from a secret is kept, by its ciphertext: a changed secret misses it).
"""

from __future__ import annotations

import io
import sqlite3
import threading
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from django.core.handlers.wsgi import WSGIHandler
from django.db import connections
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)
BODY = b"Action=GetCallerIdentity&Version=2011-06-15"


@pytest.fixture
def key(django_user_model) -> tuple[Any, str]:
    from jobs.awsapi.models import AccessKey

    user = django_user_model.objects.create_user("dora", password="explorer-password")
    return AccessKey.create_for(user, "tests")


def signed_environ(key_id: str, secret: str) -> dict[str, Any]:
    """A WSGI environ of STS GetCallerIdentity as botocore signs it."""
    request = AWSRequest(
        method="POST",
        url="http://testserver/aws",
        data=BODY,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV4Auth(Credentials(key_id, secret), "sts", "us-east-1").add_auth(request)
    environ = plain_environ("POST", "/aws", BODY)
    environ["CONTENT_TYPE"] = request.headers["Content-Type"]
    for name, value in request.headers.items():
        if name.lower() != "content-type":
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def plain_environ(method: str, path: str, body: bytes = b"") -> dict[str, Any]:
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "RAW_URI": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "HTTP_HOST": "testserver",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "CONTENT_LENGTH": str(len(body)),
    }


def serve(environ: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    started: list[Any] = []
    response = WSGIHandler()(environ, lambda status, headers, *_: started.append((status, headers)))
    try:
        body = b"".join(response)
    finally:
        response.close()  # request_finished: where Django closes (or keeps) the connection
    status, headers = started[0]
    return int(status.split()[0]), dict(headers), body


def test_an_api_answer_has_the_full_stacks_headers_and_no_session(key) -> None:
    status, headers, body = serve(signed_environ(key[0].access_key_id, key[1]))
    assert status == 200 and b"<Arn>arn:aws:iam::000000000000:user/dora</Arn>" in body
    assert headers["Content-Length"] == str(len(body))
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"  # SecurityMiddleware still runs
    assert "Set-Cookie" not in headers and "Vary" not in headers
    status, headers, body = serve(plain_environ("GET", "/aws/some-bucket/a-key"))  # unsigned
    assert status == 403 and b"<Code>AccessDenied</Code>" in body
    assert headers["Content-Length"] == str(len(body)) and headers["X-Frame-Options"] == "DENY"
    # A path that only starts like the API's is a page: signed in or sent to sign in.
    status, headers, _ = serve(plain_environ("GET", "/awsx"))
    assert status in (302, 404)


def test_an_api_call_keeps_its_sqlite_connection_and_a_page_never_reuses_it(key) -> None:
    conn = connections["default"]
    if conn.vendor != "sqlite":
        pytest.skip("PostgreSQL connections follow CONN_MAX_AGE as before")
    conn.close()
    assert serve(signed_environ(key[0].access_key_id, key[1]))[0] == 200
    kept = conn.connection
    assert kept is not None  # without the API's keep, CONN_MAX_AGE=0 would have closed it
    assert serve(signed_environ(key[0].access_key_id, key[1]))[0] == 200
    assert conn.connection is kept  # the next API call reused it
    serve(plain_environ("GET", "/accounts/login/"))
    assert conn.connection is None  # the page closed it first and its own at its end
    with pytest.raises(sqlite3.ProgrammingError):
        kept.execute("SELECT 1")


def _elsewhere(change) -> None:
    """``change()`` on another thread, so on another database connection."""
    thread = threading.Thread(target=lambda: (change(), connections.close_all()))
    thread.start()
    thread.join()


def test_a_key_revoked_elsewhere_is_refused_at_the_next_call_on_a_kept_connection(key) -> None:
    from jobs.awsapi.models import AccessKey

    access_key, secret = key
    assert serve(signed_environ(access_key.access_key_id, secret))[0] == 200
    _elsewhere(lambda: AccessKey.objects.filter(pk=access_key.pk).update(revoked_at=timezone.now()))
    status, _, body = serve(signed_environ(access_key.access_key_id, secret))
    assert (status, b"<Code>InvalidClientTokenId</Code>" in body) == (403, True)


def test_a_user_deactivated_elsewhere_is_refused_at_the_next_call(key, django_user_model) -> None:
    access_key, secret = key
    assert serve(signed_environ(access_key.access_key_id, secret))[0] == 200
    _elsewhere(lambda: django_user_model.objects.filter(pk=access_key.user_id).update(is_active=False))
    status, _, body = serve(signed_environ(access_key.access_key_id, secret))
    assert (status, b"<Code>InvalidClientTokenId</Code>" in body) == (403, True)


def test_a_secret_changed_elsewhere_refuses_the_old_one_at_the_next_call(key) -> None:
    """The derived signing key a process keeps (``AccessKey.signing_key``) is the old secret's:
    once the row holds a new secret, a request signed with the old one is refused, and the new
    one is accepted, though the old derived key is still in the process."""
    from jobs.awsapi.models import AccessKey, new_secret

    access_key, old = key
    assert serve(signed_environ(access_key.access_key_id, old))[0] == 200
    new = new_secret()

    def rotate() -> None:
        row = AccessKey.objects.get(pk=access_key.pk)
        row.set_secret(new)
        row.save(update_fields=["encrypted_secret"])

    _elsewhere(rotate)
    status, _, body = serve(signed_environ(access_key.access_key_id, old))
    assert (status, b"<Code>SignatureDoesNotMatch</Code>" in body) == (403, True)
    assert serve(signed_environ(access_key.access_key_id, new))[0] == 200
