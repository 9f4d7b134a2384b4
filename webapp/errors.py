"""Error pages that say what went wrong where Django's default would not."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views import defaults

from jobs.endpoints.models import MAX_BODY_BYTES


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """``handler400``: a request too large to read names the limits; anything else as Django."""
    if isinstance(exception, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 2**20
        message = (
            f"The form sent is larger than {limit} MiB, the most anyjob reads, so it could not be "
            f"kept. An invocation body is at most SageMaker's 6 MiB ({MAX_BODY_BYTES:,} bytes): go "
            "back and send a smaller one (a file is checked against the same limit)."
        )
        return render(request, "jobs/error.html", {"message": message}, status=413)
    return defaults.bad_request(request, exception)
