"""WSGI entry point (gunicorn ``webapp.wsgi`` at team scale).

Once the application is loaded, ``settle()`` imports every view (the URLconf), collects what
start-up left behind and moves every object that remains to the collector's permanent
generation (``gc.freeze``). Django, its apps and botocore's service models are over 100,000
objects that live as long as the process; a full collection walked them all, about 80 ms on
these machines, landing on whichever request happened to cross the threshold (a history
page's p95 at 100,000 jobs doubled: ``bench/dashboard``). Frozen, they are never walked again,
and a full collection takes a few milliseconds.
"""

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
application = get_wsgi_application()


def settle() -> None:
    """What a server process does once it is ready, before its first request."""
    from django.urls import get_resolver

    from jobs import api_limits
    from jobs.awsapi import common

    get_resolver().url_patterns  # noqa: B018  (imports every view module)
    api_limits.preload()  # the forms' and the API's validation
    common.preload()  # the API's answers, cut to their shapes
    gc.collect()
    gc.freeze()


settle()
