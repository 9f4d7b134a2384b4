"""What the SageMaker API tests share: real boto3 clients against the real server
(the ``api`` fixture: pytest-django's ``live_server`` with the ``/aws`` front door), each signed
with an access key made for the test's user, and code bundles uploaded to the artifact store as
the SDK uploads them.

The fixtures are imported by the test modules that use them.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from jobs import storage

REGION = "us-east-1"
ROLE = "arn:aws:iam::000000000000:role/anyjob-local"
IMAGE_ENV_ROOT = Path(
    os.environ.get("ANYJOB_IMAGE_ENV_ROOT")
    or Path(__file__).resolve().parents[2] / "var" / "test-cache" / "image"
)
#: The waiters poll every second (their default is every 30 or 120 s).
FAST_WAITER = {"Delay": 1, "MaxAttempts": 90}


@pytest.fixture(scope="session")
def image_env() -> Path:
    """The local backend's image environment (built once, kept across runs)."""
    from jobs.backends.local import image

    return image.ensure_image_env(IMAGE_ENV_ROOT)


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing leaves the machine: any proxy a client would use is a closed loopback port, and
    loopback itself is reached directly."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture(name="client_for")
def client_for_fixture(api, no_proxy, image_env) -> Callable[..., Any]:
    """``client_for(user, service="sagemaker")``: an unmodified boto3 client of the ``api``
    fixture's server (``tests/api/conftest.py``), signed with a new access key of ``user``."""
    from jobs.awsapi.models import AccessKey

    keys: dict[int, tuple[str, str]] = {api.user.pk: (api.key_id, api.secret)}

    def make(user: Any, service: str = "sagemaker") -> Any:
        if user.pk not in keys:
            key, secret = AccessKey.create_for(user, "tests")
            keys[user.pk] = (key.access_key_id, secret)
        key_id, secret = keys[user.pk]
        return api.client(service, key_id=key_id, secret=secret, read_timeout=90)

    return make


def upload_code(name: str, files: dict[str, str]) -> str:
    """A ``sourcedir.tar.gz`` of ``files`` in the artifact store, where SDK v2 puts it
    (``<bucket>/<job>/source/sourcedir.tar.gz``); its URI."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    uri = f"{settings.ANYJOB_ARTIFACT_STORE.rstrip('/')}/sdk/{name}/source/sourcedir.tar.gz"
    storage.put_bytes(raw.getvalue(), uri)
    return uri


def training_request(name: str, code_uri: str, program: str = "train.py", **extra: Any) -> dict[str, Any]:
    """A ``CreateTrainingJob`` request as SDK v2's ``Estimator.fit`` sends it (JSON-encoded
    hyperparameters, the ``sagemaker_*`` ones naming the code, the debugger's configs)."""
    store = settings.ANYJOB_ARTIFACT_STORE.rstrip("/")
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310",
            "TrainingInputMode": "File",
        },
        "RoleArn": ROLE,
        "HyperParameters": {
            "sagemaker_program": f'"{program}"',
            "sagemaker_submit_directory": f'"{code_uri}"',
            "sagemaker_region": f'"{REGION}"',
            "sagemaker_container_log_level": "20",
            **extra.pop("HyperParameters", {}),
        },
        "OutputDataConfig": {"S3OutputPath": f"{store}/sdk-output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "DebugHookConfig": {
            "S3OutputPath": "s3://sagemaker-us-east-1-000000000000/",
            "CollectionConfigurations": [],
        },
        "ProfilerConfig": {
            "S3OutputPath": "s3://sagemaker-us-east-1-000000000000/",
            "DisableProfiler": False,
        },
        **extra,
    }


def wait_status(sm: Any, name: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        described = sm.describe_training_job(TrainingJobName=name)
        if described["TrainingJobStatus"] in statuses:
            return described
        assert time.monotonic() < deadline, f"{name} still {described['TrainingJobStatus']}"
        time.sleep(0.1)


def error_of(call: Callable[[], Any]) -> dict[str, Any]:
    """The parsed error of a client call that must fail."""
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as caught:
        call()
    return caught.value.response
