"""Celery tasks: short, JSON arguments, acked early (see the Celery block in settings)."""

from celery import shared_task


@shared_task
def ping() -> str:
    """Answer ``"pong"``: proves a worker consumes from the broker (tests, health checks)."""
    return "pong"
