"""Endpoints serving a job's model, the invocation tests kept for them, and every invocation.

Saved tests belong to the *job* (its model), not to one endpoint: a new deploy of the same
model gets the same suite, which runs by itself once the endpoint is ``InService``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

#: SageMaker's runtime limits (contract §3).
MAX_BODY_BYTES = 6_291_456
MAX_HEADER_CHARS = 1024
#: Response bodies are kept up to this size (the rest is cut, and said so).
MAX_STORED_RESPONSE = 1024 * 1024
#: A saved test's name.
MAX_TEST_NAME_CHARS = 100
#: Saved tests a model keeps: its suite runs them all after each deploy, one task each.
MAX_SAVED_TESTS = 50


class Endpoint(models.Model):
    """An endpoint as deployed from a job. Transitions (update-where on the current status):

    Pending → Creating → InService | Failed; Pending|Creating → DeployFailed (refused, with
    ``error``); any but Deleted → Deleting → Deleted. Failed, DeployFailed, Deleted are final.
    """

    class Status(models.TextChoices):
        PENDING = "Pending"
        CREATING = "Creating"
        IN_SERVICE = "InService"
        FAILED = "Failed"
        DEPLOY_FAILED = "DeployFailed"
        DELETING = "Deleting"
        DELETED = "Deleted"

    FINAL = (Status.FAILED, Status.DEPLOY_FAILED, Status.DELETED)
    #: Statuses the backend knows about: the poller follows these.
    FOLLOWED = (Status.CREATING, Status.IN_SERVICE, Status.DELETING)

    name = models.CharField(max_length=63, unique=True)
    job = models.ForeignKey("jobs.TrainingJob", on_delete=models.PROTECT, related_name="endpoints")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="endpoints")
    inference_entry_point = models.CharField(max_length=255)
    instance_type = models.CharField(max_length=64)
    instance_count = models.PositiveIntegerField(default=1)
    environment = models.JSONField(default=dict, blank=True)
    #: Keys of ``environment`` whose values are secret: sent, never shown (``jobs.redact``).
    secret_environment = models.JSONField(default=list, blank=True)
    ttl_minutes = models.PositiveIntegerField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    #: The three requests as sent (CreateModel, CreateEndpointConfig, CreateEndpoint).
    requests = models.JSONField(default=dict, blank=True)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    failure_reason = models.TextField(blank=True)
    error = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    in_service_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    last_invoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # Unique regardless of case, as SageMaker's endpoint names are.
        constraints = [models.UniqueConstraint(Lower("name"), name="endpoints_endpoint_name_any_case")]
        indexes = [models.Index(fields=["status", "created_at"]), models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    @property
    def live(self) -> bool:
        return self.status not in self.FINAL


class SavedTest(models.Model):
    """An invocation kept with a name and an expectation, re-run alone or as the job's suite.

    Names are unique per job regardless of case (as AWS names are): saving under a name in use
    updates the test only for the user who saved it; anyone else is refused.
    """

    class Expect(models.TextChoices):
        NONE = "none", "any answer"
        STATUS = "status", "status code is"
        JSON = "json", "JSON value at path equals"
        REGEX = "regex", "body matches regex"

    job = models.ForeignKey("jobs.TrainingJob", on_delete=models.CASCADE, related_name="saved_tests")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    name = models.CharField(max_length=MAX_TEST_NAME_CHARS)
    body = models.BinaryField()
    content_type = models.CharField(max_length=256, default="application/json")
    accept = models.CharField(max_length=256, blank=True)
    custom_attributes = models.CharField(max_length=1024, blank=True)
    expect = models.CharField(max_length=8, choices=Expect.choices, default=Expect.STATUS)
    expected_status = models.PositiveIntegerField(default=200)
    json_path = models.CharField(max_length=200, blank=True)
    expected_value = models.TextField(blank=True)
    tolerance = models.FloatField(null=True, blank=True)
    pattern = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint("job", Lower("name"), name="saved_test_name_per_job_any_case")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Invocation(models.Model):
    """One request sent to an endpoint, and what came back."""

    class Status(models.TextChoices):
        PENDING = "Pending"
        DONE = "Done"
        ERROR = "Error"

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="invocations")
    test = models.ForeignKey(SavedTest, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    body = models.BinaryField()
    content_type = models.CharField(max_length=256)
    accept = models.CharField(max_length=256, blank=True)
    custom_attributes = models.CharField(max_length=1024, blank=True)

    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    response_headers = models.JSONField(default=dict, blank=True)
    response_body = models.BinaryField(default=b"", blank=True)
    response_truncated = models.BooleanField(default=False)
    latency_ms = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    passed = models.BooleanField(null=True, blank=True)
    verdict = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    #: The suite run this invocation is one test of (None: sent alone).
    suite = models.ForeignKey(
        "SuiteRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )

    class Meta:
        indexes = [models.Index(fields=["endpoint", "-created_at"])]

    @property
    def done(self) -> bool:
        return self.status != self.Status.PENDING


class SuiteRun(models.Model):
    """One run of the job's saved tests against an endpoint (``tasks.run_suite``): each test is
    an invocation of its own (``runs``), sent side by side; ``suite_result`` stores the counts
    once the last one has ended. ``finished_at`` is None while the suite runs."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="suite_runs")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    started_at = models.DateTimeField(default=timezone.now)
    tests = models.PositiveIntegerField(default=0)
    passed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    #: Tests that never ended (their task was lost or broke): counted when the suite closes.
    unfinished = models.PositiveIntegerField(default=0)
    #: When the last test ended (or the suite was closed without running any).
    finished_at = models.DateTimeField(null=True, blank=True)
    #: Why fewer tests ran than the model has, or none at all.
    note = models.CharField(max_length=500, blank=True)

    class Meta:
        indexes = [models.Index(fields=["endpoint", "-started_at"])]

    @property
    def done(self) -> bool:
        return self.finished_at is not None
