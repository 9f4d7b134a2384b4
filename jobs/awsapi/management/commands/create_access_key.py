"""``python manage.py create_access_key USERNAME``: a new access key, as four ``export`` lines.

``eval "$(python manage.py create_access_key alice)"`` sets ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_DEFAULT_REGION``, and boto3, the
AWS CLI and the SageMaker SDK then talk to anyjob as that user.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from jobs.awsapi.models import AccessKey, KeyLimitReached
from jobs.awsapi.pages import export_lines


class Command(BaseCommand):
    help = "Create an API access key for a user and print the export lines that use it."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--description", default="created with manage.py create_access_key")

    def handle(self, *args, username: str, description: str, **options) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"There is no user named {username!r}.")
        if not user.is_active:
            raise CommandError(f"The user {username!r} is not active.")
        try:
            key, secret = AccessKey.create_for(user, description)
        except KeyLimitReached as e:
            raise CommandError(str(e)) from None
        self.stdout.write("\n".join(export_lines(key.access_key_id, secret)))
