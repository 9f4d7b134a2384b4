"""Metric definitions on the new-job page: the row table into the request and the job, errors on
their row, SageMaker's limits, clone and resubmit, the presets, and the tester view (captures,
warnings, bounds, CSRF, sign-in, escaping)."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from jobs import metric_tester, metrics
from jobs.models import TrainingJob
from jobs.requests import build_training_request, settings_kwargs
from tests.test_new_job import errors_of, form, rows, submit, upload

pytestmark = pytest.mark.django_db

LOSS = r"loss=([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)"
ACC = r"acc: ([0-9.]+(?:[eE][-+]?[0-9]+)?)"


@pytest.fixture
def signed_in(client, alice):
    client.force_login(alice)
    return client


def with_metrics(definitions: list[dict[str, str]], **fields: str) -> dict[str, str]:
    return {**form(**fields), **rows("md", definitions)}


def row_errors(body: str, index: int) -> str:
    """The HTML of the metric table's row ``index`` (its inputs and its messages)."""
    start = body.index(f'name="md-{index}-name"')
    row_start = body.rindex('<tr class="row">', 0, start)
    return body[row_start : body.index("</tr>", start)]


# --- the table into the job and the request ------------------------------------------------------


def test_the_page_has_the_metric_table_the_presets_and_the_tester(signed_in):
    body = signed_in.get("/new/").content.decode()
    assert 'name="md-TOTAL_FORMS"' in body and 'name="md-0-name"' in body and 'name="md-0-regex"' in body
    assert 'data-add-row="md"' in body and 'data-limit="40"' in body
    assert 'id="metric-presets-data"' in body
    for preset in ("name=value", "name: value", "Hugging Face Trainer", "Keras progress"):
        assert preset in body
    assert 'hx-post="/new/metrics/test/"' in body and 'hx-trigger="load, input changed delay:300ms' in body
    assert 'name="mt-lines"' in body and 'name="mt-job"' in body


def test_rows_go_into_the_job_and_its_request(signed_in, local_role, settings):
    data = with_metrics([{"name": "train:loss", "regex": LOSS}, {"name": "val:acc", "regex": ACC}])
    response, _ = submit(signed_in, data, [upload()])
    assert response.status_code == 302, response.content.decode()[-2000:]
    job = TrainingJob.objects.get(name="linear-0001")
    assert job.metric_definitions == [
        {"name": "train:loss", "regex": LOSS},
        {"name": "val:acc", "regex": ACC},
    ]
    request = build_training_request(job, code_uri="s3://b/code.tar.gz", **settings_kwargs(settings))
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == [
        {"Name": "train:loss", "Regex": LOSS},
        {"Name": "val:acc", "Regex": ACC},
    ]


def test_a_job_without_metrics_sends_no_metric_definitions(signed_in, local_role, settings):
    response, _ = submit(signed_in, with_metrics([{"name": "", "regex": ""}]), [upload()])
    assert response.status_code == 302
    job = TrainingJob.objects.get(name="linear-0001")
    assert job.metric_definitions == []
    request = build_training_request(job, code_uri="s3://b/code.tar.gz", **settings_kwargs(settings))
    assert "MetricDefinitions" not in request["AlgorithmSpecification"]  # AWS refuses an empty list


def test_a_removed_row_is_not_sent(signed_in, local_role):
    data = with_metrics([{"name": "loss", "regex": LOSS}, {"name": "gone", "regex": "(((", "DELETE": "on"}])
    response, _ = submit(signed_in, data, [upload()])
    assert response.status_code == 302
    assert TrainingJob.objects.get(name="linear-0001").metric_definitions == [{"name": "loss", "regex": LOSS}]


# --- errors on their row ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("definition", "field", "message"),
    [
        ({"name": "loss", "regex": "loss=([0-9."}, "regex", "Does not compile in Python"),
        ({"name": "loss", "regex": "loss=[0-9.]+"}, "regex", "Has no capture group"),
        ({"name": "loss", "regex": "loss=([a-z]+)"}, "regex", "cannot capture a number"),
        ({"name": "loss", "regex": "(?P<v>[0-9.]+)"}, None, None),  # a warning only: submitted
        ({"name": "", "regex": LOSS}, "name", "This field is required."),
        ({"name": "n" * 256, "regex": LOSS}, "name", "at most 255 characters (it has 256)"),
        ({"name": "loss", "regex": "(" + "a" * 499 + ")"}, "regex", "at most 500 characters (it has 501)"),
    ],
)
def test_a_bad_row_says_why_on_its_row(signed_in, local_role, definition, field, message):
    data = with_metrics([{"name": "fine", "regex": LOSS}, definition])
    response, _ = submit(signed_in, data, [upload()])
    if message is None:
        assert response.status_code == 302
        return
    body = errors_of(response)
    assert not TrainingJob.objects.exists()
    mine, other = row_errors(body, 1), row_errors(body, 0)
    assert message in mine.replace("&#x27;", "'")
    assert 'class="errors"' not in other
    # Everything typed comes back (nothing lost), escaped.
    assert 'value="fine"' in other


def test_a_name_colliding_by_case_is_refused_on_the_second_row(signed_in, local_role):
    data = with_metrics([{"name": "Loss", "regex": LOSS}, {"name": "loss", "regex": LOSS}])
    body = errors_of(submit(signed_in, data, [upload()])[0])
    assert "differ only in case" in row_errors(body, 1)
    assert 'class="errors"' not in row_errors(body, 0)
    assert not TrainingJob.objects.exists()


def test_41_definitions_are_refused_40_are_fine(signed_in, local_role):
    many = [{"name": f"m{i}", "regex": rf"m{i}=([0-9.]+(?:[eE][-+]?[0-9]+)?)"} for i in range(41)]
    body = errors_of(submit(signed_in, with_metrics(many), [upload()])[0])
    assert "At most 40 metrics (SageMaker&#x27;s limit); this form has 41." in body
    assert not TrainingJob.objects.exists()
    response, _ = submit(signed_in, with_metrics(many[:40]), [upload()])
    assert response.status_code == 302
    assert len(TrainingJob.objects.get().metric_definitions) == 40


def test_a_crafted_row_count_cannot_make_the_server_build_rows_without_end(signed_in, local_role):
    data = with_metrics([{"name": "loss", "regex": LOSS}])
    data["md-TOTAL_FORMS"] = "100000000"
    response, _ = submit(signed_in, data, [upload()])
    assert response.status_code == 200
    assert not TrainingJob.objects.exists()


def test_a_form_from_before_the_metric_table_still_submits(signed_in, local_role):
    response, _ = submit(signed_in, form(), [upload()])  # no md-TOTAL_FORMS at all
    assert response.status_code == 302
    assert TrainingJob.objects.get().metric_definitions == []


# --- clone and resubmit ------------------------------------------------------------------------------


def test_a_clone_keeps_the_metric_definitions(signed_in, alice, local_role):
    parent = TrainingJob.objects.create(
        owner=alice,
        name="parent-1",
        entry_point="train.py",
        metric_definitions=[{"name": "loss", "regex": LOSS}, {"name": "<b>acc</b>", "regex": ACC}],
    )
    body = signed_in.get(f"/jobs/{parent.name}/clone/").content.decode()
    assert 'name="md-0-name" value="loss"' in body.replace(' maxlength="255"', "")
    assert "&lt;b&gt;acc&lt;/b&gt;" in body and "<b>acc</b>" not in body
    assert 'name="mt-job" id="id_mt-job" value="parent-1"' in body  # the tester reads the parent's log
    data = with_metrics(
        [{"name": "loss", "regex": LOSS}, {"name": "acc", "regex": ACC}], name="clone-1", parent="parent-1"
    )
    response, _ = submit(signed_in, data, [upload()])
    assert response.status_code == 302
    clone = TrainingJob.objects.get(name="clone-1")
    assert clone.metric_definitions == [{"name": "loss", "regex": LOSS}, {"name": "acc", "regex": ACC}]
    assert clone.parent == parent
    # What the job page lists as changed against the parent: the renamed metric.
    from jobs.detail import changes

    assert changes(parent, clone)[-2:] == [
        f"metric <b>acc</b> removed (was {ACC!r})",
        f"metric acc added: {ACC!r}",
    ]


def test_a_resubmitted_job_sends_its_metric_definitions_again(signed_in, alice, settings):
    job = TrainingJob.objects.create(
        owner=alice,
        name="refused-1",
        entry_point="train.py",
        status="SubmitFailed",
        metric_definitions=[{"name": "loss", "regex": LOSS}],
    )
    from unittest.mock import patch

    with patch("jobs.tasks.submit_job_task.delay") as delay:
        from django.test import TestCase

        with TestCase.captureOnCommitCallbacks(execute=True):
            response = signed_in.post(f"/jobs/{job.name}/resubmit/")
    assert response.status_code == 302
    delay.assert_called_once_with(job.pk)
    job.refresh_from_db()
    # What the worker sends: the request is built from the row at submit time.
    request = build_training_request(job, code_uri="s3://b/c.tar.gz", **settings_kwargs(settings))
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == [{"Name": "loss", "Regex": LOSS}]


# --- presets ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", metric_tester.PRESETS, ids=lambda p: p.key)
def test_each_preset_captures_its_example_with_exponents_and_no_error(preset):
    defs = [{"name": n, "regex": preset.regex(n)} for n in preset.names]
    assert not [p for p in metrics.check_definitions(defs) if p.level == "error"]
    found = {row["name"]: row["captures"] for row in metrics.test_lines(defs, [preset.example])}
    first = preset.names[0]
    assert found[first] and found[first][0]["value"] is not None, found
    assert all(c["value"] is not None for caps in found.values() for c in caps)


def test_the_presets_read_exponents_and_tell_similar_names_apart():
    hf = next(p for p in metric_tester.PRESETS if p.key == "huggingface")
    defs = [{"name": n, "regex": hf.regex(n)} for n in ("loss", "learning_rate", "eval_loss")]
    line = "{'eval_loss': 0.41, 'loss': 0.35, 'learning_rate': 5e-05, 'epoch': 1.0}"
    got = {r["name"]: [c["value"] for c in r["captures"]] for r in metrics.test_lines(defs, [line])}
    assert got == {"loss": [0.35], "learning_rate": [5e-05], "eval_loss": [0.41]}
    keras = next(p for p in metric_tester.PRESETS if p.key == "keras")
    defs = [{"name": n, "regex": keras.regex(n)} for n in ("loss", "val_loss")]
    line = "750/750 - 3s 4ms/step - loss: 0.2513 - accuracy: 0.9279 - val_loss: 1.5e-01"
    got = {r["name"]: [c["value"] for c in r["captures"]] for r in metrics.test_lines(defs, [line])}
    assert got == {"loss": [0.2513], "val_loss": [0.15]}
    equals = next(p for p in metric_tester.PRESETS if p.key == "equals")
    got = metrics.test_lines([{"name": "loss", "regex": equals.regex("loss")}], ["val_loss=9 loss=2e-3"])
    assert [c["value"] for c in got[0]["captures"]] == [0.002]


# --- the tester view ----------------------------------------------------------------------------------


def run_tester(client: Client, definitions: list[dict[str, str]], **fields: str):
    return client.post("/new/metrics/test/", {**rows("md", definitions), **fields})


def test_the_tester_shows_each_capture_and_its_value(signed_in):
    lines = "epoch 1 loss=0.52\nnothing here\nepoch 2 loss=7e-05 acc: 0.91\n"
    response = run_tester(
        signed_in, [{"name": "loss", "regex": LOSS}, {"name": "acc", "regex": ACC}], **{"mt-lines": lines}
    )
    assert response.status_code == 200
    body = response.content.decode()
    results = response.context["results"]
    assert [(c["line"], c["text"], c["value"]) for c in results[0]["captures"]] == [
        (1, "0.52", 0.52),
        (3, "7e-05", 7e-05),
    ]
    assert [(c["line"], c["value"]) for c in results[1]["captures"]] == [(3, 0.91)]
    assert "2 captures, 2 numbers" in body and "Tested on 3 pasted lines" in body
    assert "<html" not in body  # a fragment


def test_the_tester_warns_about_a_capture_that_is_not_a_number_and_a_lost_exponent(signed_in):
    lines = "loss=nan\nlr=7e-05\n"
    defs = [{"name": "loss", "regex": r"loss=(\S+)"}, {"name": "lr", "regex": r"lr=([0-9.]+)"}]
    response = run_tester(signed_in, defs, **{"mt-lines": lines})
    loss, lr = response.context["results"]
    assert loss["captures"][0]["value"] is None and "refused" in loss["captures"][0]["warning"]
    assert lr["captures"][0]["value"] == 7 and "exponent" in lr["captures"][0]["warning"]
    assert any("exponent" in p["message"] for p in lr["warnings"])
    body = response.content.decode()
    assert "not recorded" in body and "Warning:" in body


def test_the_tester_says_when_a_regex_does_not_compile_or_differs_on_aws(signed_in):
    defs = [
        {"name": "bad", "regex": "loss=(["},
        {"name": "named", "regex": r"loss=(?P<v>[0-9.]+(?:e-?[0-9]+)?)"},
    ]
    response = run_tester(signed_in, defs, **{"mt-lines": "loss=0.5"})
    bad, named = response.context["results"]
    assert bad["errors"] and "Does not compile in Python" in bad["errors"][0]["message"]
    assert not bad["captures"]
    assert any("AWS (Java) refuses it" in p["message"] for p in named["warnings"])
    assert named["captures"][0]["value"] == 0.5
    assert "not usable" in response.content.decode()


def test_the_tester_output_is_escaped(signed_in):
    lines = "<script>alert(1)</script> loss=<img src=x onerror=alert(1)>\n"
    defs = [{"name": "<script>n</script>", "regex": r"loss=(\S+)"}]
    body = run_tester(signed_in, defs, **{"mt-lines": lines}).content.decode()
    assert "<script>" not in body and "<img" not in body
    assert "&lt;script&gt;n&lt;/script&gt;" in body and "&lt;img" in body


def test_the_tester_bounds_what_it_reads_and_says_so(signed_in):
    many = "\n".join(f"loss={i}" for i in range(metric_tester.MAX_LINES + 500))
    response = run_tester(signed_in, [{"name": "loss", "regex": LOSS}], **{"mt-lines": many})
    assert response.status_code == 200
    assert any("first 2,000 of 2,500 pasted lines" in n for n in response.context["notes"])
    assert response.context["results"][0]["count"] == metric_tester.MAX_LINES
    # A 1 MB line: tested on its start, said plainly, quickly.
    huge = "loss=0.25 " + "x" * 1_000_000
    response = run_tester(signed_in, [{"name": "loss", "regex": LOSS}], **{"mt-lines": huge})
    assert response.status_code == 200
    notes = " ".join(response.context["notes"])
    assert "first 256 KiB" in notes and "tested on their start only" in notes
    assert response.context["results"][0]["captures"][0]["value"] == 0.25
    assert len(response.content) < 50_000


def test_a_catastrophically_slow_regex_is_cut_not_hung(signed_in):
    lines = "\n".join("a" * 5000 + "!" for _ in range(20))
    import time

    started = time.monotonic()
    response = run_tester(signed_in, [{"name": "slow", "regex": r"(a+)+$"}], **{"mt-lines": lines})
    assert response.status_code == 200
    assert time.monotonic() - started < 10
    messages = " ".join(p["message"] for p in response.context["results"][0]["problems"])
    assert "slow" in messages.lower()


def test_the_tester_reads_the_log_of_a_job_picked_by_name(signed_in, alice, monkeypatch):
    job = TrainingJob.objects.create(
        owner=alice,
        name="earlier-1",
        entry_point="train.py",
        status="Completed",
        submitted_at="2026-01-01T00:00:00Z",
        environment={"TOKEN": "sk-secret-123"},
        secret_environment=["TOKEN"],
    )
    events = [{"message": "step 1 loss=0.9"}, {"message": "token sk-secret-123 loss=0.8"}]

    class Backend:
        def tail_training_logs(self, name, lines):
            assert name == job.name and lines == metric_tester.MAX_LINES
            return events, "token", False

    monkeypatch.setattr("jobs.detail.get_backend", lambda: Backend())
    response = run_tester(signed_in, [{"name": "loss", "regex": LOSS}], **{"mt-job": "EARLIER-1"})
    assert [c["value"] for c in response.context["results"][0]["captures"]] == [0.9, 0.8]
    body = response.content.decode()
    assert "the log of earlier-1" in body
    assert "sk-secret-123" not in body  # the log is shown through the job's redaction


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ("no-such-job", "There is no job called"),
        ("bad name!", "is not a job name"),
        ("x" * 300, "is not a job name"),
    ],
)
def test_a_job_that_cannot_be_read_is_a_message(signed_in, job, message):
    response = run_tester(signed_in, [{"name": "loss", "regex": LOSS}], **{"mt-job": job})
    assert response.status_code == 200
    assert message in response.content.decode().replace("&#x27;", "'")


def test_a_job_without_a_log_says_so(signed_in, alice):
    TrainingJob.objects.create(owner=alice, name="pending-1", entry_point="t.py", status="Pending")
    body = run_tester(
        signed_in, [{"name": "loss", "regex": LOSS}], **{"mt-job": "pending-1"}
    ).content.decode()
    assert "has no log (yet)" in body


def test_the_tester_without_rows_or_lines_asks_for_them(signed_in):
    assert "Add a metric" in run_tester(signed_in, [], **{"mt-lines": "loss=1"}).content.decode()
    assert "Paste a few lines" in run_tester(signed_in, [{"name": "loss", "regex": LOSS}]).content.decode()


@pytest.mark.parametrize(
    "data",
    [
        {},  # no management form: a page from another version
        {"md-TOTAL_FORMS": "lots", "md-INITIAL_FORMS": "0"},
        {"md-TOTAL_FORMS": "99999999", "md-INITIAL_FORMS": "0", "md-0-name": "x", "md-0-regex": "x"},
        {**rows("md", [{"name": "x" * 5000, "regex": "(" * 5000}]), "mt-lines": "\x00 loss=1"},
    ],
)
def test_crafted_tester_requests_are_answered_not_failed(signed_in, data):
    response = signed_in.post("/new/metrics/test/", data)
    assert response.status_code == 200


def test_a_body_that_is_not_utf8_is_answered_not_failed(signed_in):
    body = b"md-TOTAL_FORMS=1&md-INITIAL_FORMS=0&md-0-name=loss&md-0-regex=%28.%2A%29&mt-lines=loss%3D%ff%fe1"
    response = signed_in.post("/new/metrics/test/", body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200


def test_the_tester_needs_a_signed_in_user_and_a_post(client, signed_in):
    anonymous = Client()
    response = anonymous.post("/new/metrics/test/", rows("md", [{"name": "loss", "regex": LOSS}]))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert signed_in.get("/new/metrics/test/").status_code == 405


def test_the_tester_needs_the_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    data = {**rows("md", [{"name": "loss", "regex": LOSS}]), "mt-lines": "loss=1"}
    assert client.post("/new/metrics/test/", data).status_code == 403
    page = client.get("/new/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert client.post("/new/metrics/test/", data, headers={"X-CSRFToken": token}).status_code == 200
