"""Template context for every page."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


def sandbox_banner(request: HttpRequest) -> dict[str, Any]:
    """``sandbox_off``: the local backend runs jobs unsandboxed (``ANYJOB_SANDBOX=off``), which
    ``base.html`` says on every page."""
    from jobs.checks import sandbox_off

    return {"sandbox_off": sandbox_off()}
