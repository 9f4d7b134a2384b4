"""``TrainingJob.search_text``, what the history's free-text search reads."""

import pytest

from jobs.history import filter_jobs
from jobs.models import SEARCH_TEXT_CUT, SEARCH_TEXT_MAX_BYTES, TrainingJob, searchable_text

pytestmark = pytest.mark.django_db


def make(owner, name, **fields):
    return TrainingJob.objects.create(owner=owner, name=name, entry_point="train.py", **fields)


def found(q, **filters):
    return [job.name for job in filter_jobs({"q": q, **filters})]


def test_save_keeps_it_up_to_date(alice):
    job = make(alice, "Iris-A", hyperparameters=[{"key": "epochs", "value": "10", "type": "number"}])
    assert job.search_text == "iris-a\nepochs=10"
    job.channels = [{"name": "train", "uri": "s3://Bucket/Iris/", "content_type": "text/csv"}]
    job.save(update_fields=["channels"])
    job.refresh_from_db()
    assert job.search_text == "iris-a\nepochs=10\ntrain\ns3://bucket/iris/\ntext/csv"


def test_it_finds_names_values_and_uris_in_any_case(alice):
    make(alice, "iris-a", hyperparameters=[{"key": "optimizer", "value": "AdamW", "type": "string"}])
    make(alice, "mnist-b", channels=[{"name": "train", "uri": "s3://data/Ünïcode/", "content_type": ""}])
    assert found("IRIS") == ["iris-a"]
    assert found("optimizer=adamw") == ["iris-a"]
    assert found("ünÏcode") == ["mnist-b"]  # not only ASCII, unlike SQLite's LIKE
    assert found("100%") == found("a_b") == []  # LIKE's wildcards are plain characters


def test_a_long_text_is_cut_and_still_searched(alice):
    huge = {
        "key": "config",
        "value": '{"layers": [' + "64, " * 1000 + '"needle-at-the-end"]}',
        "type": "json",
    }
    job = make(alice, "big-config", hyperparameters=[huge])
    make(alice, "small", hyperparameters=[{"key": "config", "value": "{}", "type": "json"}])
    assert job.search_text.startswith(SEARCH_TEXT_CUT)
    assert len(job.search_text.encode()) <= SEARCH_TEXT_MAX_BYTES
    assert "needle-at-the-end" not in job.search_text
    assert found("needle-at-the-end") == ["big-config"]
    assert found("needle-at-the-end", status="Pending", sort="name") == ["big-config"]


def test_it_is_cut_on_a_character_boundary():
    text = searchable_text("é-job", [{"key": "k", "value": "é" * 3000, "type": "string"}], [])
    assert text.startswith(SEARCH_TEXT_CUT) and len(text.encode()) <= SEARCH_TEXT_MAX_BYTES
    assert text.endswith("é")
