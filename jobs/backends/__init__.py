"""Where jobs run: a registry of backends, chosen once from ``settings.ANYJOB_BACKEND``.

In the manner of healthchecks' transports: each backend is one class, looked up by the
value in settings; callers ask ``get_backend()`` and never branch on which it is.
"""

from __future__ import annotations

import functools
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the package stays light: Django imports it to load the local app
    from jobs.backends.base import Backend

BACKENDS = {
    "local": "jobs.backends.local.backend.LocalBackend",
    "sagemaker": "jobs.backends.sagemaker.SageMakerBackend",
}


def backend_class(name: str) -> type[Backend]:
    # Django is imported here, not above: a local job's process imports this package before
    # it sets Django up, and must not wait for it.
    from django.core.exceptions import ImproperlyConfigured

    try:
        path = BACKENDS[name]
    except KeyError:
        raise ImproperlyConfigured(
            f"ANYJOB_BACKEND={name!r} is not a backend: use one of {', '.join(sorted(BACKENDS))}"
        ) from None
    module, cls = path.rsplit(".", 1)
    return getattr(import_module(module), cls)


@functools.cache
def get_backend() -> Backend:
    from django.conf import settings

    return backend_class(settings.ANYJOB_BACKEND)()
