"""SageMaker Python SDK v3 (``sagemaker`` 3.x), unmodified, as a process against the real
anyjob: ``ModelTrainer.train(wait=True, logs=True)``. Its constructor calls
``iam:SimulatePrincipalPolicy`` and ``iam:GetRole`` (the role's trust policy must name
``sagemaker.amazonaws.com``), ``train`` two more SimulatePrincipalPolicy, uploads the code and
its own driver (``sm_drivers``) file by file, and creates a job whose container runs
``/bin/bash -c "… sm_train.sh"`` (``ContainerEntrypoint``), with MaxRuntimeInSeconds 3600."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.clients.conftest import Client, unique
from tests.clients.findings import no_errors

pytestmark = pytest.mark.timeout(900)


def test_model_trainer_train_wait_and_logs(user: Client, sdk_v3_venv, bucket: str) -> None:
    base = unique("sdkv3")
    found, output = user.script_output(sdk_v3_venv, "sdk_v3_flow.py", bucket, base, timeout=800)
    no_errors(found, output)
    assert found["status"] == "Completed", found["failure"]
    assert found["job_name"].startswith(base)
    assert found["entrypoint"] == ["/bin/bash"]
    assert found["arguments"][0] == "-c" and "sm_drivers/sm_train.sh" in found["arguments"][1]
    assert found["channels"] == ["code", "sm_drivers"]
    assert found["max_runtime"] == 3600
    assert found["model_json"] == {"scale": 7.0}  # the hyperparameter reached the script

    # logs=True: the job's own lines (sm_train.sh's and the script's) were printed by the SDK.
    assert "Starting training script" in output
    assert "training done" in output


@pytest.mark.django_db(transaction=True)
def test_the_sdks_own_driver_runs_on_the_local_backend(user: Client, sdk_v3_venv, tmp_path) -> None:
    """Without the API: the ``sm_drivers`` channel SDK v3 builds (its scripts, its generated
    ``sm_train.sh``) and the ``code`` channel, run by the local backend exactly as ModelTrainer's
    request asks (``/bin/bash -c "chmod +x …/sm_train.sh && …/sm_train.sh"``), in the sandbox."""
    from django.conf import settings

    from jobs import storage
    from jobs.backends.local import image
    from jobs.backends.local.backend import LocalBackend
    from tests.local.conftest import IMAGE_ENV_ROOT
    from tests.local.jobs import wait_for

    image.ensure_image_env(IMAGE_ENV_ROOT)
    settings.ANYJOB_IMAGE_ENV_ROOT = IMAGE_ENV_ROOT
    drivers, code = tmp_path / "sm_drivers", tmp_path / "code"
    shutil.copytree(user.env["ANYJOB_TEST_CODE"], code)  # under the folders local jobs may read
    user.script(sdk_v3_venv, "sdk_v3_drivers.py", str(drivers))
    backend = LocalBackend()
    name = unique("v3driver")

    def channel(channel_name: str, folder) -> dict:
        source = {
            "S3DataType": "S3Prefix",
            "S3Uri": folder.as_uri(),
            "S3DataDistributionType": "FullyReplicated",
        }
        return {"ChannelName": channel_name, "DataSource": {"S3DataSource": source}, "InputMode": "File"}

    script = "/opt/ml/input/data/sm_drivers/sm_train.sh"
    backend.create_training_job(
        {
            "TrainingJobName": name,
            "HyperParameters": {"scale": "4"},
            "AlgorithmSpecification": {
                "TrainingInputMode": "File",
                "TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-image:1",
                "ContainerEntrypoint": ["/bin/bash"],
                "ContainerArguments": ["-c", f"chmod +x {script} && {script}"],
            },
            "RoleArn": "arn:aws:iam::000000000000:role/anyjob-local",
            "InputDataConfig": [
                channel("code", code),
                channel("sm_drivers", drivers),
            ],
            "OutputDataConfig": {"S3OutputPath": (tmp_path / "output").as_uri()},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        }
    )
    job = wait_for(backend, name, timeout=120)
    log = [e["message"] for e in backend.get_training_logs(name)["events"]]
    assert job["TrainingJobStatus"] == "Completed", (job.get("FailureReason"), log[-30:])
    assert "Running Basic Script driver" in log
    assert "training started: mode=ok scale=4.0" in log  # the driver passed the hyperparameter on
    assert "Training Container Execution Completed" in log
    model = json.loads(storage.read_tar_member(job["ModelArtifacts"]["S3ModelArtifacts"], "model.json", 1024))
    assert model == {"scale": 4.0}


def test_a_role_anyjob_does_not_know_is_refused_by_the_sdk(user: Client, sdk_v3_venv, bucket: str) -> None:
    found = user.script(sdk_v3_venv, "sdk_v3_role.py", bucket)
    no_errors(found)
    assert found["refused"] is not None and found["refused"].startswith("RoleValidationError"), found
    assert "not-known-to-anyjob" in found["refused"]
