"""The local backend end to end: real jobs through the backend interface, in the sandbox."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from django.conf import settings

from jobs import storage
from jobs.backends.local import resources
from jobs.backends.local.backend import LocalBackend
from jobs.backends.local.executor import cgroup_name
from jobs.backends.local.models import LocalTrainingJob
from tests.local.jobs import SCRIPTS, linear_example, training_request, unique, wait_for, wait_for_log

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def code(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    for name, text in SCRIPTS.items():
        (code / name).write_text(text)
    return code


def tar_member(uri: str, name: str) -> bytes:
    return storage.read_tar_member(uri, name, 1 << 20)


def test_a_job_completes_with_artifacts_metrics_and_ordered_transitions(backend, output) -> None:
    code, data = linear_example()
    name = unique("linear")
    request = training_request(
        name,
        code,
        "train.py",
        output,
        channels={"train": data.as_uri()},
        hyperparameters={"epochs": "50"},
    )
    request["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "train:loss", "Regex": r"loss=([0-9.]+)"}
    ]
    arn = backend.create_training_job(request)["TrainingJobArn"]
    assert arn.endswith(f":training-job/{name}")
    job = wait_for(backend, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert [t["Status"] for t in job["SecondaryStatusTransitions"]] == [
        "Starting",
        "Downloading",
        "Training",
        "Uploading",
        "Completed",
    ]
    starts = [t["StartTime"] for t in job["SecondaryStatusTransitions"]]
    assert starts == sorted(starts)
    assert all("EndTime" in t for t in job["SecondaryStatusTransitions"])
    assert job["TrainingTimeInSeconds"] >= 1 and job["BillableTimeInSeconds"] == job["TrainingTimeInSeconds"]
    model_uri = job["ModelArtifacts"]["S3ModelArtifacts"]
    assert model_uri == f"{output.as_uri()}/{name}/output/model.tar.gz"
    model = json.loads(tar_member(model_uri, "model.json"))
    assert model["features"] == 2
    assert backend.artifact_uri(name, "output").endswith(f"/{name}/output/output.tar.gz")
    [metric] = job["FinalMetricDataList"]
    assert metric["MetricName"] == "train:loss" and metric["Value"] < 1
    messages = [e["message"] for e in backend.get_training_logs(name)["events"]]
    assert any(m.startswith("epoch=50 loss=") for m in messages)
    streams = {e["logStreamName"] for e in backend.get_training_logs(name)["events"]}
    assert len(streams) == 1 and streams.pop().startswith(f"{name}/algo-1-")


def test_a_failing_job_reports_its_traceback(backend, output) -> None:
    from tests.container.support import EXAMPLES

    name = unique("failing")
    backend.create_training_job(training_request(name, EXAMPLES / "failing", "train.py", output))
    job = wait_for(backend, name)
    assert job["TrainingJobStatus"] == "Failed"
    reason = job["FailureReason"]
    assert reason.startswith("AlgorithmError: ExecuteUserScriptError:\nExitCode 1\n")
    assert "FileNotFoundError: [Errno 2] No such file or directory" in reason
    assert len(reason) <= 1024
    full = backend.read_artifact_file(name, "output", "failure").decode()
    assert "Traceback (most recent call last):" in full
    assert job["SecondaryStatusTransitions"][-1]["Status"] == "Failed"


def test_a_stopped_job_runs_its_handler_and_still_uploads_its_model(backend, code, output) -> None:
    name = unique("stopped")
    backend.create_training_job(training_request(name, code, "graceful.py", output))
    wait_for_log(backend, name, "ready")
    backend.stop_training_job(name)
    assert backend.describe_training_job(name)["TrainingJobStatus"] == "Stopping"
    job = wait_for(backend, name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert "FailureReason" not in job
    assert tar_member(job["ModelArtifacts"]["S3ModelArtifacts"], "saved-on-stop") == b"checkpoint"
    statuses = [t["Status"] for t in job["SecondaryStatusTransitions"]]
    assert statuses[-3:] == ["Stopping", "Uploading", "Stopped"]
    with pytest.raises(ClientError) as err:
        backend.stop_training_job(name)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "is in status Stopped" in err.value.response["Error"]["Message"]


def test_max_runtime_stops_the_job(backend, code, output) -> None:
    name = unique("maxrt")
    request = training_request(
        name, code, "sleep_forever.py", output, StoppingCondition={"MaxRuntimeInSeconds": 2}
    )
    backend.create_training_job(request)
    job = wait_for(backend, name, timeout=60)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    assert job["ModelArtifacts"]["S3ModelArtifacts"]


def run_probe(backend, code, output, env: dict, **extra) -> dict:
    name = unique("probe")
    request = training_request(name, code, "probe.py", output, Environment=env, **extra)
    backend.create_training_job(request)
    job = wait_for(backend, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    return json.loads(tar_member(job["ModelArtifacts"]["S3ModelArtifacts"], "probe.json"))


@pytest.fixture
def tcp_server():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(30)

    def accept() -> None:
        try:
            while True:
                server.accept()[0].close()
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def test_no_job_reaches_a_server_on_the_machines_loopback(backend, code, output, tcp_server) -> None:
    env = {"PROBE_PORT": str(tcp_server)}
    # Its own network namespace either way: with the network (pasta, no host loopback) and
    # with EnableNetworkIsolation (loopback only).
    assert run_probe(backend, code, output, env)["connect"] == "refused: ConnectionRefusedError"
    isolated = run_probe(backend, code, output, env, EnableNetworkIsolation=True)
    assert isolated["connect"] == "refused: ConnectionRefusedError"


def test_the_sandbox_keeps_the_job_to_itself(backend, code, output, tmp_path) -> None:
    other = Path(settings.ANYJOB_LOCAL_ROOT) / "other-job" / "ml" / "input" / "data" / "train"
    other.mkdir(parents=True, exist_ok=True)
    (other / "secret.csv").write_text("secret\n")
    db = settings.DATABASES["default"]["NAME"]
    reads = [
        db,
        str(other / "secret.csv"),
        str(settings.VAR_DIR),
        "/opt/ml/input/config/hyperparameters.json",
    ]
    writes = [
        "/etc/anyjob-escape",
        str(settings.BASE_DIR / "anyjob-escape"),
        "/tmp/inside-only",
        "/opt/ml/model/ok",
    ]
    env = {"PROBE_READ": json.dumps(reads), "PROBE_WRITE": json.dumps(writes)}
    seen = run_probe(backend, code, output, env)
    assert seen[f"read {db}"].startswith("refused: ")
    assert seen[f"read {other / 'secret.csv'}"].startswith("refused: ")
    assert "sqlite3" not in seen[f"read {settings.VAR_DIR}"]  # at most empty mount points show
    assert seen["read /opt/ml/input/config/hyperparameters.json"].startswith("b'{")
    assert seen["write /etc/anyjob-escape"].startswith("refused: ")
    # The project's folder is read-only inside (or, for a checkout under /tmp, private to the job).
    assert not (settings.BASE_DIR / "anyjob-escape").exists()
    assert seen["write /tmp/inside-only"] == "1" and not Path("/tmp/inside-only").exists()
    assert seen["write /opt/ml/model/ok"] == "1"
    assert not (settings.BASE_DIR / "anyjob-escape").exists() and not Path("/etc/anyjob-escape").exists()


def test_a_job_whose_process_dies_is_failed_not_left_running(backend, code, output, settings) -> None:
    settings.ANYJOB_LOCAL_HEARTBEAT_TIMEOUT = 2
    name = unique("orphan")
    backend.create_training_job(training_request(name, code, "sleep_forever.py", output))
    wait_for_log(backend, name, "sleeping")
    executor = LocalTrainingJob.objects.get(name=name).executor
    pid = int(executor.rsplit(":", 1)[1])
    # Everything of the job's that lives on without its process: the sandbox's network
    # helper (pasta, outside the sandbox) is in the job's cgroup, as its processes are.
    support = resources.detect()
    inside = set()
    for parent in support.parents.values():
        procs = parent / cgroup_name(name, Path(settings.ANYJOB_LOCAL_ROOT) / name) / "cgroup.procs"
        with contextlib.suppress(OSError):
            inside |= {int(p) for p in procs.read_text().split()}
    if support.mode != "none":
        assert any(
            "pasta" in Path(f"/proc/{p}/cmdline").read_text() for p in inside if Path(f"/proc/{p}").exists()
        )
    os.kill(pid, signal.SIGKILL)
    job = wait_for(backend, name, timeout=30)
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"].startswith(f"InternalServerError: the process running this job ({executor})")
    # Its volume, which the killed process could not unmount, is released by the reaper, and
    # what was left in its cgroup is gone.
    assert not os.path.ismount(Path(settings.ANYJOB_LOCAL_ROOT) / name / "volume")
    deadline = time.monotonic() + 10
    while [p for p in inside if Path(f"/proc/{p}").exists()] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in inside if Path(f"/proc/{p}").exists()], "no process of the job is left"


def test_a_job_runs_exactly_once(backend, code, output) -> None:
    from jobs.backends.local.executor import claim
    from jobs.backends.local.models import LocalLogEvent

    name = unique("once")
    backend.create_training_job(training_request(name, code, "sleep_forever.py", output))
    wait_for_log(backend, name, "sleeping")
    assert claim(name, "another:1") is False, "a job that has its process is not run again"
    # A second process started for the same job finds it taken and does nothing.
    plan = Path(settings.ANYJOB_LOCAL_ROOT) / name / "plan.json"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    again = subprocess.run(
        [sys.executable, "-m", "jobs.backends.local.executor", str(plan)], env=env, timeout=60
    )
    assert again.returncode == 0
    backend.stop_training_job(name)
    assert wait_for(backend, name)["TrainingJobStatus"] == "Stopped"
    assert claim(name, "another:1") is False, "nor is a finished one"
    assert LocalLogEvent.objects.filter(job__name=name, message="sleeping").count() == 1


def test_channels_come_from_s3(backend, output, s3_client, s3_env, local_role) -> None:
    code, data = linear_example()
    s3_client.create_bucket(Bucket="training-data")
    s3_client.upload_file(str(data / "train.csv"), "training-data", "linear/train/part-0.csv")
    name = unique("s3data")
    request = training_request(
        name,
        code,
        "train.py",
        output,
        channels={"train": "s3://training-data/linear/train/"},
        hyperparameters={"epochs": "5"},
    )
    backend.create_training_job(request)
    job = wait_for(backend, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")


def test_an_empty_channel_fails_the_job_as_sagemaker_does(
    backend, code, output, s3_client, s3_env, local_role
) -> None:
    s3_client.create_bucket(Bucket="empty-data")
    name = unique("empty")
    backend.create_training_job(
        training_request(name, code, "probe.py", output, channels={"train": "s3://empty-data/nothing/"})
    )
    job = wait_for(backend, name)
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"].startswith("ClientError: ")
    assert "s3://empty-data/nothing/" in job["FailureReason"]


def test_a_missing_file_channel_fails_the_job(backend, code, output, tmp_path) -> None:
    name = unique("nodata")
    backend.create_training_job(
        training_request(name, code, "probe.py", output, channels={"train": (tmp_path / "nope").as_uri()})
    )
    job = wait_for(backend, name)
    assert job["TrainingJobStatus"] == "Failed" and job["FailureReason"].startswith("ClientError: ")


def client_error_code(call) -> tuple[str, str]:
    with pytest.raises(ClientError) as err:
        call()
    return err.value.response["Error"]["Code"], err.value.response["Error"]["Message"]


def test_bad_requests_are_refused_with_the_codes_aws_uses(backend, code, output) -> None:
    base = training_request("valid-name", code, "probe.py", output)
    channels = [
        {
            "ChannelName": f"c{i}",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/k"}},
        }
        for i in range(21)
    ]
    code_, message = client_error_code(
        lambda: backend.create_training_job({**base, "InputDataConfig": channels})
    )
    assert code_ == "ValidationException" and "less than or equal to 20" in message
    code_, message = client_error_code(
        lambda: backend.create_training_job({**base, "TrainingJobName": "bad_name"})
    )
    assert code_ == "ValidationException" and "trainingJobName" in message
    hps = {f"k{i}": "v" for i in range(101)}
    code_, _ = client_error_code(lambda: backend.create_training_job({**base, "HyperParameters": hps}))
    assert code_ == "ValidationException"
    assert not LocalTrainingJob.objects.exists()


def test_a_name_is_unique_regardless_of_case(backend, code, output) -> None:
    name = unique("dup")
    backend.create_training_job(training_request(name, code, "probe.py", output))
    code_, message = client_error_code(
        lambda: backend.create_training_job(training_request(name.upper(), code, "probe.py", output))
    )
    assert code_ == "ResourceInUse" and "already exists" in message
    wait_for(backend, name)


def test_describe_and_stop_an_unknown_job(backend) -> None:
    assert client_error_code(lambda: backend.describe_training_job("nope")) == (
        "ValidationException",
        "Requested resource not found.",
    )
    assert client_error_code(lambda: backend.stop_training_job("nope"))[0] == "ValidationException"


def test_list_filters_and_pages(backend, code, output) -> None:
    names = [unique("list") for _ in range(3)]
    for name in names:  # one after the other, so they finish in order too
        backend.create_training_job(training_request(name, code, "probe.py", output))
        wait_for(backend, name)
    seen, token = [], None
    while True:
        page = backend.list_training_jobs(
            MaxResults=2, StatusEquals="Completed", **({"NextToken": token} if token else {})
        )
        seen += [s["TrainingJobName"] for s in page["TrainingJobSummaries"]]
        token = page.get("NextToken")
        if not token:
            break
    assert seen == list(reversed(names))
    later = backend.list_training_jobs(
        LastModifiedTimeAfter=backend.describe_training_job(names[1])["LastModifiedTime"]
    )
    assert [s["TrainingJobName"] for s in later["TrainingJobSummaries"]] == [names[2]]
    assert (
        client_error_code(lambda: backend.list_training_jobs(NextToken="garbage"))[0] == "ValidationException"
    )


def test_an_output_path_that_cannot_be_written_fails_the_job(backend, code, settings) -> None:
    settings.ANYJOB_LOCAL_FILE_ROOTS = [*settings.ANYJOB_LOCAL_FILE_ROOTS, Path("/proc")]
    name = unique("noout")
    request = training_request(name, code, "probe.py", Path("/proc/anyjob-cannot-write"))
    backend.create_training_job(request)
    job = wait_for(backend, name)
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"].startswith("ClientError: could not upload the training artifacts: ")


def test_file_uris_outside_the_allowed_folders_are_refused(backend, code, output, settings) -> None:
    settings.ANYJOB_LOCAL_FILE_ROOTS = [output]
    secret = settings.VAR_DIR  # the dashboard's own state: database, secret key
    request = training_request(unique("peek"), code, "probe.py", output, channels={"x": secret.as_uri()})
    with pytest.raises(ClientError) as refused:
        backend.create_training_job(request)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert "outside the folders local jobs may read and write" in str(refused.value)
    request = training_request(unique("peek"), code, "probe.py", secret)
    with pytest.raises(ClientError, match="AccessDenied"):
        backend.create_training_job(request)
    # Nor can the code come from there (a plain path, as the container accepts it, too).
    for source in (secret.as_uri(), str(secret)):
        request = training_request(unique("peek"), source, "probe.py", output)
        with pytest.raises(ClientError, match="AccessDenied"):
            backend.create_training_job(request)


def test_a_log_flood_is_kept_bounded(backend, code, output, settings) -> None:
    settings.ANYJOB_LOCAL_MAX_LOG_EVENTS = 1000
    name = unique("flood")
    started = time.monotonic()
    backend.create_training_job(training_request(name, code, "flood.py", output))
    job = wait_for(backend, name, timeout=120)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    kept = LocalTrainingJob.objects.get(name=name).log_events.count()
    assert kept <= 1000 + 500  # the bound, plus at most one batch
    tail = backend.get_training_logs(name, next_token="f/0", limit=10_000)["events"]
    assert [e["message"] for e in tail[-2:]] == ["done", "anyjob: training finished successfully"]
    print(f"100,000 log lines: {time.monotonic() - started:.1f} s, {kept} events kept")


def test_without_a_sandbox_the_job_still_runs_and_says_so(backend, code, output, monkeypatch) -> None:
    monkeypatch.setenv("ANYJOB_SANDBOX", "none")
    name = unique("nosandbox")
    backend.create_training_job(training_request(name, code, "hello.py", output))
    job = wait_for(backend, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    [note] = [n for n in backend.job_notes(name) if n.startswith("ran without isolation")]
    assert note == "ran without isolation: the sandbox is turned off (ANYJOB_SANDBOX=off)"
    messages = [e["message"] for e in backend.get_training_logs(name)["events"]]
    assert messages[0] == f"anyjob: {note}"


def test_the_backend_comes_from_settings(settings) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from jobs.backends import backend_class, get_backend

    assert isinstance(get_backend(), LocalBackend)
    with pytest.raises(ImproperlyConfigured, match="ANYJOB_BACKEND='nope' is not a backend"):
        backend_class("nope")
