"""``/settings/keys/``: the access-keys page (``pages``)."""

from django.urls import path

from jobs.awsapi import pages

urlpatterns = [
    path("", pages.keys, name="access_keys"),
    path("<int:pk>/revoke/", pages.revoke, name="revoke_access_key"),
]
