"""Names unique regardless of case, and network-isolated jobs, on the real local backend: the
worker's tasks called as functions, the pages through Django's test client (issue #11)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from jobs import bundles
from jobs.backends import get_backend
from jobs.models import TrainingJob
from jobs.tasks import stop_job, submit_job
from tests.local.jobs import SCRIPTS, training_request, wait_for
from tests.local.test_tasks import poll_until
from tests.test_new_job import form, submit, upload

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
Status = TrainingJob.Status

ISOLATED = (
    "import os, sys\n"
    "print('cwd', os.getcwd(), flush=True)\n"
    "print('bundle', os.path.isfile('/opt/ml/input/data/code/sourcedir.tar.gz'), flush=True)\n"
    "open(os.path.join(os.environ['SM_MODEL_DIR'], 'ran'), 'w').write('isolated')\n"
)


@pytest.fixture
def alice(image_python: Path) -> User:
    return User.objects.create_user("alice", password="x")


@pytest.fixture
def bob(image_python: Path) -> User:
    return User.objects.create_user("bob", password="x")


def row(owner: User, name: str, files: dict[str, bytes], entry_point: str, **fields) -> TrainingJob:
    bundle = bundles.build(files)
    uri = bundles.store(bundle, settings.ANYJOB_ARTIFACT_STORE)
    return TrainingJob.objects.create(
        owner=owner,
        name=name,
        entry_point=entry_point,
        source_sha256=bundle.sha256,
        source_uri=uri,
        max_runtime_seconds=600,
        **fields,
    )


def test_an_isolated_job_runs_its_script_from_the_code_channel(alice) -> None:
    job = row(alice, "iso-local-1", {"iso.py": ISOLATED.encode()}, "iso.py", network_isolation=True)
    assert submit_job(job.pk) == "submitted"
    job.refresh_from_db()
    hps = job.request["HyperParameters"]
    assert hps["sagemaker_submit_directory"] == '"/opt/ml/input/data/code/sourcedir.tar.gz"'
    (code,) = [c for c in job.request["InputDataConfig"] if c["ChannelName"] == "code"]
    assert code["DataSource"]["S3DataSource"]["S3Uri"] == job.source_uri
    job = poll_until(job, {Status.COMPLETED, Status.FAILED})
    assert job.status == Status.COMPLETED, job.failure_reason
    lines = [e["message"] for e in get_backend().get_training_logs(job.name)["events"]]
    assert "bundle True" in lines, lines
    assert job.model_artifacts.endswith("/model.tar.gz")


def test_a_name_in_another_case_is_someone_elses_and_leaves_their_job_alone(alice, bob, client) -> None:
    # alice's long-run runs.
    sleeper = {"sleep_forever.py": SCRIPTS["sleep_forever.py"].encode()}
    hers = row(alice, "long-run", sleeper, "sleep_forever.py")
    assert submit_job(hers.pk) == "submitted"
    backend = get_backend()
    wait_for(backend, "long-run", {"InProgress"})
    # bob's form is refused, and so is the row itself.
    client.force_login(bob)
    response, _ = submit(client, form(name="LONG-RUN"), [upload()])
    assert response.status_code == 200
    assert "A job called &#x27;long-run&#x27; exists already" in response.content.decode()
    with pytest.raises(IntegrityError), transaction.atomic():
        row(bob, "LONG-RUN", sleeper, "sleep_forever.py")
    # Forced past both (alice's job was started by another tool on the same account, so this
    # database has no row for it), the worker proves that the job called long-run is not his.
    TrainingJob.objects.filter(pk=hers.pk).update(name="long-run-row")
    his = row(bob, "LONG-RUN", sleeper, "sleep_forever.py")
    assert submit_job(his.pk) == "failed"
    his.refresh_from_db()
    assert his.status == Status.SUBMIT_FAILED
    assert "'LONG-RUN' is taken" in his.error and "someone else's" in his.error
    # His pages show none of her log; his stop stops nothing of hers.
    assert "sleeping" not in client.get("/jobs/LONG-RUN/").content.decode()
    assert b"sleeping" not in b"".join(client.get("/jobs/LONG-RUN/log/?format=text").streaming_content)
    assert "sleeping" not in client.get("/jobs/LONG-RUN/log/").content.decode()
    assert client.get("/jobs/LONG-RUN/artifacts/model/").status_code == 404
    assert stop_job(his.pk) == "stopped"
    assert "sleeping" not in client.get("/jobs/LONG-RUN/log/").content.decode()
    theirs = backend.describe_training_job("long-run")
    assert theirs["TrainingJobStatus"] == "InProgress" and theirs["TrainingJobName"] == "long-run"
    backend.stop_training_job("long-run")
    wait_for(backend, "long-run", {"Stopped"}, timeout=90)


def test_the_local_backend_finds_a_name_in_any_case(alice, tmp_path) -> None:
    backend = get_backend()
    code = tmp_path / "code"
    code.mkdir()
    (code / "sleep_forever.py").write_text(SCRIPTS["sleep_forever.py"])
    output = Path(settings.ANYJOB_ARTIFACT_STORE.removeprefix("file://")) / "output"
    request = training_request("case-twin", code, "sleep_forever.py", output)
    request["Tags"] = [{"Key": "anyjob:job-id", "Value": "41"}]
    arn = backend.create_training_job(request)["TrainingJobArn"]
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as refused:
        backend.create_training_job({**request, "TrainingJobName": "CASE-TWIN"})
    assert refused.value.response["Error"]["Code"] == "ResourceInUse"
    assert backend.describe_training_job("CASE-TWIN")["TrainingJobArn"] == arn
    assert backend.list_tags(ResourceArn=arn) == {"Tags": [{"Key": "anyjob:job-id", "Value": "41"}]}
    wait_for(backend, "case-twin", {"InProgress"})
    backend.stop_training_job("case-twin")
    wait_for(backend, "case-twin", {"Stopped"}, timeout=90)
