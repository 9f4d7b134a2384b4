from django.apps import AppConfig


class LocalSageMakerConfig(AppConfig):
    """The local backend keeps its jobs in tables of its own, apart from the dashboard's."""

    name = "jobs.backends.local"
    label = "local_sagemaker"
    verbose_name = "Local SageMaker emulator"
