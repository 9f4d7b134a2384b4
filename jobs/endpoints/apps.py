from django.apps import AppConfig


class EndpointsConfig(AppConfig):
    name = "jobs.endpoints"
    label = "endpoints"
    verbose_name = "Endpoints"

    def ready(self) -> None:
        from jobs.endpoints import tasks  # noqa: F401 - registers the Celery tasks
