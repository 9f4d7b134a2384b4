"""The new-job page through Django's test client: uploads, rows, limits, refusals, clone."""

from __future__ import annotations

import io
import json
import re
import tarfile
import zipfile
from pathlib import Path
from unittest.mock import patch

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import TestCase, override_settings

from jobs.models import TrainingJob

pytestmark = pytest.mark.django_db
EXAMPLES = Path(__file__).resolve().parent.parent / "container" / "examples"
TRAIN = (EXAMPLES / "linear" / "train.py").read_bytes()


def rows(prefix: str, items: list[dict[str, str]]) -> dict[str, str]:
    data = {f"{prefix}-TOTAL_FORMS": str(len(items)), f"{prefix}-INITIAL_FORMS": "0"}
    for i, item in enumerate(items):
        data.update({f"{prefix}-{i}-{k}": v for k, v in item.items()})
    return data


def form(
    *,
    name: str = "linear-0001",
    channels: list[dict[str, str]] | None = None,
    hyperparameters: list[dict[str, str]] | None = None,
    environment: list[dict[str, str]] | None = None,
    tags: list[dict[str, str]] | None = None,
    **fields: str,
) -> dict[str, str]:
    data = {
        "name": name,
        "entry_point": "",
        "instance_type": "ml.m5.large",
        "instance_count": "1",
        "volume_size_gb": "30",
        "max_runtime_seconds": "3600",
        "output_path": "",
        **fields,
    }
    data.update(rows("ch", channels or []))
    data.update(rows("hp", hyperparameters or []))
    data.update(rows("env", environment or []))
    data.update(rows("tag", tags or []))
    return data


def upload(name: str = "train.py", body: bytes = TRAIN) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, body)


def tar_gz(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return raw.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as archive:
        for name, body in files.items():
            archive.writestr(name, body)
    return raw.getvalue()


def submit(client, data: dict[str, str], files: list[SimpleUploadedFile] | None = None, **kw):
    """POST the form; returns the response and the mock ``submit_job`` was sent through."""
    payload = dict(data)
    if files:
        payload["code"] = files
    with (
        patch("jobs.tasks.submit_job_task.delay") as delay,
        TestCase.captureOnCommitCallbacks(execute=True),
    ):
        response = client.post("/new/", payload, **kw)
    return response, delay


@pytest.fixture
def signed_in(client, alice):
    client.force_login(alice)
    return client


def test_the_page_needs_a_signed_in_user(client):
    response = client.get("/new/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_page_offers_a_generated_name_and_the_default_instance_type(signed_in):
    body = signed_in.get("/new/").content.decode()
    assert 'name="name"' in body and 'value="job-' in body
    assert '<option value="ml.m5.large" selected>' in body
    assert "csrfmiddlewaretoken" in body
    assert 'name="ch-TOTAL_FORMS"' in body


def test_a_single_script_becomes_a_pending_job(signed_in, alice, local_role):
    data = form(
        channels=[
            {"name": "train", "uri": f"file://{EXAMPLES}/linear/data", "content_type": "text/csv"},
            {"name": "test", "uri": "s3://bucket/test/"},
        ],
        hyperparameters=[
            {"key": "epochs", "value": "10", "type": "number"},
            {"key": "optimizer", "value": "adam", "type": "string"},
            {"key": "verbose", "value": "true", "type": "boolean"},
        ],
        environment=[{"key": "MY_FLAG", "value": "1"}],
        tags=[{"key": "team", "value": "ml"}],
    )
    response, delay = submit(signed_in, data, [upload()])
    assert response.status_code == 302, response.content.decode()[-3000:]
    assert response["Location"] == "/jobs/linear-0001/"
    job = TrainingJob.objects.get(name="linear-0001")
    delay.assert_called_once_with(job.pk)
    assert job.owner == alice
    assert job.status == "Pending"
    assert job.entry_point == "train.py"  # the only runnable file, picked for the user
    assert job.source_uri.endswith(f"/code/{job.source_sha256}/sourcedir.tar.gz")
    assert [c["name"] for c in job.channels] == ["train", "test"]
    assert job.hyperparameters[0] == {"key": "epochs", "value": "10", "type": "number"}
    assert job.environment == {"MY_FLAG": "1"}
    assert job.tags == [{"key": "team", "value": "ml"}]


def errors_of(response) -> str:
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="form-errors"' in body
    return body


def test_nothing_uploaded_says_so(signed_in):
    body = errors_of(submit(signed_in, form())[0])
    assert "Choose the code to upload" in body
    assert not TrainingJob.objects.exists()


@override_settings(ANYJOB_MAX_UPLOAD_BYTES=2048)
def test_a_too_large_upload_is_refused(signed_in):
    body = errors_of(submit(signed_in, form(), [upload(body=b"#" * 5000)])[0])
    assert "the limit is 2.0 KiB" in body


def test_an_empty_upload_is_refused(signed_in):
    body = errors_of(submit(signed_in, form(), [upload(body=b"")])[0])
    assert "&#x27;train.py&#x27; is empty." in body


def test_an_archive_that_is_not_one_is_refused(signed_in):
    body = errors_of(submit(signed_in, form(), [upload("code.zip", b"not a zip at all")])[0])
    assert "&#x27;code.zip&#x27; is not a valid .zip archive." in body
    body = errors_of(submit(signed_in, form(), [upload("code.tar.gz", b"\x1f\x8bnot gzip")])[0])
    assert "code.tar.gz" in body and "archive" in body


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        (tar_gz({"../evil.py": b"x"}), "may not contain &#x27;..&#x27;"),
        (tar_gz({"/etc/evil.py": b"x"}), "not absolute"),
        (tar_gz({"train.py": b"x"}, links={"data": "/etc"}), "links are not allowed"),
    ],
)
def test_an_archive_with_unsafe_members_is_refused(signed_in, archive, message):
    body = errors_of(submit(signed_in, form(), [upload("code.tar.gz", archive)])[0])
    assert message in body
    assert not TrainingJob.objects.exists()


@override_settings(ANYJOB_MAX_CODE_BYTES=4096)
def test_an_archive_bomb_is_refused(signed_in):
    archive = zip_bytes({"train.py": b"print(1)", "big.bin": b"\0" * 100_000})
    response = submit(signed_in, form(), [upload("code.zip", archive)])[0]
    body = errors_of(response)
    assert "unpacks to more than 4.0 KiB" in body


def test_code_without_a_runnable_file_is_refused(signed_in):
    body = errors_of(submit(signed_in, form(), [upload("data.csv", b"1,2\n")])[0])
    assert "no file that can be run" in body


def test_an_archive_of_a_folder_keeps_its_files_and_asks_for_the_entry_point(signed_in):
    archive = zip_bytes(
        {"project/run.sh": b"#!/bin/sh\n", "project/prep.py": b"print(1)\n", "project/lib/util.py": b""}
    )
    response, _ = submit(signed_in, form(), [upload("project.zip", archive)])
    body = errors_of(response)
    assert "Pick the file to run." in body
    sha = response.context["code"].sha256
    assert f'name="source_sha256" value="{sha}"' in body  # the code is kept for the next POST
    assert sorted(response.context["code"].files) == ["lib/util.py", "prep.py", "run.sh"]
    # Sent again with the entry point and no upload: nothing is lost.
    response, _ = submit(signed_in, form(source_sha256=sha, entry_point="run.sh"))
    assert response.status_code == 302
    job = TrainingJob.objects.get()
    assert (job.entry_point, job.source_sha256) == ("run.sh", sha)


def test_an_entry_point_not_in_the_code_is_refused(signed_in):
    body = errors_of(submit(signed_in, form(entry_point="other.py"), [upload()])[0])
    assert "&#x27;other.py&#x27; is not a runnable file of the uploaded code" in body


def test_a_forged_code_hash_is_refused(signed_in):
    body = errors_of(submit(signed_in, form(source_sha256="0" * 64, entry_point="train.py"))[0])
    assert "The code uploaded earlier is gone" in body


def test_several_files_with_the_same_name_are_refused(signed_in):
    body = errors_of(submit(signed_in, form(), [upload(), upload()])[0])
    assert "both called" in body


def test_duplicate_channels_and_keys_are_refused_next_to_the_row(signed_in):
    data = form(
        channels=[{"name": "train", "uri": "s3://b/a/"}, {"name": "train", "uri": "s3://b/b/"}],
        hyperparameters=[
            {"key": "lr", "value": "1", "type": "number"},
            {"key": "lr", "value": "2", "type": "number"},
        ],
    )
    response, delay = submit(signed_in, data, [upload()])
    errors_of(response)
    page = response.context["page"]
    assert page.channels.forms[1].errors["name"] == ["'train' is used by more than one channel."]
    assert page.hyperparameters.forms[1].errors["key"] == ["'lr' is used by more than one hyperparameter."]
    delay.assert_not_called()


def test_a_reserved_key_and_a_value_of_the_wrong_type_are_refused(signed_in):
    data = form(
        hyperparameters=[
            {"key": "sagemaker_program", "value": "evil.py", "type": "string"},
            {"key": "lr", "value": "fast", "type": "number"},
            {"key": "cfg", "value": "{bad", "type": "json"},
            {"key": "flag", "value": "maybe", "type": "boolean"},
        ]
    )
    response, _ = submit(signed_in, data, [upload()])
    errors_of(response)
    forms = response.context["page"].hyperparameters.forms
    assert "reserved" in forms[0].errors["key"][0]
    assert forms[1].errors["value"] == ["'fast' is not a number."]
    assert "is not valid JSON" in forms[2].errors["value"][0]
    assert forms[3].errors["value"] == ["'maybe' is not true or false."]


def test_the_api_limits_are_shown_next_to_their_fields(signed_in):
    data = form(
        name="bad name!",
        channels=[{"name": "a b", "uri": "ftp://x/y"}],
        environment=[{"key": "1BAD", "value": "x"}],
        tags=[{"key": "team", "value": "<b>"}],
        instance_type="ml.m5.large",
    )
    response, _ = submit(signed_in, data, [upload()])
    errors_of(response)
    page = response.context["page"]
    assert "may only contain letters, digits and hyphens" in page.form.errors["name"][0]
    assert "may only contain letters, digits" in page.channels.forms[0].errors["name"][0]
    assert "must be an s3:// or https:// address" in page.channels.forms[0].errors["uri"][0]
    assert "must start with a letter or" in page.environment.forms[0].errors["key"][0]
    assert "Tag value" in page.tags.forms[0].errors["value"][0]


def test_more_than_twenty_channels_are_refused(signed_in):
    channels = [{"name": f"c{i}", "uri": f"s3://b/{i}/"} for i in range(21)]
    response, _ = submit(signed_in, form(channels=channels), [upload()])
    errors_of(response)
    assert response.context["page"].channels.non_form_errors() == ["At most 20 channels; this form has 21."]


def test_a_crafted_row_count_does_not_build_thousands_of_forms(signed_in):
    data = form()
    data["hp-TOTAL_FORMS"] = "100000000"
    response, _ = submit(signed_in, data, [upload()])
    assert response.status_code == 200
    assert len(response.context["page"].hyperparameters.forms) <= 150


def test_the_local_backend_refuses_several_instances_next_to_the_field(signed_in):
    response, _ = submit(signed_in, form(instance_count="2"), [upload()])
    errors_of(response)
    assert "runs one instance per job" in response.context["form"].errors["instance_count"][0]


def test_a_file_channel_outside_the_allowed_folders_is_refused(signed_in, settings):
    settings.ANYJOB_LOCAL_FILE_ROOTS = [EXAMPLES]
    channels = [{"name": "secrets", "uri": f"file://{settings.VAR_DIR}"}]
    response, _ = submit(signed_in, form(channels=channels), [upload()])
    errors_of(response)
    message = response.context["page"].channels.forms[0].errors["uri"][0]
    assert "outside the folders local jobs may read" in message


def test_html_typed_in_the_form_comes_back_inert(signed_in):
    data = form(
        name="<script>alert(1)</script>",
        hyperparameters=[{"key": "<img src=x onerror=alert(1)>", "value": "<b>", "type": "string"}],
    )
    body = errors_of(submit(signed_in, data, [upload("<i>evil</i>.py", b"print(1)")])[0])
    assert "<script>alert(1)" not in body
    assert "<img src=x" not in body
    assert "<i>evil" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_a_name_in_use_is_refused(signed_in, alice):
    TrainingJob.objects.create(owner=alice, name="linear-0001", entry_point="train.py")
    body = errors_of(submit(signed_in, form(), [upload()])[0])
    assert "A job called &#x27;linear-0001&#x27; exists already" in body


def test_the_upload_endpoint_answers_the_code_panel(signed_in):
    response = signed_in.post("/new/code/", {"code": [upload(), upload("README.md", b"# hi")]})
    assert response.status_code == 200
    body = response.content.decode()
    assert '<option value="train.py" selected>train.py</option>' in body
    assert "README.md" in body
    assert "Train a linear model" in body or "def " in body  # the entry point's source
    assert json.loads(response["HX-Trigger"]) == {"code-uploaded": {}}
    response = signed_in.post("/new/code/", {"code": [upload("x.zip", b"junk")]})
    assert "not a valid .zip archive" in response.content.decode()


class RecordingBackend:
    """A backend that keeps every CreateTrainingJob request it is sent (the rest: defaults)."""

    def __new__(cls):
        from jobs.backends.base import Backend

        class Recording(Backend):
            sent: list = []

            def create_training_job(self, request):
                self.sent.append(json.loads(json.dumps(request)))
                return {"TrainingJobArn": "arn:aws:sagemaker:us-east-1:0:training-job/x"}

        return Recording()


@pytest.mark.parametrize("isolated", [False, True])
def test_the_preview_shows_the_exact_map_and_command_line(signed_in, monkeypatch, isolated):
    from jobs.tasks import submit_job

    hyperparameters = [
        {"key": "lr", "value": "0.1", "type": "number"},
        {"key": "optimizer", "value": "adam", "type": "string"},
        {"key": "b", "value": "true", "type": "boolean"},
        {"key": "layers", "value": "[64, 32]", "type": "json"},
        {"key": "opt", "value": '{"eps": 1e-08, "off": null}', "type": "json"},
    ]
    extra = {"network_isolation": "on"} if isolated else {}
    response, _ = submit(signed_in, form(name="demo-1", hyperparameters=hyperparameters, **extra), [upload()])
    assert response.status_code == 302, response.content.decode()[-3000:]
    job = TrainingJob.objects.get(name="demo-1")
    # The preview, from the form as the browser sends it once the code is uploaded.
    data = {
        **form(name="demo-1", hyperparameters=hyperparameters, **extra),
        "entry_point": "train.py",
        "source_sha256": job.source_sha256,
    }
    response = signed_in.post("/new/preview/", data)
    assert response.status_code == 200
    preview = response.context["preview"]
    # The real worker, against a backend that records what it is sent: every key the same.
    backend = RecordingBackend()
    monkeypatch.setattr("jobs.tasks.get_backend", lambda: backend)
    assert submit_job(job.pk) == "submitted"
    (sent,) = backend.sent
    job.refresh_from_db()
    assert json.loads(preview["hyperparameters"]) == sent["HyperParameters"]
    submitted = json.loads(sent["HyperParameters"]["sagemaker_submit_directory"])
    if isolated:
        assert submitted == "/opt/ml/input/data/code/sourcedir.tar.gz"
        assert sent["InputDataConfig"][-1]["DataSource"]["S3DataSource"]["S3Uri"] == job.source_uri
    else:
        assert submitted == job.source_uri and "/demo-1/source/" in submitted  # the job's own copy
    assert preview["command"] == (
        "python train.py -b True --layers '[64, 32]' --lr 0.1 --opt eps=1e-08,off=None --optimizer adam"
    )


def test_the_preview_lists_rows_that_do_not_check_out(signed_in):
    data = {
        "name": "demo-1",
        "entry_point": "train.py",
        **rows("hp", [{"key": "bad", "value": "x", "type": "number"}]),
    }
    preview = signed_in.post("/new/preview/", data).context["preview"]
    assert preview["problems"] == ["bad: 'x' is not a number"]


def test_the_code_view_shows_files_and_source(signed_in):
    response = signed_in.post("/new/code/", {"code": [upload()]})
    sha = response.context["code"].sha256
    body = signed_in.get(f"/code/{sha}/").content.decode()
    assert "train.py" in body
    body = signed_in.get(f"/code/{sha}/train.py").content.decode()
    assert 'id="source-text"' in body
    assert signed_in.get(f"/code/{sha}/nope.py").status_code == 404
    assert signed_in.get(f"/code/{'0' * 64}/").status_code == 404
    assert signed_in.get("/code/not-a-sha/").status_code == 404
    download = signed_in.get(f"/code/{sha}/train.py?download=1")
    assert download["Content-Type"] == "application/octet-stream"
    assert download.content == TRAIN


def test_a_crafted_post_without_the_row_tables_is_an_error_page_not_a_500(signed_in):
    response, _ = submit(signed_in, {"name": "x"}, [upload()])
    assert response.status_code == 200
    assert 'id="form-errors"' in response.content.decode()
    response = signed_in.post("/new/preview/", {"hp-TOTAL_FORMS": "bogus"})
    assert response.status_code == 200
    assert "reload the page" in response.content.decode()


def test_the_new_job_endpoints_refuse_get_where_they_only_take_post(signed_in):
    assert signed_in.get("/new/code/").status_code == 405
    assert signed_in.get("/new/preview/").status_code == 405
    assert signed_in.put("/new/").status_code == 405


# --- secret environment variables ---------------------------------------------------------------

SECRET = "hunter2-sk-live-0123456789"


def test_a_secret_value_is_sent_by_the_worker_and_its_key_kept_secret(signed_in):
    from jobs.tasks import submit_job

    data = form(
        environment=[
            {"key": "API_TOKEN", "value": SECRET, "secret": "on"},
            {"key": "MODE", "value": "offline"},
        ]
    )
    response, _ = submit(signed_in, data, [upload()])
    assert response.status_code == 302, response.content.decode()[-3000:]
    job = TrainingJob.objects.get()
    assert job.environment == {"API_TOKEN": SECRET, "MODE": "offline"}
    assert job.secret_environment == ["API_TOKEN"]
    # The worker's own task and request builder send the value itself.
    with patch("jobs.tasks.get_backend") as backend:
        assert submit_job(job.pk) == "submitted"
    (sent,) = backend.return_value.create_training_job.call_args.args
    assert sent["Environment"] == {"API_TOKEN": SECRET, "MODE": "offline"}


def test_a_form_sent_back_with_a_problem_asks_for_the_secret_again(signed_in):
    data = form(
        name="bad name!",
        environment=[{"key": "API_TOKEN", "value": SECRET, "secret": "on"}, {"key": "MODE", "value": "x"}],
    )
    body = errors_of(submit(signed_in, data, [upload()])[0])
    assert SECRET not in body
    assert 'type="password" name="env-0-value"' in body and 'value="x"' in body
    assert 'name="env-0-secret"' in body and "checked" in body.split('name="env-0-secret"')[1][:80]


def test_a_secret_without_a_value_is_refused_next_to_it(signed_in):
    data = form(environment=[{"key": "API_TOKEN", "value": "", "secret": "on"}])
    response, delay = submit(signed_in, data, [upload()])
    errors_of(response)
    message = response.context["page"].environment.forms[0].errors["value"][0]
    assert message.startswith("Type the secret's value: it is never shown again")
    delay.assert_not_called()


def test_a_secret_value_keeps_the_api_limit_of_512_characters(signed_in):
    data = form(environment=[{"key": "API_TOKEN", "value": "s" * 513, "secret": "on"}])
    response, _ = submit(signed_in, data, [upload()])
    body = errors_of(response)
    assert response.context["page"].environment.forms[0].errors["value"] == [
        "Ensure this value has at most 512 characters (it has 513)."
    ]
    assert "s" * 513 not in body


def test_a_secret_box_ticked_alone_on_an_empty_row_is_not_a_500(signed_in):
    data = form(environment=[{"key": "", "value": "", "secret": "on"}])
    response, _ = submit(signed_in, data, [upload()])
    assert response.status_code in (200, 302)


def test_a_clone_keeps_the_secret_key_and_flag_and_asks_for_its_value(signed_in, alice):
    parent = TrainingJob.objects.create(
        owner=alice,
        name="parent-1",
        entry_point="train.py",
        environment={"API_TOKEN": SECRET, "MODE": "offline"},
        secret_environment=["API_TOKEN"],
    )
    response = signed_in.get(f"/jobs/{parent.name}/clone/")
    body = response.content.decode()
    assert response.status_code == 200
    assert SECRET not in body
    assert 'value="API_TOKEN"' in body and 'value="offline"' in body
    # The row of API_TOKEN (on PostgreSQL, jsonb keeps no key order: MODE may come first).
    row = re.search(r'name="env-(\d+)-key" value="API_TOKEN"', body).group(1)
    assert f'type="password" name="env-{row}-value"' in body
    assert f'name="env-{row}-secret"' in body and "checked" in body.split(f'name="env-{row}-secret"')[1][:80]
    # Sent as it is, the form says to type the value; typed, the clone runs with it.
    rows_back = [{"key": "API_TOKEN", "value": "", "secret": "on"}, {"key": "MODE", "value": "offline"}]
    response, _ = submit(
        signed_in, form(name="clone-1", parent="parent-1", environment=rows_back), [upload()]
    )
    assert "Type the secret" in errors_of(response)
    rows_back[0]["value"] = "new-secret-value"
    response, _ = submit(
        signed_in, form(name="clone-1", parent="parent-1", environment=rows_back), [upload()]
    )
    assert response.status_code == 302
    clone = TrainingJob.objects.get(name="clone-1")
    assert clone.environment["API_TOKEN"] == "new-secret-value"
    assert clone.secret_environment == ["API_TOKEN"]
    # The message about what changed against the parent names the key, never a value.
    page = signed_in.get("/jobs/clone-1/").content.decode()
    assert "new-secret-value" not in page and SECRET not in page


def test_the_preview_never_carries_the_environment(signed_in):
    data = {
        "name": "demo-1",
        "entry_point": "train.py",
        **rows("hp", []),
        **rows("env", [{"key": "API_TOKEN", "value": SECRET, "secret": "on"}]),
    }
    response = signed_in.post("/new/preview/", data)
    assert response.status_code == 200 and SECRET not in response.content.decode()


def test_the_new_job_view_keeps_posted_values_out_of_error_reports(rf, alice):
    from django.views.debug import SafeExceptionReporterFilter

    from jobs import views

    request = rf.post("/new/", {"env-0-value": SECRET})
    request.user = alice
    with patch.object(views.newjob, "NewJob", side_effect=RuntimeError("boom")), pytest.raises(RuntimeError):
        views.new_job(request)
    shown = SafeExceptionReporterFilter().get_post_parameters(request)
    assert shown["env-0-value"] != SECRET
