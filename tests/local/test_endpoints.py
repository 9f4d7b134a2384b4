"""Local endpoints end to end: a trained model served by the container's ``serve`` in the
sandbox, through the backend interface, with the service's answers and errors."""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from jobs import storage
from jobs.backends.local import runtime
from jobs.backends.local.backend import LocalBackend
from jobs.backends.local.launch import endpoint_root
from jobs.backends.local.models import LocalEndpoint
from tests.local.jobs import linear_example, training_request, unique, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROLE = "arn:aws:iam::000000000000:role/anyjob-local"

#: Handlers that misbehave on demand: the body is a word, the answer is the word in capitals.
MISCHIEF = """\
import time


class Teapot(Exception):
    status_code = 418


def model_fn(model_dir):
    return "model"


def input_fn(body, content_type, context):
    context.response_custom_attributes = "echo=" + (context.custom_attributes or "")
    return body.decode()


def predict_fn(data, model):
    if data == "raise":
        raise ValueError("this input is not welcome")
    if data == "teapot":
        raise Teapot("short and stout")
    if data.startswith("sleep "):
        time.sleep(float(data.split()[1]))
    if data == "huge":
        return "x" * (7 * 1024 * 1024)  # past the 6 MB SageMaker's runtime returns
    return data.upper()


def output_fn(prediction, accept):
    return prediction.encode(), "text/plain"
"""

BROKEN = """\
def model_fn(model_dir):
    raise RuntimeError("the weights are corrupt")
"""

SLOW = """\
import time


def model_fn(model_dir):
    time.sleep(60)
"""


def sourcedir(folder: Path, files: dict[str, str | Path]) -> str:
    """A ``sourcedir.tar.gz`` as the dashboard stores it; returns its file:// URI."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "sourcedir.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, content in files.items():
            data = content.read_bytes() if isinstance(content, Path) else content.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive.as_uri()


@pytest.fixture(scope="module")
def trained(image_python, tmp_path_factory, django_db_setup, django_db_blocker) -> dict[str, Any]:
    """The linear example trained once through the backend, and its code bundle."""
    code, data = linear_example()
    folder = tmp_path_factory.mktemp("linear")
    name = unique("linear")
    with django_db_blocker.unblock():
        backend = LocalBackend()
        backend.create_training_job(
            training_request(
                name,
                code,
                "train.py",
                folder / "artifacts",
                channels={"train": data.as_uri()},
                hyperparameters={"epochs": "50"},
            )
        )
        job = wait_for(backend, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    model_uri = job["ModelArtifacts"]["S3ModelArtifacts"]
    return {
        "model_data": model_uri,
        "model": json.loads(storage.read_tar_member(model_uri, "model.json", 1 << 20)),
        "code": sourcedir(folder / "code", {"inference.py": code / "inference.py"}),
    }


def deploy(
    backend: LocalBackend,
    name: str,
    environment: dict[str, str],
    model_data: str | None = None,
) -> None:
    """CreateModel, CreateEndpointConfig and CreateEndpoint, all named ``name``."""
    container: dict[str, Any] = {"Image": "anyjob/generic:latest", "Environment": environment}
    if model_data:
        container["ModelDataUrl"] = model_data
    backend.create_model({"ModelName": name, "ExecutionRoleArn": ROLE, "PrimaryContainer": container})
    backend.create_endpoint_config(
        {
            "EndpointConfigName": name,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": name,
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                }
            ],
        }
    )
    arn = backend.create_endpoint({"EndpointName": name, "EndpointConfigName": name})["EndpointArn"]
    assert arn == f"arn:aws:sagemaker:us-east-1:000000000000:endpoint/{name.lower()}"


def wait_for_endpoint(backend: LocalBackend, name: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        described = backend.describe_endpoint(name)
        if described["EndpointStatus"] != "Creating":
            return described
        assert time.monotonic() < deadline, f"{name} still Creating"
        time.sleep(0.05)


def wait_until_gone(backend: LocalBackend, name: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            described = backend.describe_endpoint(name)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ValidationException"
            return
        assert described["EndpointStatus"] == "Deleting"
        assert time.monotonic() < deadline, f"{name} still Deleting"
        time.sleep(0.05)


def wait_for_endpoint_log(backend: LocalBackend, name: str, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in e["message"] for e in backend.get_endpoint_logs(name)["events"]):
        assert time.monotonic() < deadline, f"{text!r} never appeared in the log of {name}"
        time.sleep(0.1)


def processes(name: str) -> tuple[int, int]:
    """(host pid, model server pid) of the endpoint."""
    return processes_of(LocalEndpoint.objects.get(key=name.lower()))


def processes_of(row: LocalEndpoint) -> tuple[int, int]:
    return int(row.host.rsplit(":", 1)[1]), row.server_pid


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_dead(*pids: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if alive(p)]}"
        time.sleep(0.05)


def error(excinfo: pytest.ExceptionInfo) -> tuple[str, str, dict[str, Any]]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["Error"]["Message"], response


def test_an_endpoint_serves_the_trained_model(backend, trained, tmp_path, monkeypatch) -> None:
    name = unique("linear")
    started = time.monotonic()
    deploy(
        backend,
        name,
        {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": trained["code"]},
        trained["model_data"],
    )
    assert backend.describe_endpoint(name)["EndpointStatus"] == "Creating"
    described = wait_for_endpoint(backend, name)
    took = time.monotonic() - started
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    print(f"\nInService after {took:.2f} s")
    [variant] = described["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic" and variant["CurrentInstanceCount"] == 1
    assert described["EndpointConfigName"] == name and "FailureReason" not in described

    # Predictions, as the model computes them.
    weights, bias = trained["model"]["weights"], trained["model"]["bias"]
    expected = [sum(w * x for w, x in zip(weights, row, strict=True)) + bias for row in ([1, 2], [3, 4])]
    answer = backend.invoke_endpoint(name, b"[[1, 2], [3, 4]]", content_type="application/json")
    assert answer["ContentType"] == "application/json"
    assert answer["InvokedProductionVariant"] == "AllTraffic"
    assert json.loads(answer["Body"]) == pytest.approx(expected)
    answer = backend.invoke_endpoint(name, b"1,2\n3,4\n", content_type="text/csv", accept="text/csv")
    assert answer["ContentType"].startswith("text/csv")
    assert [float(x) for x in answer["Body"].decode().split()] == pytest.approx(expected)

    # The model's own refusal (400) is the container's answer, wrapped as SageMaker does.
    with pytest.raises(ClientError) as excinfo:
        backend.invoke_endpoint(name, b'[["a", "b"]]')
    code, message, response = error(excinfo)
    assert code == "ModelError" and response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 400
    assert "row 0 holds something that is not a number" in response["OriginalMessage"]
    assert message.startswith('Received client error (400) from primary with message "{')
    assert response["LogStreamArn"].endswith(f":log-group:/aws/sagemaker/Endpoints/{name}")

    # Refused before sending: the server is never contacted.
    def no_server(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the request reached the server")

    monkeypatch.setattr(runtime.connections, "get", no_server)
    with pytest.raises(ClientError) as excinfo:
        backend.invoke_endpoint(name, b"x" * (6 * 1024 * 1024 + 1))
    code, message, response = error(excinfo)
    assert (code, response["ResponseMetadata"]["HTTPStatusCode"]) == ("ValidationError", 400)
    assert "Member must have length less than or equal to 6291456" in message
    with pytest.raises(ClientError) as excinfo:
        backend.invoke_endpoint(name, b"[[1, 2]]", custom_attributes="a" * 1025)
    code, message, _ = error(excinfo)
    assert code == "ValidationError" and "customAttributes" in message
    with pytest.raises(ClientError) as excinfo:
        backend.invoke_endpoint(name + "-nope", b"[[1, 2]]")
    assert error(excinfo)[:2] == (
        "ValidationError",
        f"Endpoint {name}-nope of account 000000000000 not found.",
    )
    monkeypatch.undo()

    # The log: the host's remarks and the server's own lines, in one stream per instance.
    events = backend.get_endpoint_logs(name)["events"]
    messages = [e["message"] for e in events]
    assert any("unpacked into /opt/ml/model" in m for m in messages)
    assert any("Listening at: unix:/run/anyjob/model.sock" in m for m in messages)
    assert all(e["logStreamName"].startswith("AllTraffic/i-") for e in events)

    # Names are unique regardless of case, with AWS's messages.
    with pytest.raises(ClientError) as excinfo:
        deploy(backend, name.upper(), {})
    assert error(excinfo)[:2] == (
        "ValidationException",
        f'Cannot create already existing model "arn:aws:sagemaker:us-east-1:000000000000:model/{name}".',
    )
    with pytest.raises(ClientError) as excinfo:
        backend.create_endpoint_config(
            {
                "EndpointConfigName": name.upper(),
                "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": name}],
            }
        )
    assert error(excinfo)[1] == (
        "Cannot create already existing endpoint configuration "
        f'"arn:aws:sagemaker:us-east-1:000000000000:endpoint-config/{name}".'
    )
    with pytest.raises(ClientError) as excinfo:
        backend.create_endpoint({"EndpointName": name.upper(), "EndpointConfigName": name})
    assert error(excinfo)[1] == (
        f'Cannot create already existing endpoint "arn:aws:sagemaker:us-east-1:000000000000:endpoint/{name}".'
    )

    # The host runs in a session of its own: a restart of this process does not touch it.
    host, server = processes(name)
    assert os.getsid(host) != os.getsid(0) and alive(server)
    root = endpoint_root(LocalEndpoint.objects.get(key=name))
    assert (root / "volume" / "ml" / "model" / "model.json").is_file()

    # Delete: the server and its host go away, then the endpoint.
    backend.delete_endpoint(name)
    wait_until_gone(backend, name)
    wait_dead(host, server)
    assert not root.exists()
    with pytest.raises(ClientError) as excinfo:
        backend.invoke_endpoint(name, b"[[1, 2]]")
    assert error(excinfo)[0] == "ValidationError"
    for method, what, kind in (
        (backend.delete_endpoint, "endpoint", "endpoint"),
        (backend.describe_endpoint, "endpoint", "endpoint"),
        (backend.delete_endpoint_config, "endpoint configuration", "endpoint-config"),
        (backend.delete_model, "model", "model"),
    ):
        if method in (backend.delete_endpoint_config, backend.delete_model):
            method(name)  # the config and model outlive the endpoint until deleted
        with pytest.raises(ClientError) as excinfo:
            method(name)
        assert error(excinfo)[:2] == (
            "ValidationException",
            f'Could not find {what} "arn:aws:sagemaker:us-east-1:000000000000:{kind}/{name}".',
        )


def test_a_handler_that_raises_or_hangs_and_a_delete_mid_request(backend, tmp_path, settings) -> None:
    name = unique("mischief")
    code = sourcedir(tmp_path, {"inference.py": MISCHIEF})
    environment = {
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": code,
        "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
        # A hung worker is replaced after 3 s, and a stop waits no longer for it.
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3",
    }
    deploy(backend, name, environment)  # no ModelDataUrl: an empty /opt/ml/model
    assert wait_for_endpoint(backend, name)["EndpointStatus"] == "InService"

    answer = backend.invoke_endpoint(name, b"hello", content_type="text/plain", custom_attributes="k=v")
    assert (answer["Body"], answer["ContentType"]) == (b"HELLO", "text/plain")
    assert answer["CustomAttributes"] == "echo=k=v"

    with pytest.raises(ClientError) as excinfo:
        backend.invoke_endpoint(name, b"raise", content_type="text/plain")
    code_, message, response = error(excinfo)
    assert (code_, response["ResponseMetadata"]["HTTPStatusCode"]) == ("ModelError", 424)
    assert response["OriginalStatusCode"] == 500
    assert "ValueError: this input is not welcome" in response["OriginalMessage"]
    assert message.startswith('Received server error (500) from primary with message "')
    with pytest.raises(ClientError) as excinfo:
        backend.invoke_endpoint(name, b"teapot", content_type="text/plain")
    _, message, response = error(excinfo)
    assert response["OriginalStatusCode"] == 418 and "short and stout" in response["OriginalMessage"]
    assert message.startswith("Received client error (418)")
    with pytest.raises(ClientError) as excinfo:
        backend.invoke_endpoint(name, b"huge", content_type="text/plain")
    code_, message, _ = error(excinfo)
    assert code_ == "ModelError" and "larger than 6 MB" in message, message
    # It keeps serving.
    assert backend.invoke_endpoint(name, b"still", content_type="text/plain")["Body"] == b"STILL"
    wait_for_endpoint_log(backend, name, "ValueError: this input is not welcome")  # the traceback

    # A handler that hangs: SageMaker's timeout (lowered here), reported as a ModelError.
    settings.ANYJOB_LOCAL_INVOKE_TIMEOUT_SECONDS = 1
    started = time.monotonic()
    with pytest.raises(ClientError) as excinfo:
        backend.invoke_endpoint(name, b"sleep 30", content_type="text/plain")
    code_, message, response = error(excinfo)
    assert code_ == "ModelError" and "timed out" in message and "OriginalStatusCode" not in response
    assert time.monotonic() - started < 3
    settings.ANYJOB_LOCAL_INVOKE_TIMEOUT_SECONDS = 60
    assert backend.invoke_endpoint(name, b"after", content_type="text/plain")["Body"] == b"AFTER"

    # Deleted while a request runs: the request still gets its answer, later ones do not.
    host, server = processes(name)
    results: dict[str, Any] = {}

    def slow() -> None:
        try:
            results["answer"] = backend.invoke_endpoint(name, b"sleep 1", content_type="text/plain")
        except ClientError as exc:  # pragma: no cover - reported below
            results["error"] = exc.response

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)
    backend.delete_endpoint(name)
    thread.join(timeout=20)
    assert results.get("answer", {}).get("Body") == b"SLEEP 1", results
    with pytest.raises(ClientError) as excinfo:
        backend.invoke_endpoint(name, b"too late", content_type="text/plain")
    assert error(excinfo)[0] == "ValidationError"
    wait_until_gone(backend, name)
    wait_dead(host, server)


def test_endpoints_that_cannot_come_up_fail_with_the_reason(backend, trained, tmp_path, settings) -> None:
    settings.ANYJOB_LOCAL_ENDPOINT_STARTUP_SECONDS = 4
    names = {kind: unique(kind) for kind in ("broken", "slow", "missing", "hostile")}
    hostile = tmp_path / "hostile.tar.gz"
    with tarfile.open(hostile, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    started = time.monotonic()
    deploy(
        backend,
        names["broken"],
        {
            "SAGEMAKER_PROGRAM": "inference.py",
            "SAGEMAKER_SUBMIT_DIRECTORY": sourcedir(tmp_path / "b", {"inference.py": BROKEN}),
        },
    )
    deploy(
        backend,
        names["slow"],
        {
            "SAGEMAKER_PROGRAM": "inference.py",
            "SAGEMAKER_SUBMIT_DIRECTORY": sourcedir(tmp_path / "s", {"inference.py": SLOW}),
        },
    )
    deploy(backend, names["missing"], {}, (tmp_path / "nowhere" / "model.tar.gz").as_uri())
    deploy(backend, names["hostile"], {}, hostile.as_uri())
    for kind in ("missing", "hostile", "broken", "slow"):
        assert wait_for_endpoint(backend, names[kind])["EndpointStatus"] == "Failed", kind

    # A model_fn that raises: Failed as soon as /ping says why, not after the startup timeout.
    broken = backend.describe_endpoint(names["broken"])
    reason = broken["FailureReason"]
    assert reason.startswith(
        "ModelLoadError: inference.model_fn failed: RuntimeError: the weights are corrupt "
        "(the primary container for production variant AllTraffic did not pass the ping health check)."
    )
    assert "Last log lines:" in reason and "Traceback" in reason and len(reason) <= 1024
    assert broken["LastModifiedTime"] - broken["CreationTime"] < timedelta(seconds=4)
    # A model still loading when the startup time runs out.
    reason = backend.describe_endpoint(names["slow"])["FailureReason"]
    assert reason.startswith(
        "The primary container for production variant AllTraffic did not pass the ping health check "
        "within 4 seconds (it last answered 503: the model is still loading)."
    )
    assert time.monotonic() - started < 20
    reason = backend.describe_endpoint(names["missing"])["FailureReason"]
    assert reason.startswith('ClientError: Failed to download model data from URL "file://')
    reason = backend.describe_endpoint(names["hostile"])["FailureReason"]
    assert reason.startswith("ClientError: Failed to extract model data archive from URL")
    assert "'../escape.txt' would land outside the model folder" in reason

    with pytest.raises(ClientError) as excinfo:
        backend.invoke_endpoint(names["broken"], b"[[1, 2]]")
    assert error(excinfo)[:2] == (
        "ValidationError",
        f"Endpoint {names['broken']} of account 000000000000 is not in service: its status is Failed.",
    )
    # A failed endpoint has no process left, and is deleted at once.
    for name in names.values():
        backend.delete_endpoint(name)
        wait_until_gone(backend, name, timeout=2)


def test_an_endpoint_whose_host_dies_is_brought_back(backend, trained) -> None:
    name = unique("phoenix")
    deploy(
        backend,
        name,
        {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": trained["code"]},
        trained["model_data"],
    )
    assert wait_for_endpoint(backend, name)["EndpointStatus"] == "InService"
    assert backend.reattach_endpoints() == 0  # all is well: nothing to do
    before = json.loads(backend.invoke_endpoint(name, b"[[1, 2]]")["Body"])
    host, server = processes(name)

    # The machine's worst: the host is killed outright (its server dies with it).
    os.kill(host, signal.SIGKILL)
    wait_dead(host, server)
    # (A killed process's pid turns zombie a moment before its last thread, holding its
    # files and so its lock, is gone: the beat's next round would see it.)
    deadline = time.monotonic() + 5
    while backend.reattach_endpoints() == 0:
        assert time.monotonic() < deadline, "the dead host was never noticed"
        time.sleep(0.05)
    assert backend.reattach_endpoints() == 0, "one new host, not two"
    deadline = time.monotonic() + 30
    while True:
        try:
            after = json.loads(backend.invoke_endpoint(name, b"[[1, 2]]")["Body"])
            break
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ServiceUnavailable", exc.response
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert after == before
    assert backend.describe_endpoint(name)["EndpointStatus"] == "InService"
    row = LocalEndpoint.objects.get(key=name)
    assert row.generation == 2 and processes(name)[0] != host
    events = backend.get_endpoint_logs(name)["events"]
    assert len({e["logStreamName"] for e in events}) == 2, "one log stream per instance"
    assert any("starts the model server again" in e["message"] for e in events)
    root = endpoint_root(row)
    backend.delete_endpoint(name)
    wait_until_gone(backend, name)
    wait_dead(*processes_of(row))
    assert not root.exists()


def test_model_data_comes_from_s3(backend, trained, s3_client, s3_env, local_role) -> None:
    # The host downloads the model with the role's keys. The code stays file://: the container
    # itself would fetch s3:// code, and a job's own network cannot reach a loopback S3 server
    # (tests/local/test_role_credentials.py has the role's keys at work end to end).
    s3_client.create_bucket(Bucket="models")
    s3_client.upload_file(
        str(storage.parse(trained["model_data"]).path), "models", "linear/output/model.tar.gz"
    )
    name = unique("s3model")
    environment = {
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": trained["code"],
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
    }
    deploy(backend, name, environment, "s3://models/linear/output/model.tar.gz")
    described = wait_for_endpoint(backend, name)
    assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    weights, bias = trained["model"]["weights"], trained["model"]["bias"]
    answer = json.loads(backend.invoke_endpoint(name, b"[1, 2]")["Body"])
    assert answer == pytest.approx([weights[0] + 2 * weights[1] + bias])
    backend.delete_endpoint(name)
    wait_until_gone(backend, name)
