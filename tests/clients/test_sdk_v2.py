"""SageMaker Python SDK v2 (the last 2.x), unmodified, as a process against the real anyjob:
``Estimator.fit(logs="All")`` → ``deploy`` → ``predict`` → ``delete_endpoint``, and a failing
``fit``. What it sends is in /work/notes/client-calls.md: DebugHookConfig and ProfilerConfig on
every job, DescribeLogStreams with ``limit=1`` (a ``nextToken`` on the last page would make
``fit`` loop forever), DescribeTrainingJob every 30 s and DescribeEndpoint every 30 s, so this
test takes a minute or two however fast the job is."""

from __future__ import annotations

import pytest

from tests.clients.conftest import Client, unique
from tests.clients.findings import no_errors

pytestmark = pytest.mark.timeout(900)


def test_fit_deploy_predict_delete_endpoint(user: Client, sdk_v2_venv, bucket: str) -> None:
    base = unique("sdkv2")
    found, output = user.script_output(sdk_v2_venv, "sdk_v2_flow.py", bucket, base, timeout=800)
    no_errors(found, output)
    assert found["status"] == "Completed"
    assert found["job_name"].startswith(base + "-")
    assert found["model_data"] == f"s3://{bucket}/{found['job_name']}/output/model.tar.gz"
    # fit(logs="All") printed the job's own log lines, read through GetLogEvents.
    assert "training started: mode=ok scale=5.0" in output
    assert "epoch=2 loss=0.333" in output
    assert found["prediction"] == [[5.0, 10.0], [15.0, 20.0]]
    assert found["describe_deleted"] == "ValidationException"
    assert set(found["statuses_while_deleting"]) <= {"Deleting"}, found["statuses_while_deleting"]
    assert "the training script failed on purpose" in found["failing_fit"], found["failing_fit"]
    assert "Failed" in found["failing_fit"]
