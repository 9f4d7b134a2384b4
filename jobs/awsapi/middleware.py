"""``/aws`` past the dashboard's middleware: a signed API request goes straight to ``views.api``.

The dashboard's middleware (whitenoise, sessions, CSRF, auth, messages, htmx, django-axes) is for
pages a browser signs in to; none of it applies to a request authenticated by its SigV4
signature: the view is CSRF-exempt, never reads a session or ``request.user`` and answers its
own errors. Running it all anyway cost about a third of a millisecond per call, and the URL
resolver another slice. So this middleware, right after ``SecurityMiddleware`` (whose SSL
redirect and security headers still apply to ``/aws``), answers ``/aws`` and ``/aws/…`` itself
and hands every other path on untouched. Of what the skipped middleware would have added to an
API answer it keeps the two headers they set on every response: ``Content-Length``
(``CommonMiddleware``: it lets gunicorn keep the connection alive without chunking) and
``X-Frame-Options: DENY`` (``XFrameOptionsMiddleware``). The answers are otherwise byte for byte
what the full stack gave (``tests/api/test_front_door.py`` checks the headers).

The database connection. With SQLite and ``CONN_MAX_AGE=0`` (the default there) every request
opened the file, ran its ``PRAGMA``s and closed it again: about a millisecond, more than the
describe itself. A SQLite connection is a file handle, not a server process, so an API request
keeps its thread's connection for ``KEEP_SQLITE_SECONDS`` (Django's persistent connections:
reused only while usable, in autocommit, with no error). A page request on a thread that kept
one closes it first, so the dashboard's paths still get a fresh connection each, as before.
PostgreSQL's connections keep whatever ``CONN_MAX_AGE`` says (60 s by default in
``webapp.settings``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, HttpResponse

from jobs.awsapi import views

#: Every ``/aws`` answer, to a browser: no script, no plugin, no same-origin access, no loads.
API_CSP = "sandbox; default-src 'none'"
#: How long an API request's SQLite connection stays open for the thread's next request.
KEEP_SQLITE_SECONDS = 60
_KEPT = "_anyjob_kept_for_api"


def is_api_path(path_info: str) -> bool:
    """The paths ``jobs.awsapi.urls`` serves (``path("aws", include(...))``)."""
    return path_info == views.PREFIX or path_info.startswith(views.PREFIX + "/")


class ApiFrontDoorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if not is_api_path(path):
            _close_kept_connection()
            return self.get_response(request)
        rest = path[len(views.PREFIX) + 1 :] if path != views.PREFIX else None
        response = views.api(request, rest)
        if not response.streaming and not response.has_header("Content-Length"):
            response.headers["Content-Length"] = str(len(response.content))
        response.headers.setdefault("X-Frame-Options", getattr(settings, "X_FRAME_OPTIONS", "DENY").upper())
        # An S3 object is served with the Content-Type its uploader chose, from the dashboard's
        # own origin (on AWS it is another origin): a teammate's text/html object opened from a
        # presigned link must not run script as whoever opens it. A sandboxed document has an
        # origin of its own and runs nothing; API clients ignore the header.
        response.headers["Content-Security-Policy"] = API_CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        _keep_connection()
        return response


def _keep_connection() -> None:
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.vendor != "sqlite" or conn.connection is None or conn.settings_dict.get("CONN_MAX_AGE") != 0:
        return
    conn.close_at = time.monotonic() + KEEP_SQLITE_SECONDS
    setattr(conn, _KEPT, True)


def _close_kept_connection() -> None:
    conn = connections[DEFAULT_DB_ALIAS]
    if getattr(conn, _KEPT, False):
        setattr(conn, _KEPT, False)
        conn.close()
