"""Execution roles, end to end: real jobs and endpoints through the local backend get their
role's credentials and never the server's, and anyjob's own S3 work for them is signed with
the role's keys.

How the S3 tests know which keys signed a request: they use a second moto server started with
``INITIAL_NO_AUTH_ACTION_COUNT=3``, which after its first three requests (creating an IAM user,
its access key and an allow-all policy) checks every request's signature against the access
keys its IAM has issued, and refuses any other with ``InvalidAccessKeyId``. The role is mapped
to that user's key; the server's own environment holds keys this server has never issued (a
control test shows it refuses them). So a channel staged, an artifact uploaded or a model
downloaded proves the request was signed with the role's key, and could not have been signed
with the server's.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from jobs import aws
from jobs.backends.local.backend import LocalBackend
from tests.local.jobs import training_request, unique, wait_for
from tests.servers import free_port, start, stop, wait_for_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROLE = "arn:aws:iam::000000000000:role/anyjob-local"
UNMAPPED = "arn:aws:iam::000000000000:role/not-mapped"
ROLE_KEYS = {
    "access_key_id": "AKIAROLEKEYFORTESTS",
    "secret_access_key": "role-secret",
    "session_token": "role-tok",
}
#: The server's own credentials: fake, and never to be seen by a job.
SERVER_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIASERVERKEYFORTESTS",
    "AWS_SECRET_ACCESS_KEY": "server-secret",
    "AWS_SESSION_TOKEN": "server-tok",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
AWS_VARS = [
    "AWS_ACCESS_KEY_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
]

PRINT_AWS_ENV = (
    "import hashlib, json, os\n"
    "seen = {k: hashlib.sha256(os.environ[k].encode()).hexdigest()\n"
    "        for k in sorted(k for k in os.environ if k.startswith('AWS_'))}\n"
    "print('AWS-ENV ' + json.dumps(seen), flush=True)\n"
    "print('ROLES-SETTING-VISIBLE', 'ANYJOB_LOCAL_ROLES' in os.environ, flush=True)\n"
)
TRAIN_FROM_CHANNEL = (
    "import os, shutil\n"
    "src = os.path.join(os.environ['SM_CHANNEL_TRAIN'], 'part-0.csv')\n"
    "shutil.copy(src, os.path.join(os.environ['SM_MODEL_DIR'], 'seen.csv'))\n"
    "print('trained on', open(src).read().strip(), flush=True)\n"
)
INFERENCE = """\
import hashlib
import json
import os


def model_fn(model_dir):
    return open(os.path.join(model_dir, "word.txt")).read()


def input_fn(body, content_type, context):
    return body


def predict_fn(data, model):
    env = {k: hashlib.sha256(os.environ[k].encode()).hexdigest() for k in os.environ if k.startswith("AWS_")}
    return {"word": model, "aws": env}


def output_fn(prediction, accept):
    return json.dumps(prediction).encode(), "application/json"
"""


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def role_env_hashes(keys: dict[str, str], region: str = "us-east-1") -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": sha(keys["access_key_id"]),
        "AWS_DEFAULT_REGION": sha(region),
        "AWS_REGION": sha(region),
        "AWS_SECRET_ACCESS_KEY": sha(keys["secret_access_key"]),
        **({"AWS_SESSION_TOKEN": sha(keys["session_token"])} if "session_token" in keys else {}),
    }


@pytest.fixture
def server_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The server's own AWS variables, as a server with an instance role or keys has them."""
    for key, value in SERVER_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # loopback: never passed on
    aws.reset()
    return SERVER_ENV


@pytest.fixture
def code(tmp_path: Path) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "print_aws_env.py").write_text(PRINT_AWS_ENV)
    (folder / "train_from_channel.py").write_text(TRAIN_FROM_CHANNEL)
    return folder


def map_roles(settings, table: dict[str, dict[str, str]]) -> None:
    settings.ANYJOB_LOCAL_ROLES = json.dumps(table)


def log_messages(backend: LocalBackend, name: str) -> list[str]:
    return [e["message"] for e in backend.get_training_logs(name)["events"]]


def aws_env_of(backend: LocalBackend, name: str) -> dict[str, str]:
    [line] = [m for m in log_messages(backend, name) if m.startswith("AWS-ENV ")]
    return json.loads(line.removeprefix("AWS-ENV "))


# -- what a job's container gets ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapped", "isolated", "expected"),
    [
        (True, False, role_env_hashes(ROLE_KEYS, region="eu-west-1")),
        (False, False, {}),  # an unmapped role: no credentials at all
        (True, True, {}),  # EnableNetworkIsolation: none, as on AWS
    ],
    ids=["mapped", "unmapped", "isolated"],
)
def test_a_job_sees_its_roles_credentials_and_never_the_servers(
    backend, code, tmp_path, settings, server_env, mapped, isolated, expected
) -> None:
    map_roles(settings, {ROLE: {**ROLE_KEYS, "region": "eu-west-1"}} if mapped else {})
    name = unique("roleenv")
    request = training_request(name, code, "print_aws_env.py", tmp_path / "out")
    if isolated:
        request["EnableNetworkIsolation"] = True
    backend.create_training_job(request)
    job = wait_for(backend, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    seen = aws_env_of(backend, name)
    assert seen == expected
    assert sorted(seen) == (AWS_VARS if mapped and not isolated else [])
    assert not {sha(v) for v in server_env.values()} & set(seen.values())
    assert "ROLES-SETTING-VISIBLE False" in log_messages(backend, name)  # nor the other roles' keys


# -- anyjob's own S3 work is signed with the role's keys -----------------------------------------


@contextlib.contextmanager
def iam_checking_s3() -> Iterator[dict[str, str]]:
    """A moto server that accepts only the access key it issued (see the module docstring)."""
    port = free_port()
    proc = start(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**_clean_env(), "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        url = f"http://127.0.0.1:{port}"
        iam = boto3.client(
            "iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        iam.create_user(UserName="execution-role")
        key = iam.create_access_key(UserName="execution-role")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="execution-role", PolicyName="all", PolicyDocument=json.dumps(policy))
        yield {"url": url, "access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}
    finally:
        stop(proc)


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


@pytest.fixture(scope="module")
def iam_s3() -> Iterator[dict[str, str]]:
    with iam_checking_s3() as server:
        yield server


@pytest.fixture
def s3_as_role(iam_s3, server_env, monkeypatch) -> Any:
    """The IAM-checking server as the S3 of this machine (``AWS_ENDPOINT_URL_S3``), and a
    client with the role's key to set it up and look at it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", iam_s3["url"])
    aws.reset()
    return boto3.client(
        "s3",
        endpoint_url=iam_s3["url"],
        region_name="us-east-1",
        aws_access_key_id=iam_s3["access_key_id"],
        aws_secret_access_key=iam_s3["secret_access_key"],
    )


def role_keys(iam_s3: dict[str, str]) -> dict[str, str]:
    return {"access_key_id": iam_s3["access_key_id"], "secret_access_key": iam_s3["secret_access_key"]}


def test_the_control_the_server_refuses_the_servers_own_keys(s3_as_role) -> None:
    bucket = unique("control")
    s3_as_role.create_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as caught:
        aws.client("s3").list_objects_v2(Bucket=bucket)  # boto3's chain: the server's env keys
    assert caught.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def test_channels_and_artifacts_move_with_the_roles_keys(
    backend, code, settings, iam_s3, s3_as_role, tmp_path
) -> None:
    map_roles(settings, {ROLE: role_keys(iam_s3)})
    bucket = unique("role-data")
    s3_as_role.create_bucket(Bucket=bucket)
    s3_as_role.put_object(Bucket=bucket, Key="train/part-0.csv", Body=b"1,2,3\n")
    name = unique("rolestage")
    request = training_request(
        name, code, "train_from_channel.py", tmp_path / "unused", channels={"train": f"s3://{bucket}/train/"}
    )
    request["OutputDataConfig"] = {"S3OutputPath": f"s3://{bucket}/out"}
    backend.create_training_job(request)
    job = wait_for(backend, name)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert "trained on 1,2,3" in log_messages(backend, name)
    model = s3_as_role.get_object(Bucket=bucket, Key=f"out/{name}/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(model)) as tar:
        assert tar.extractfile("seen.csv").read() == b"1,2,3\n"


def test_a_role_mapped_to_keys_the_server_does_not_know_cannot_stage(
    backend, code, settings, iam_s3, s3_as_role, tmp_path
) -> None:
    """The other half of the proof: the staging really signs with the mapped keys (wrong ones
    fail it), whatever the server's own environment holds."""
    map_roles(settings, {ROLE: {"access_key_id": "AKIAWRONGROLEKEY", "secret_access_key": "nope"}})
    bucket = unique("role-data")
    s3_as_role.create_bucket(Bucket=bucket)
    s3_as_role.put_object(Bucket=bucket, Key="train/part-0.csv", Body=b"1\n")
    name = unique("rolewrong")
    request = training_request(
        name, code, "train_from_channel.py", tmp_path / "out", channels={"train": f"s3://{bucket}/train/"}
    )
    backend.create_training_job(request)
    job = wait_for(backend, name)
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"].startswith("ClientError: ")
    assert f"s3://{bucket}/train/" in job["FailureReason"]


def sourcedir(folder: Path, files: dict[str, str]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "sourcedir.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive.as_uri()


def model_archive(files: dict[str, str]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def wait_in_service(backend: LocalBackend, name: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (described := backend.describe_endpoint(name))["EndpointStatus"] == "Creating":
        assert time.monotonic() < deadline, f"{name} still Creating"
        time.sleep(0.05)
    return described


def test_an_endpoint_downloads_its_model_and_serves_with_the_roles_keys(
    backend, settings, iam_s3, s3_as_role, tmp_path
) -> None:
    map_roles(settings, {ROLE: role_keys(iam_s3)})
    bucket = unique("models")
    s3_as_role.create_bucket(Bucket=bucket)
    s3_as_role.put_object(Bucket=bucket, Key="m/model.tar.gz", Body=model_archive({"word.txt": "hello"}))
    name = unique("roleep")
    environment = {
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": sourcedir(tmp_path / "code", {"inference.py": INFERENCE}),
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
    }
    container = {"Image": "anyjob/generic:latest", "Environment": environment}
    container["ModelDataUrl"] = f"s3://{bucket}/m/model.tar.gz"
    backend.create_model({"ModelName": name, "ExecutionRoleArn": ROLE, "PrimaryContainer": container})
    variant = {"VariantName": "AllTraffic", "ModelName": name, "InstanceType": "ml.m5.large"}
    backend.create_endpoint_config(
        {"EndpointConfigName": name, "ProductionVariants": [{**variant, "InitialInstanceCount": 1}]}
    )
    backend.create_endpoint({"EndpointName": name, "EndpointConfigName": name})
    try:
        described = wait_in_service(backend, name)
        assert described["EndpointStatus"] == "InService", described.get("FailureReason")
        answer = json.loads(backend.invoke_endpoint(name, b"{}", content_type="application/json")["Body"])
        assert answer["word"] == "hello"  # downloaded with the role's key: the only one accepted
        assert answer["aws"] == role_env_hashes(role_keys(iam_s3))
    finally:
        backend.delete_endpoint(name)


# -- refused before anything runs -----------------------------------------------------------------

MESSAGE = (
    f"The role {UNMAPPED} is not mapped to credentials on this anyjob server: add it to "
    "ANYJOB_LOCAL_ROLES (see README, Security model) or use file:// locations."
)


def test_the_api_refuses_s3_locations_under_an_unmapped_role(backend, code, settings, tmp_path) -> None:
    map_roles(settings, {ROLE: ROLE_KEYS})
    request = training_request(
        unique("refused"), code, "print_aws_env.py", tmp_path / "out", channels={"train": "s3://data/train/"}
    )
    request["RoleArn"] = UNMAPPED
    with pytest.raises(ClientError) as caught:
        backend.create_training_job(request)
    assert caught.value.response["Error"] == {"Code": "ValidationException", "Message": MESSAGE}
    assert caught.value.operation_name == "CreateTrainingJob"

    container = {"Image": "anyjob/generic:latest", "ModelDataUrl": "s3://models/m/model.tar.gz"}
    with pytest.raises(ClientError) as caught:
        backend.create_model(
            {"ModelName": unique("m"), "ExecutionRoleArn": UNMAPPED, "PrimaryContainer": container}
        )
    assert caught.value.response["Error"] == {"Code": "ValidationException", "Message": MESSAGE}


def test_preflight_names_every_s3_location_and_lets_files_through(backend, code, settings, tmp_path) -> None:
    settings.ANYJOB_LOCAL_ROLES = ""
    settings.ANYJOB_S3 = "aws"  # real S3; embedded needs no role (see tests/api/test_embedded_s3_jobs.py)
    request = training_request(
        unique("pre"), code, "x.py", tmp_path / "out", channels={"b": tmp_path.as_uri()}
    )
    request["RoleArn"] = UNMAPPED
    assert backend.preflight(request) == []  # file:// everywhere: no role needed
    request["InputDataConfig"].insert(0, {**request["InputDataConfig"][0], "ChannelName": "a"})
    request["InputDataConfig"][0]["DataSource"] = {
        "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://d/a/"}
    }
    request["OutputDataConfig"] = {"S3OutputPath": "s3://d/out"}
    request["CheckpointConfig"] = {"S3Uri": "s3://d/checkpoints"}
    request["HyperParameters"]["sagemaker_submit_directory"] = '"s3://d/code/sourcedir.tar.gz"'
    assert backend.preflight(request) == [
        ("InputDataConfig[0].DataSource.S3DataSource.S3Uri", MESSAGE),
        ("OutputDataConfig.S3OutputPath", MESSAGE),
        ("HyperParameters.sagemaker_submit_directory", MESSAGE),
        ("CheckpointConfig.S3Uri", MESSAGE),
    ]
    request["InputDataConfig"].pop(0)
    assert backend.preflight(request)[0][0] == "OutputDataConfig.S3OutputPath"
