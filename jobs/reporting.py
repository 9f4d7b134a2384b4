"""What Django's error reports (the debug page, error e-mails) may show of the settings."""

from __future__ import annotations

import re

from django.views.debug import SafeExceptionReporterFilter


class SafeSettingsFilter(SafeExceptionReporterFilter):
    """Django's own filter, also hiding ``ANYJOB_LOCAL_ROLES`` (role ARNs → keys), whose name
    matches none of Django's patterns for secrets."""

    hidden_settings = re.compile("API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|ROLES", flags=re.I)
