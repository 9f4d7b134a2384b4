import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from jobs.models import TrainingJob

pytestmark = pytest.mark.django_db


def make_job(owner, name, *, status="Completed", created=None, **fields):
    start = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    defaults = {
        "entry_point": "train.py",
        "instance_type": "ml.m5.large",
        "hyperparameters": [{"key": "epochs", "value": "10", "type": "number"}],
        "channels": [{"name": "train", "uri": "s3://anyjob-data/iris/train.csv", "content_type": "text/csv"}],
        "training_start_time": start,
        "training_end_time": start + timedelta(minutes=7, seconds=30),
    }
    job = TrainingJob.objects.create(owner=owner, name=name, status=status, **{**defaults, **fields})
    if created is not None:
        TrainingJob.objects.filter(pk=job.pk).update(created_at=created)
        job.refresh_from_db()
    return job


def names(response):
    return [job.name for job in response.context["page"]]


@pytest.fixture
def jobs(alice, bob):
    return [
        make_job(alice, "iris-a", created=datetime(2026, 11, 1, 9, tzinfo=UTC)),
        make_job(
            bob,
            "mnist-b",
            status="Failed",
            created=datetime(2026, 11, 10, 9, tzinfo=UTC),
            hyperparameters=[{"key": "learning_rate", "value": "0.01", "type": "number"}],
        ),
        make_job(
            alice,
            "resnet-c",
            status="InProgress",
            created=datetime(2026, 11, 20, 9, tzinfo=UTC),
            channels=[{"name": "train", "uri": "s3://imagenet-bucket/train/", "content_type": "image"}],
            training_end_time=None,
        ),
    ]


def test_it_sends_anonymous_visitors_to_sign_in(client):
    response = client.get("/jobs/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/jobs/"


def test_it_lists_every_job_newest_first(client, bob, jobs):
    client.force_login(bob)
    response = client.get("/jobs/")
    assert response.status_code == 200
    assert names(response) == ["resnet-c", "mnist-b", "iris-a"]
    assert b'href="/jobs/iris-a/"' in response.content
    assert b"7 min 30 s" in response.content
    assert b"ml.m5.large" in response.content


def test_it_filters_by_status(client, alice, jobs):
    client.force_login(alice)
    assert names(client.get("/jobs/", {"status": "Failed"})) == ["mnist-b"]


def test_it_filters_by_owner(client, alice, jobs):
    client.force_login(alice)
    assert names(client.get("/jobs/", {"owner": "alice"})) == ["resnet-c", "iris-a"]
    assert names(client.get("/jobs/", {"owner": "nobody"})) == []


def test_it_filters_by_created_date_range(client, alice, jobs):
    client.force_login(alice)
    response = client.get("/jobs/", {"created_from": "2026-11-05", "created_to": "2026-11-10"})
    assert names(response) == ["mnist-b"]
    assert names(client.get("/jobs/", {"created_from": "2026-11-20"})) == ["resnet-c"]


def test_it_searches_names_hyperparameters_and_channels(client, alice, jobs):
    client.force_login(alice)
    assert names(client.get("/jobs/", {"q": "IRIS-A"})) == ["iris-a"]
    assert names(client.get("/jobs/", {"q": "learning_rate"})) == ["mnist-b"]
    assert names(client.get("/jobs/", {"q": "imagenet-bucket"})) == ["resnet-c"]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "Exploded"},
        {"created_from": "yesterday"},
        {"created_from": "2026-11-20", "created_to": "2026-11-01"},
        {"sort": "owner__password"},
    ],
)
def test_it_shows_bad_filters_and_the_unfiltered_list(client, alice, jobs, params):
    client.force_login(alice)
    response = client.get("/jobs/", {**params, "owner": "bob"})
    assert response.status_code == 200
    assert response.context["form"].errors
    assert b'class="errors"' in response.content
    assert names(response) == ["resnet-c", "mnist-b", "iris-a"]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("name", ["iris-a", "mnist-b", "resnet-c"]),
        ("-name", ["resnet-c", "mnist-b", "iris-a"]),
        ("created", ["iris-a", "mnist-b", "resnet-c"]),
        ("-created", ["resnet-c", "mnist-b", "iris-a"]),
        ("status", ["iris-a", "mnist-b", "resnet-c"]),
        ("-status", ["resnet-c", "mnist-b", "iris-a"]),
    ],
)
def test_it_sorts_by_whitelisted_columns(client, alice, jobs, sort, expected):
    client.force_login(alice)
    assert names(client.get("/jobs/", {"sort": sort})) == expected


def test_pagination_keeps_the_filters(client, alice, bob):
    for i in range(60):
        make_job(alice, f"sweep-{i:03d}")
    make_job(bob, "other-job")
    client.force_login(alice)
    response = client.get("/jobs/", {"owner": "alice", "sort": "name"})
    assert names(response)[0] == "sweep-000"
    assert len(names(response)) == 50
    assert b'href="?owner=alice&amp;sort=name&amp;page=2"' in response.content
    second = client.get("/jobs/", {"owner": "alice", "sort": "name", "page": "2"})
    assert names(second) == [f"sweep-{i:03d}" for i in range(50, 60)]
    assert b'href="?owner=alice&amp;sort=name&amp;page=1"' in second.content


def test_a_bad_page_number_is_not_an_error(client, alice, jobs):
    client.force_login(alice)
    assert client.get("/jobs/", {"page": "lots"}).status_code == 200
    assert client.get("/jobs/", {"page": "999"}).status_code == 200


def test_the_query_count_does_not_grow_with_the_page_size(client, alice, bob, django_assert_max_num_queries):
    for i in range(50):
        make_job(alice if i % 2 else bob, f"many-{i:03d}")
    client.force_login(alice)
    with django_assert_max_num_queries(6):
        response = client.get("/jobs/")
    assert len(names(response)) == 50


def read_csv(response):
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_it_exports_the_filtered_list_as_csv(client, alice, jobs):
    client.force_login(alice)
    response = client.get("/jobs/", {"owner": "alice", "format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = read_csv(response)
    assert rows[0][:3] == ["name", "status", "owner"]
    assert [row[0] for row in rows[1:]] == ["resnet-c", "iris-a"]
    assert rows[2][4] == "450"


def test_the_csv_export_guards_against_formulas(client, alice):
    make_job(alice, "formula", entry_point='=HYPERLINK("http://evil")', model_artifacts="@SUM(A1)")
    client.force_login(alice)
    row = dict(zip(*read_csv(client.get("/jobs/", {"format": "csv"})), strict=True))
    assert row["entry_point"] == '\'=HYPERLINK("http://evil")'
    assert row["model_artifacts"] == "'@SUM(A1)"
    assert row["instance_count"] == "1"


def test_it_exports_the_filtered_list_as_json(client, alice, jobs):
    client.force_login(alice)
    response = client.get("/jobs/", {"status": "Failed", "format": "json"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    data = json.loads(b"".join(response.streaming_content))
    assert [row["name"] for row in data] == ["mnist-b"]
    assert data[0]["owner"] == "bob"
    assert data[0]["duration_seconds"] == 450


def test_the_json_export_of_nothing_is_an_empty_list(client, alice):
    client.force_login(alice)
    assert json.loads(b"".join(client.get("/jobs/", {"format": "json"}).streaming_content)) == []


def test_the_table_refreshes_itself_while_jobs_run(client, alice):
    from jobs.models import TrainingJob

    TrainingJob.objects.create(owner=alice, name="running-1", entry_point="t.py", status="InProgress")
    client.force_login(alice)
    full = client.get("/jobs/?status=InProgress")
    assert b'hx-trigger="every 3s"' in full.content
    fragment = client.get("/jobs/?status=InProgress", HTTP_HX_REQUEST="true")
    assert fragment.content.lstrip().startswith(b'<div id="history-table"')
    assert b"<html" not in fragment.content
    TrainingJob.objects.filter(name="running-1").update(status="Completed")
    assert b"hx-trigger" not in client.get("/jobs/").content


def test_a_search_with_few_matches_is_not_counted_separately(client, alice):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from jobs.models import TrainingJob

    for i in range(3):
        TrainingJob.objects.create(owner=alice, name=f"rare-{i}", entry_point="t.py")
    client.force_login(alice)
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/jobs/?q=rare-")
    assert response.context["page"].paginator.count == 3
    assert [j.name for j in response.context["page"]] == ["rare-2", "rare-1", "rare-0"]
    assert not any("COUNT(" in q["sql"].upper() for q in queries.captured_queries)


def test_a_page_costs_the_same_queries_whatever_matches(client, alice):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from jobs.models import TrainingJob

    TrainingJob.objects.bulk_create(
        TrainingJob(owner=alice, name=f"many-{i:03d}", entry_point="t.py", search_text=f"many-{i:03d}")
        for i in range(120)
    )
    client.force_login(alice)
    counts = []
    for url in ["/jobs/", "/jobs/?q=many", "/jobs/?q=many&page=2", "/jobs/?page=3"]:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code == 200
        counts.append(len(queries))
    # On PostgreSQL a search first lists the cut texts matching in their JSON (jobs.history._search).
    search = 6 if connection.vendor == "postgresql" else 5
    assert counts == [5, search, search, 5]
    assert len(response.context["page"]) == 20 and response.context["page"].paginator.count == 120


def test_the_exports_never_carry_a_secret_value(client, alice):
    secret = "hunter2-sk-live-0123456789"
    make_job(alice, "secret-a", environment={"API_TOKEN": secret}, secret_environment=["API_TOKEN"])
    client.force_login(alice)
    for url in ["/jobs/", "/jobs/?format=csv", "/jobs/?format=json", "/jobs/?q=secret"]:
        response = client.get(url, HTTP_HX_REQUEST="true") if url.endswith("secret") else client.get(url)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert response.status_code == 200 and b"secret-a" in body, url
        assert secret.encode() not in body, url
