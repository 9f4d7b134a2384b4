"""SageMaker Python SDK v3 (``sagemaker`` 3.x), unmodified, as a process against the real
anyjob: ``ModelTrainer.train(wait=True, logs=True)``. Its constructor calls
``iam:SimulatePrincipalPolicy`` and ``iam:GetRole`` (the role's trust policy must name
``sagemaker.amazonaws.com``), ``train`` two more SimulatePrincipalPolicy, uploads the code and
its own driver (``sm_drivers``) file by file, and creates a job whose container runs
``/bin/bash -c "… sm_train.sh"`` (``ContainerEntrypoint``), with MaxRuntimeInSeconds 3600."""

from __future__ import annotations

import pytest

from tests.clients.conftest import Client, unique
from tests.clients.findings import no_errors

pytestmark = pytest.mark.timeout(900)


def test_model_trainer_train_wait_and_logs(user: Client, sdk_v3_venv, bucket: str) -> None:
    base = unique("sdkv3")
    found, output = user.script_output(sdk_v3_venv, "sdk_v3_flow.py", bucket, base, timeout=800)
    no_errors(found)
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
