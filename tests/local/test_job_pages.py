"""The job pages on real jobs: submitted through the form, run by the local backend (tasks
called as functions), then read back through the pages: log, artifacts, failure, clone."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from jobs.models import TrainingJob
from jobs.tasks import submit_job
from tests.local.test_tasks import poll_until
from tests.test_new_job import form, submit, upload

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
EXAMPLES = Path(__file__).resolve().parents[2] / "container" / "examples"


@pytest.fixture
def alice_client(client, image_python):
    user = User.objects.create_user("alice", password="x")
    client.force_login(user)
    return client


def run(client, name: str, files, **fields) -> TrainingJob:
    response, _ = submit(client, form(name=name, **fields), files)
    assert response.status_code == 302, response.content.decode()[-2000:]
    job = TrainingJob.objects.get(name=name)
    assert submit_job(job.pk) == "submitted"
    return poll_until(job, set(TrainingJob.FINAL))


def test_a_completed_job_shows_its_log_artifacts_and_code(alice_client) -> None:
    data_uri = f"file://{EXAMPLES}/linear/data"
    job = run(
        alice_client,
        "linear-pages-1",
        [upload("train.py", (EXAMPLES / "linear" / "train.py").read_bytes())],
        channels=[{"name": "train", "uri": data_uri, "content_type": "text/csv"}],
        hyperparameters=[{"key": "epochs", "value": "5", "type": "number"}],
    )
    assert job.status == "Completed", job.failure_reason
    body = alice_client.get(f"/jobs/{job.name}/").content.decode()
    assert '<span class="badge Completed" id="status">Completed</span>' in body
    assert 'id="log-lines"' in body and "epoch" in body.lower()
    assert 'hx-trigger="every 2s"' not in body  # final: nothing polls
    assert "create_training_job" in body and "--cli-input-json" in body
    # Artifacts: the panel lists the files inside, each viewable and downloadable.
    panel = alice_client.get(f"/jobs/{job.name}/artifacts/", HTTP_HX_REQUEST="true").content.decode()
    assert "model.tar.gz" in panel and "output.tar.gz" in panel
    archive = alice_client.get(f"/jobs/{job.name}/artifacts/model/")
    assert archive.status_code == 200
    raw = b"".join(archive.streaming_content)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = [m.name for m in tar.getmembers() if m.isfile()]
    assert members
    first = members[0].removeprefix("./")
    assert first in panel
    shown = alice_client.get(f"/jobs/{job.name}/artifacts/model/{first}?download=1")
    assert shown.status_code == 200 and shown["Content-Type"] == "application/octet-stream"
    assert alice_client.get(f"/jobs/{job.name}/artifacts/model/no-such-file").status_code == 404
    assert alice_client.get(f"/jobs/{job.name}/artifacts/bogus/").status_code == 404
    # The whole log as text, and follow mode from the start.
    log = alice_client.get(f"/jobs/{job.name}/log/?format=text")
    assert b"".join(log.streaming_content).count(b"\n") > 3
    poll = alice_client.get(f"/jobs/{job.name}/log/", HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-swap-oob="beforeend:#log-lines"' in poll
    # The uploaded source is viewable from the page.
    assert alice_client.get(f"/code/{job.source_sha256}/train.py").status_code == 200


def test_a_failed_job_shows_the_traceback_first(alice_client) -> None:
    job = run(
        alice_client,
        "failing-pages-1",
        [upload("train.py", (EXAMPLES / "failing" / "train.py").read_bytes())],
    )
    assert job.status == "Failed"
    body = alice_client.get(f"/jobs/{job.name}/").content.decode()
    last_line = job.failure_text.strip().splitlines()[-1]
    assert "FileNotFoundError" in last_line
    assert body.index('id="failure"') < body.index('id="job-status"')
    failure = body[body.index('id="failure"') : body.index('id="job-status"')]
    assert "FileNotFoundError" in failure
    assert 'id="failure-log"' in failure  # the last log lines too


def test_a_clone_is_prefilled_and_its_changes_are_summarised(alice_client) -> None:
    data_uri = f"file://{EXAMPLES}/linear/data"
    parent = run(
        alice_client,
        "linear-parent-1",
        [upload("train.py", (EXAMPLES / "linear" / "train.py").read_bytes())],
        channels=[{"name": "train", "uri": data_uri}],
        hyperparameters=[{"key": "epochs", "value": "5", "type": "number"}],
    )
    page = alice_client.get(f"/jobs/{parent.name}/clone/")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'value="linear-parent-1"' in body  # the parent, hidden
    assert f'value="{parent.source_sha256}"' in body
    assert 'value="epochs"' in body and 'value="5"' in body
    data = form(
        name="linear-child-1",
        parent=parent.name,
        source_sha256=parent.source_sha256,
        entry_point="train.py",
        channels=[{"name": "train", "uri": data_uri}],
        hyperparameters=[{"key": "epochs", "value": "7", "type": "number"}],
    )
    response, delay = submit(alice_client, data)
    assert response.status_code == 302
    child = TrainingJob.objects.get(name="linear-child-1")
    assert child.parent == parent
    delay.assert_called_once_with(child.pk)
    body = alice_client.get(response["Location"]).content.decode()
    assert (
        "Changes against linear-parent-1: hyperparameter epochs: "
        "&#x27;5&#x27; (number) → &#x27;7&#x27; (number)" in body
    )
    assert 'id="changes"' in body
