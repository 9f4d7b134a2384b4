"""Template filters of the job pages."""

from __future__ import annotations

from datetime import timedelta

from django import template

register = template.Library()


@register.filter
def seconds(value: timedelta | int | float | None) -> str:
    """A duration for people: ``0.7 s``, ``42 s``, ``3 min 05 s``, ``2 h 03 min``, ``3 d 4 h``."""
    if value is None or value == "":
        return ""
    total = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if total < 10:
        return f"{total:.1f} s"
    whole = round(total)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


@register.filter
def failure_cause(reason: str) -> tuple[str, str]:
    """``(cause line, the rest)`` of a ``FailureReason`` (``jobs.detail.failure_cause``)."""
    from jobs.detail import failure_cause as split

    return split(reason or "")
