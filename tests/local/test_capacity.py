"""The machine's capacity: at most ANYJOB_LOCAL_MAX_INSTANCES training jobs and endpoints at
once, refused past it as AWS refuses a request past a quota, and instance types the emulator
cannot size refused up front."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from django.db import connection
from django.utils.timezone import now

from jobs.backends.local import capacity, launch
from jobs.backends.local.backend import LocalBackend
from jobs.backends.local.models import LocalEndpoint, LocalTrainingJob, Status
from tests.local.jobs import SCRIPTS, training_request, unique, wait_for, wait_for_log

pytestmark = pytest.mark.django_db(transaction=True)

ROLE = "arn:aws:iam::000000000000:role/anyjob-local"


def limit_message(instance_type: str, usage: str, limit: int, current: int) -> str:
    return (
        f"The account-level service limit '{instance_type} for {usage} usage' is {limit} Instances, "
        f"with current utilization of {current} Instances and a request delta of 1 Instances. "
        "Please contact AWS support to request an increase for this limit. (anyjob: "
        f"ANYJOB_LOCAL_MAX_INSTANCES={limit} is how many training jobs and endpoints this machine "
        "runs at once; wait for one to end, or ask the administrator to raise it.)"
    )


def refusal(call) -> tuple[str, str]:
    with pytest.raises(ClientError) as excinfo:
        call()
    error = excinfo.value.response["Error"]
    return error["Code"], error["Message"]


@pytest.fixture
def launched(monkeypatch) -> list[str]:
    """Records the processes the backend would start, and starts none: these tests are about
    admission, and a row stays InProgress (or Creating) until the test moves it."""
    started: list[str] = []
    monkeypatch.setattr(launch, "launch_executor", lambda job: started.append(job.name))
    monkeypatch.setattr(launch, "launch_endpoint_host", lambda endpoint: started.append(endpoint.name))
    return started


@pytest.fixture
def backend() -> LocalBackend:
    return LocalBackend()


@pytest.fixture
def code(tmp_path: Path) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    for name, text in SCRIPTS.items():
        (folder / name).write_text(text)
    return folder


def job(backend: LocalBackend, code: Path, tmp_path: Path, instance_type: str = "ml.m5.large") -> str:
    name = unique("cap")
    request = training_request(name, code, "sleep_forever.py", tmp_path / "out")
    request["ResourceConfig"]["InstanceType"] = instance_type
    backend.create_training_job(request)
    return name


def endpoint(backend: LocalBackend, instance_type: str = "ml.m5.large") -> str:
    name = unique("cap")
    backend.create_model(
        {"ModelName": name, "ExecutionRoleArn": ROLE, "PrimaryContainer": {"Image": "anyjob/generic:latest"}}
    )
    variant = {"VariantName": "AllTraffic", "ModelName": name, "InstanceType": instance_type}
    backend.create_endpoint_config({"EndpointConfigName": name, "ProductionVariants": [variant]})
    backend.create_endpoint({"EndpointName": name, "EndpointConfigName": name})
    return name


def test_the_job_past_the_limit_is_refused_in_aws_words_until_one_ends(
    backend, code, tmp_path, launched, settings
) -> None:
    settings.ANYJOB_LOCAL_MAX_INSTANCES = 2
    first, second = job(backend, code, tmp_path), job(backend, code, tmp_path)
    assert capacity.in_use() == 2
    assert refusal(lambda: job(backend, code, tmp_path, "ml.c5.xlarge")) == (
        "ResourceLimitExceeded",
        limit_message("ml.c5.xlarge", "training job", 2, 2),
    )
    assert LocalTrainingJob.objects.count() == 2 and launched == [first, second]  # nothing kept, nothing run
    # A stopping job still holds its instance, as on AWS.
    backend.stop_training_job(first)
    assert refusal(lambda: job(backend, code, tmp_path))[0] == "ResourceLimitExceeded"
    # Once it has ended, the next one is accepted.
    LocalTrainingJob.objects.filter(name=first).update(status=Status.STOPPED)
    third = job(backend, code, tmp_path)
    assert launched == [first, second, third]


def test_jobs_and_endpoints_share_the_machine(backend, code, tmp_path, launched, settings) -> None:
    settings.ANYJOB_LOCAL_MAX_INSTANCES = 2
    job(backend, code, tmp_path)
    serving = endpoint(backend)
    code_, message = refusal(lambda: endpoint(backend, "ml.g5.xlarge"))
    assert (code_, message) == ("ResourceLimitExceeded", limit_message("ml.g5.xlarge", "endpoint", 2, 2))
    assert refusal(lambda: job(backend, code, tmp_path))[0] == "ResourceLimitExceeded"
    assert LocalEndpoint.objects.count() == 1
    # Deleting an endpoint gives its instance back.
    backend.delete_endpoint(serving)
    endpoint(backend)
    assert capacity.in_use() == 2


def test_a_taken_name_is_refused_as_taken_even_at_the_limit(
    backend, code, tmp_path, launched, settings
) -> None:
    # A retried submission finds its job ("ResourceInUse" means "already submitted").
    settings.ANYJOB_LOCAL_MAX_INSTANCES = 1
    name = job(backend, code, tmp_path)
    request = training_request(name, code, "sleep_forever.py", tmp_path / "out")
    assert refusal(lambda: backend.create_training_job(request))[0] == "ResourceInUse"


def test_a_job_whose_process_died_gives_its_instance_back(
    backend, code, tmp_path, launched, settings
) -> None:
    settings.ANYJOB_LOCAL_MAX_INSTANCES = 1
    settings.ANYJOB_LOCAL_HEARTBEAT_TIMEOUT = 1
    dead = job(backend, code, tmp_path)
    LocalTrainingJob.objects.filter(name=dead).update(creation_time=now() - timedelta(seconds=5))
    job(backend, code, tmp_path)  # the dead one (no process ever claimed it) is failed first
    assert LocalTrainingJob.objects.get(name=dead).status == Status.FAILED


def test_two_creates_at_once_never_both_pass(
    backend, code, tmp_path, launched, settings, monkeypatch
) -> None:
    settings.ANYJOB_LOCAL_MAX_INSTANCES = 1
    counted = capacity.in_use

    def slow_count() -> int:  # widen the window between counting and committing
        used = counted()
        time.sleep(0.3)
        return used

    monkeypatch.setattr(capacity, "in_use", slow_count)
    results: list[str] = []

    def create() -> None:
        try:
            results.append(job(backend, code, tmp_path))
        except ClientError as exc:
            results.append(exc.response["Error"]["Code"])
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(r == "ResourceLimitExceeded" for r in results) == [False, True], results
    assert LocalTrainingJob.objects.count() == 1


def test_an_instance_type_the_emulator_cannot_size_is_refused(backend, code, tmp_path, launched) -> None:
    code_, message = refusal(lambda: job(backend, code, tmp_path, "ml.p5e.48xlarge"))
    assert code_ == "ValidationException" and "'ml.p5e.48xlarge'" in message
    code_, message = refusal(lambda: endpoint(backend, "ml.c6g.large"))
    assert code_ == "ValidationException" and "'ml.c6g.large'" in message
    assert not LocalTrainingJob.objects.exists() and not LocalEndpoint.objects.exists() and not launched


@pytest.mark.slow
def test_a_real_job_holds_its_instance_until_it_is_stopped(image_python, code, tmp_path, settings) -> None:
    settings.ANYJOB_LOCAL_MAX_INSTANCES = 1
    backend = LocalBackend()
    first = job(backend, code, tmp_path)
    wait_for_log(backend, first, "sleeping")
    assert refusal(lambda: job(backend, code, tmp_path))[0] == "ResourceLimitExceeded"
    backend.stop_training_job(first)
    assert wait_for(backend, first)["TrainingJobStatus"] == "Stopped"
    second = job(backend, code, tmp_path)
    backend.stop_training_job(second)
    wait_for(backend, second)
