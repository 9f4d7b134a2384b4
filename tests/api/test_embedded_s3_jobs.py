"""Local jobs and endpoints over anyjob's embedded S3 in the default config (no role mapped,
no S3 endpoint, ``ANYJOB_S3`` auto): code, channel, output and model all ``s3://``, uploaded
and read back with boto3 through ``/aws``. The job's container gets no credentials and cannot
see the store's files; anyjob stages what it needs (``jobs.backends.local.code_staging``)."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.api.sagemaker_support import (  # noqa: F401 - fixtures
    FAST_WAITER,
    ROLE,
    client_for_fixture,
    image_env,
    no_proxy,
    training_request,
    wait_status,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TRAIN = """\
import json, os
channel = os.environ["SM_CHANNEL_TRAIN"]
seen = {n: open(os.path.join(channel, n)).read() for n in sorted(os.listdir(channel))}
store = os.environ["STORE_ROOT"]
report = {
    "seen": seen,
    "aws_variables": sorted(k for k in os.environ if k.startswith("AWS_")),
    "store_files": sorted(os.listdir(store)) if os.path.isdir(store) else None,
    "module_dir": json.loads(os.environ["SM_TRAINING_ENV"])["module_dir"],
}
open(os.path.join(os.environ["SM_MODEL_DIR"], "report.json"), "w").write(json.dumps(report))
open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w").write(json.dumps({"scale": 5}))
print("trained from", report["module_dir"], flush=True)
"""
INFERENCE = """\
import json, os


def model_fn(model_dir):
    with open(os.path.join(model_dir, "model.json")) as fh:
        return json.load(fh)


def predict_fn(data, model):
    return {"scaled": [x * model["scale"] for x in data],
            "code_uri": os.environ.get("SAGEMAKER_SUBMIT_DIRECTORY"),
            "aws_variables": sorted(k for k in os.environ if k.startswith("AWS_"))}
"""


def bundle(files: dict[str, str]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


@pytest.fixture
def default_config(settings, monkeypatch, tmp_path: Path) -> Path:
    """The default: no roles, no S3 endpoint, ANYJOB_S3 auto; a store of the test's own."""
    for name in (
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "ANYJOB_S3",
        "ANYJOB_S3_ROOT",
        "ANYJOB_LOCAL_ROLES",
    ):
        monkeypatch.delenv(name, raising=False)
    settings.ANYJOB_LOCAL_ROLES = ""
    settings.ANYJOB_S3 = "auto"
    settings.ANYJOB_S3_ROOT = tmp_path / "s3"
    from jobs import storage

    assert storage.s3_embedded()
    return settings.ANYJOB_S3_ROOT


@pytest.fixture
def s3(api, default_config) -> Any:
    return api.client("s3", s3={"addressing_style": "path"})


def train(sm: Any, s3: Any, bucket: str, store: Path, files: dict[str, str]) -> tuple[str, str]:
    """A job whose code, channel and output are s3:// in the embedded store, run to its end;
    (its name, the code's URI)."""
    job = f"embedded-{uuid.uuid4().hex[:8]}"
    s3.put_object(Bucket=bucket, Key=f"{job}/source/sourcedir.tar.gz", Body=bundle(files))
    s3.put_object(Bucket=bucket, Key="data/train/a.csv", Body=b"1,2\n")
    code = f"s3://{bucket}/{job}/source/sourcedir.tar.gz"
    request = training_request(job, code, Environment={"STORE_ROOT": str(store)})
    request["InputDataConfig"] = [
        {"ChannelName": "train", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
         "S3Uri": f"s3://{bucket}/data/train/", "S3DataDistributionType": "FullyReplicated"}}}
    ]  # fmt: skip
    request["OutputDataConfig"] = {"S3OutputPath": f"s3://{bucket}/output"}
    assert request["RoleArn"] == ROLE  # mapped to nothing here
    sm.create_training_job(**request)
    sm.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName=job, WaiterConfig=FAST_WAITER)
    return job, code


def test_a_job_with_s3_code_channel_and_output_completes_without_a_role(client_for, api, s3, default_config):
    sm = client_for(api.user)
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    job, code = train(sm, s3, bucket, default_config, {"train.py": TRAIN})
    described = sm.describe_training_job(TrainingJobName=job)
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    key = f"output/{job}/output/model.tar.gz"
    assert described["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{bucket}/{key}"
    archive = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        report = json.loads(tar.extractfile("report.json").read())
    assert report["seen"] == {"a.csv": "1,2\n"}
    assert report["module_dir"] == code  # the job sees the URI it was given
    assert report["aws_variables"] == []  # no credentials, neither the dashboard's nor any
    assert report["store_files"] in (None, [])  # the store's files are hidden in the sandbox
    assert (default_config / "index.sqlite3").exists()  # (they are there, outside)


def test_a_missing_s3_code_bundle_fails_the_job_with_the_reason(client_for, api, s3, default_config):
    sm = client_for(api.user)
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    job = f"no-code-{uuid.uuid4().hex[:8]}"
    request = training_request(job, f"s3://{bucket}/{job}/source/sourcedir.tar.gz")
    request["OutputDataConfig"] = {"S3OutputPath": f"s3://{bucket}/output"}
    sm.create_training_job(**request)
    described = wait_status(sm, job, {"Completed", "Failed", "Stopped"}, timeout=90)
    assert described["TrainingJobStatus"] == "Failed"
    assert described["FailureReason"].startswith("ClientError: ")
    assert f"s3://{bucket}/{job}/source/sourcedir.tar.gz" in described["FailureReason"]


def test_an_endpoint_with_s3_model_and_code_serves_without_a_role(client_for, api, s3, default_config):
    sm = client_for(api.user)
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    job, code = train(sm, s3, bucket, default_config, {"train.py": TRAIN, "inference.py": INFERENCE})
    described = sm.describe_training_job(TrainingJobName=job)
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    model_data = described["ModelArtifacts"]["S3ModelArtifacts"]
    name = f"embedded-ep-{uuid.uuid4().hex[:8]}"
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1-cpu-py310",
            "ModelDataUrl": model_data,
            "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": code},
        },
    )
    variant = {"VariantName": "AllTraffic", "ModelName": name, "InstanceType": "ml.m5.large",
               "InitialInstanceCount": 1}  # fmt: skip
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    try:
        sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=FAST_WAITER)
        runtime = api.client("sagemaker-runtime", read_timeout=60)
        answer = runtime.invoke_endpoint(
            EndpointName=name, Body=json.dumps([1, 2]), ContentType="application/json"
        )
        body = json.loads(answer["Body"].read())
        assert body == {"scaled": [5, 10], "code_uri": code, "aws_variables": []}
    finally:
        sm.delete_endpoint(EndpointName=name)
        sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig=FAST_WAITER)


def test_the_container_fetches_a_staged_bundle_and_ignores_none(tmp_path: Path) -> None:
    """The container's side: ANYJOB_STAGED_SUBMIT_DIRECTORY wins over the s3:// URI (which it
    then never contacts); without it the URI is what it fetches, as before."""
    from anyjob_container.environment import TrainingEnv
    from anyjob_container.paths import Layout
    from anyjob_container.serve.settings import Settings

    staged = tmp_path / "sourcedir.tar.gz"
    staged.write_bytes(bundle({"train.py": "print(1)\n"}))
    base = tmp_path / "ml"
    (base / "input" / "config").mkdir(parents=True)
    hps = {
        "sagemaker_submit_directory": '"s3://b/j/source/sourcedir.tar.gz"',
        "sagemaker_program": '"train.py"',
    }
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hps))
    (base / "input" / "config" / "inputdataconfig.json").write_text("{}")
    layout = Layout(base)
    env = TrainingEnv.read(layout, {"ANYJOB_STAGED_SUBMIT_DIRECTORY": staged.as_uri()})
    assert (env.code_source, env.submit_directory) == (staged.as_uri(), "s3://b/j/source/sourcedir.tar.gz")
    assert TrainingEnv.read(layout, {}).code_source == "s3://b/j/source/sourcedir.tar.gz"
    served = Settings.from_env(
        {"SAGEMAKER_SUBMIT_DIRECTORY": "s3://b/c.tar.gz", "ANYJOB_STAGED_SUBMIT_DIRECTORY": staged.as_uri()}
    )
    assert served.submit_directory == staged.as_uri()
    assert Settings.from_env({"SAGEMAKER_SUBMIT_DIRECTORY": "s3://b/c.tar.gz"}).submit_directory == (
        "s3://b/c.tar.gz"
    )
