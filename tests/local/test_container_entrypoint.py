"""``AlgorithmSpecification.ContainerEntrypoint``/``ContainerArguments`` on the local backend.

SageMaker SDK v3 runs every job as ``/bin/bash -c "chmod +x …/sm_train.sh && …/sm_train.sh"``
over ``code`` and ``sm_drivers`` channels; the driver looks for ``python3`` and ``pip`` on PATH
and may ``pip install`` requirements. These are real jobs through the backend, in the sandbox,
checked from outside: what the command printed, what it left in ``model.tar.gz``, what it could
not reach.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ParamValidationError
from django.conf import settings

from jobs import storage
from jobs.backends.local import image
from tests.local.jobs import SCRIPTS, training_request, unique, wait_for, wait_for_log

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ECR_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-team/trainer:3.1"


@pytest.fixture
def code(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    for name, text in SCRIPTS.items():
        (code / name).write_text(text)
    return code


def entrypoint_request(name: str, output: Path, entrypoint, arguments=None, **extra):
    """A job as SDK v3 makes one: no ``sagemaker_*`` hyperparameters, the command in the spec."""
    spec = {"TrainingImage": ECR_IMAGE, "TrainingInputMode": "File", "ContainerEntrypoint": entrypoint}
    if arguments is not None:
        spec["ContainerArguments"] = arguments
    request = {
        "TrainingJobName": name,
        "AlgorithmSpecification": spec,
        "RoleArn": "arn:aws:iam::000000000000:role/anyjob-local",
        "OutputDataConfig": {"S3OutputPath": output.as_uri()},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    request.update(extra)
    return request


def messages(backend, name: str) -> list[str]:
    return [e["message"] for e in backend.get_training_logs(name)["events"]]


def tiny_wheel(folder: Path) -> Path:
    """A pure-Python wheel made here (no index, no network): ``tinypkg`` 1.0."""
    files = {
        "tinypkg/__init__.py": b"GREETING = 'installed by pip inside the job'\n",
        "tinypkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: anyjob-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append("tinypkg-1.0.dist-info/RECORD,,")
    wheel = folder / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr("tinypkg-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


def test_a_bash_entrypoint_runs_with_the_images_python_and_pip(backend, output, tmp_path) -> None:
    """What SDK v3's sm_train.sh needs: /bin/bash, ``command -v python3``/``pip``, a writable
    /opt/ml, channels readable and chmod-able, ``pip install`` into the job, and the job's
    model/ packed as usual."""
    drivers = tmp_path / "sm_drivers"
    drivers.mkdir()
    tiny_wheel(drivers)
    (drivers / "sm_train.sh").write_text(
        "#!/bin/bash\n"
        "set -e\n"
        "SM_PYTHON_CMD=$(command -v python3 || command -v python)\n"
        "SM_PIP_CMD=$(command -v pip3 || command -v pip)\n"
        'echo "python=$SM_PYTHON_CMD pip=$SM_PIP_CMD job=$TRAINING_JOB_NAME"\n'
        "cat /opt/ml/input/config/resourceconfig.json; echo\n"
        "$SM_PIP_CMD install --no-index --quiet /opt/ml/input/data/sm_drivers/tinypkg-1.0-py3-none-any.whl\n"
        '$SM_PYTHON_CMD -c "import tinypkg; print(tinypkg.GREETING)"\n'
        'echo "export FROM_ENV_FILE=yes" > /opt/ml/input/sm_training.env\n'
        "source /opt/ml/input/sm_training.env\n"
        'echo "$FROM_ENV_FILE $1" > /opt/ml/model/result.txt\n'
        "echo 'Training Container Execution Completed'\n"
    )
    name = unique("entry-bash")
    request = entrypoint_request(
        name,
        output,
        ["/bin/bash"],
        [
            "-c",
            "chmod +x /opt/ml/input/data/sm_drivers/sm_train.sh && /opt/ml/input/data/sm_drivers/sm_train.sh",
        ],
        InputDataConfig=[
            {
                "ChannelName": "sm_drivers",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": drivers.as_uri()}},
            }
        ],
    )
    backend.create_training_job(request)
    job = wait_for(backend, name, timeout=120)
    log = messages(backend, name)
    assert job["TrainingJobStatus"] == "Completed", (job.get("FailureReason"), log)
    image_bin = str(Path(settings.ANYJOB_IMAGE_ENV_ROOT).resolve())
    found = next(line for line in log if line.startswith("python="))
    python, pip = found.split()[0].removeprefix("python="), found.split()[1].removeprefix("pip=")
    assert python.startswith(image_bin) and python.endswith("/bin/python3"), found
    assert pip.startswith(image_bin) and pip.endswith("/bin/pip3"), found
    assert f"job={name}" in found
    assert "installed by pip inside the job" in log
    assert "Training Container Execution Completed" in log
    assert '"current_host": "algo-1"' in "\n".join(log)
    model = job["ModelArtifacts"]["S3ModelArtifacts"]
    assert storage.read_tar_member(model, "result.txt", 1 << 10).decode().strip() == "yes"
    # The image URI named is not run: the job says so, and says what ran instead of train.
    notes = backend.job_notes(name)
    assert any(ECR_IMAGE in note and "generic image" in note for note in notes), notes
    assert any("instead of train" in note and "/bin/bash -c" in note for note in notes), notes
    assert any(ECR_IMAGE in line for line in log)
    # Nothing the job installed landed in the shared image environment.
    assert not list(Path(image_bin).glob("image-env-*/lib/python3*/site-packages/tinypkg"))


def test_container_arguments_alone_replace_train_after_the_images_entrypoint(backend, code, output) -> None:
    """Docker's rule: arguments without an entrypoint follow the image's own ENTRYPOINT
    (``python -m anyjob_container``), so ``["train"]`` is the default job."""
    name = unique("entry-args")
    request = training_request(name, code, "hello.py", output)
    request["AlgorithmSpecification"]["ContainerArguments"] = ["train"]
    backend.create_training_job(request)
    job = wait_for(backend, name, timeout=120)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert "hello" in messages(backend, name)
    assert storage.read_tar_member(job["ModelArtifacts"]["S3ModelArtifacts"], "hello", 64) == b"hi"
    assert not any("generic image" in note for note in backend.job_notes(name))  # anyjob's own image


def test_an_entrypoint_that_fails_fails_the_job_with_its_exit_code(backend, output) -> None:
    name = unique("entry-fail")
    request = entrypoint_request(name, output, ["/bin/bash", "-c", "echo broken >&2; exit 3"])
    backend.create_training_job(request)
    job = wait_for(backend, name, timeout=120)
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"] == "AlgorithmError: Exit Code: 3"
    assert "broken" in messages(backend, name)


def test_a_failure_file_written_by_the_entrypoint_is_the_reason(backend, output) -> None:
    """SDK v3's sm_train.sh appends its message to /opt/ml/output/failure and exits."""
    name = unique("entry-failfile")
    script = "echo 'Training Execution failed. See the log.' >> /opt/ml/output/failure; exit 1"
    backend.create_training_job(entrypoint_request(name, output, ["/bin/bash", "-c"], [script]))
    job = wait_for(backend, name, timeout=120)
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"] == "AlgorithmError: Training Execution failed. See the log."


def test_an_entrypoint_stops_and_hits_its_max_runtime_like_train(backend, output) -> None:
    stopped, timed_out = unique("entry-stop"), unique("entry-maxrt")
    backend.create_training_job(
        entrypoint_request(stopped, output, ["/bin/bash", "-c", "echo up; sleep 3600"])
    )
    backend.create_training_job(
        entrypoint_request(
            timed_out,
            output,
            ["/bin/sleep", "3600"],
            StoppingCondition={"MaxRuntimeInSeconds": 2},
        )
    )
    wait_for_log(backend, stopped, "up")
    backend.stop_training_job(stopped)
    job = wait_for(backend, stopped, timeout=60)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "Stopped")
    job = wait_for(backend, timed_out, timeout=60)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")


def test_an_entrypoint_is_just_another_command_inside_the_sandbox(
    backend, image_python, output, tmp_path
) -> None:
    """The entrypoint is the request's own argv, so it is where an attacker would start: it
    runs as the job's unprivileged user, sees none of anyjob's state or the home folder, and
    can write nowhere on this machine but the job's /opt/ml and /tmp."""
    outside = tmp_path / "escaped"
    repo_file = Path(settings.BASE_DIR) / "escaped-by-entrypoint"
    database = Path(settings.DATABASES["default"]["NAME"])
    probes = {
        "uid": "id -u",
        "state": f"ls -A {settings.ANYJOB_LOCAL_ROOT} | wc -l",
        "home": f"ls -A {Path.home()} | tr '\\n' ' '",
        "database": f"head -c 16 {database} | wc -c" if database.is_absolute() else "echo 0",
        "write_outside": f"touch {outside} 2>/dev/null && echo wrote || echo refused",
        "write_repo": f"touch {repo_file} 2>/dev/null && echo wrote || echo refused",
        "sudo": "(sudo -n true 2>/dev/null || su -c true 2>/dev/null) && echo root || echo refused",
    }
    channel = tmp_path / "probe"
    channel.mkdir()
    (channel / "probe.sh").write_text(
        "".join(f'echo "{key}=$({command})"\n' for key, command in probes.items())
    )
    name = unique("entry-escape")
    request = entrypoint_request(
        name,
        output,
        ["/bin/bash", "/opt/ml/input/data/probe/probe.sh"],
        InputDataConfig=[
            {
                "ChannelName": "probe",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": channel.as_uri()}},
            }
        ],
    )
    backend.create_training_job(request)
    job = wait_for(backend, name, timeout=120)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    seen = dict(
        line.split("=", 1) for line in messages(backend, name) if "=" in line and line.split("=")[0] in probes
    )
    assert seen.keys() == probes.keys(), seen
    assert seen["uid"] != "0"
    assert seen["state"] == "0", seen
    # The home folder looks empty but for the interpreter the image environment is made
    # from, bound back read-only (pyenv's, here).
    home = Path.home()
    exposed = {
        p.relative_to(home).parts[0] for p in image.runtime_paths(image_python) if p.is_relative_to(home)
    }
    assert set(seen["home"].split()) <= exposed, seen
    assert seen["database"] == "0", seen
    # Checked from outside: a path under /tmp inside the sandbox is the job's own /tmp (a
    # checkout under /tmp, as CI's is, may look writable from inside), never this machine's.
    assert not repo_file.exists(), f"the entrypoint wrote {repo_file} ({seen['write_repo']})"
    assert seen["sudo"] == "refused"
    assert not outside.exists()
    assert not repo_file.exists()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"ContainerEntrypoint": ["/bin/bash", "-c", "echo \0 hidden"]}, "NUL character"),
        ({"ContainerEntrypoint": ["/bin/bash"] * 101}, "containerEntrypoint' failed to satisfy constraint"),
        (
            {"ContainerEntrypoint": ["/bin/bash"], "ContainerArguments": ["x" * 257]},
            "containerArguments.1.member",
        ),
        ({"ContainerEntrypoint": []}, "ContainerEntrypoint, value: 0, valid min length: 1"),
    ],
    ids=["nul", "101-entries", "257-characters", "empty-list"],
)
def test_entrypoints_aws_would_refuse_are_refused_and_nothing_runs(backend, output, spec, expected) -> None:
    name = unique("entry-bad")
    request = entrypoint_request(name, output, ["/bin/true"])
    request["AlgorithmSpecification"].update(spec)
    with pytest.raises((ClientError, ParamValidationError)) as raised:
        backend.create_training_job(request)
    if isinstance(raised.value, ClientError):  # as AWS answers
        assert raised.value.response["Error"]["Code"] == "ValidationException"
    # else refused before sending, as boto3 itself does (an empty list)
    assert expected in str(raised.value)
    with pytest.raises(ClientError):
        backend.describe_training_job(name)


def test_debugger_and_profiler_configs_are_accepted_and_noted(backend, code, output) -> None:
    """SDK v2 adds both to every job; locally they do nothing, and the job says so."""
    name = unique("entry-debug")
    request = training_request(name, code, "hello.py", output)
    request["DebugHookConfig"] = {"S3OutputPath": "s3://anyjob-bucket/", "CollectionConfigurations": []}
    request["ProfilerConfig"] = {"S3OutputPath": "s3://anyjob-bucket/", "DisableProfiler": False}
    backend.create_training_job(request)
    job = wait_for(backend, name, timeout=120)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    notes = backend.job_notes(name)
    assert any("DebugHookConfig, ProfilerConfig accepted and ignored" in note for note in notes), notes
