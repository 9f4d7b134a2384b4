"""The API app: access keys (``models``) and the operations every service module registers."""

from __future__ import annotations

import importlib
import logging

from django.apps import AppConfig

log = logging.getLogger("anyjob.awsapi")

#: The modules whose ``@operation`` handlers make up the API. Each is imported once, when
#: Django starts; one that is missing (not written yet) or broken is logged, not fatal, so the
#: rest of the API keeps working.
OPERATION_MODULES = (
    "jobs.awsapi.identity_ops",
    "jobs.awsapi.logs_ops",
    "jobs.awsapi.sagemaker_ops",
    "jobs.awsapi.runtime_ops",
)


class AwsApiConfig(AppConfig):
    name = "jobs.awsapi"
    label = "awsapi"
    verbose_name = "SageMaker-compatible API"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        load_operations()


def load_operations() -> None:
    for name in OPERATION_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                log.exception("The API module %s could not be imported", name)
        except Exception:
            log.exception("The API module %s could not be imported", name)
