"""``/aws`` and everything under it: one view (``views.api``) for every service and protocol.

Mounted as ``path("aws", include(...))``: botocore asks for ``/aws`` itself (an endpoint URL's
path without a trailing slash) for JSON and query calls, and ``/aws/<bucket>/<key>`` for S3.
"""

from django.urls import re_path

from jobs.awsapi import views

urlpatterns = [re_path(r"^(?:/(?P<rest>.*))?$", views.api, name="aws_api")]
