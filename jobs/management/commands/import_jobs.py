"""``manage.py import_jobs --user NAME [--since YYYY-MM-DD]``: the account's jobs into the history."""

from __future__ import annotations

from datetime import UTC, datetime

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Import the account's training jobs (also those started outside anyjob) into the history."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--user", required=True, help="who owns the jobs imported for the first time")
        parser.add_argument("--since", help="only jobs created on or after this date (YYYY-MM-DD)")

    def handle(self, *args, user: str, since: str | None, **options) -> None:
        from jobs.importer import import_jobs

        try:
            owner = get_user_model().objects.get(username=user)
        except get_user_model().DoesNotExist:
            raise CommandError(f"there is no user {user!r}") from None
        after = None
        if since:
            try:
                after = datetime.strptime(since, "%Y-%m-%d").replace(tzinfo=UTC)
            except ValueError:
                raise CommandError(f"--since {since!r} is not a date like 2026-01-31") from None
        self.stdout.write(str(import_jobs(owner, since=after)))
