"""The Celery app: settings are Django's ``CELERY_*``, tasks each app's ``tasks.py``."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("anyjob")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
