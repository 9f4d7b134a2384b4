"""The compare page (``/compare/?jobs=a,b``) and its overlays' ``metrics.json``."""

from __future__ import annotations

import json
import math
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs import compare
from jobs.metrics import append_points
from jobs.models import TrainingJob

pytestmark = pytest.mark.django_db

T0 = 1_764_000_000_000  # unix ms


def make_job(owner, name: str, **fields) -> TrainingJob:
    defaults = {
        "entry_point": "train.py",
        "status": "Completed",
        "source_sha256": "a" * 64,
        "hyperparameters": [
            {"key": "epochs", "value": "30", "type": "number"},
            {"key": "learning-rate", "value": "0.05", "type": "number"},
        ],
        "channels": [{"name": "train", "uri": "s3://data/train/", "content_type": "text/csv"}],
    }
    return TrainingJob.objects.create(owner=owner, name=name, **{**defaults, **fields})


def curve(job: TrainingJob, name: str, values: list[float]) -> None:
    append_points(job, name, [(T0 + 1000 * i, v) for i, v in enumerate(values)])


def page(client, *names: str, **params: str):
    query = "&".join([f"jobs={','.join(names)}", *(f"{k}={v}" for k, v in params.items())])
    return client.get(f"/compare/?{query}")


def rows_of(body: str) -> dict[str, list[str]]:
    """The table's rows as label → cells (text), read from the HTML as a person sees it."""
    table = body.split('id="differences"', 1)[1].split("</table>", 1)[0]
    out = {}
    for row in re.findall(r'<tr class="(?:differs|same)" data-row="([^"]*)">(.*?)</tr>', table, re.S):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row[1], re.S)]
        out[row[0]] = cells
    return out


@pytest.fixture
def pair(alice, bob):
    a = make_job(alice, "lr-small")
    b = make_job(
        bob,
        "lr-big",
        hyperparameters=[
            {"key": "epochs", "value": "30", "type": "number"},
            {"key": "learning-rate", "value": "0.5", "type": "number"},
            {"key": "optimizer", "value": "adam", "type": "string"},
        ],
        channels=[{"name": "train", "uri": "s3://data/train-v2/", "content_type": "text/csv"}],
        instance_count=2,
    )
    curve(a, "val_loss", [0.9, 0.5, 0.3, 0.25])
    curve(b, "val_loss", [0.8, 0.6, 0.55, 0.4])
    curve(a, "accuracy", [0.5, 0.7, 0.8])
    curve(b, "accuracy", [0.6, 0.75, 0.9])
    return a, b


def test_it_needs_a_signed_in_user(client, pair):
    for url in ("/compare/?jobs=lr-small,lr-big", "/compare/metrics.json?jobs=lr-small,lr-big"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=/compare/")


def test_the_table_shows_only_what_differs(client, bob, pair):
    client.force_login(bob)
    response = page(client, "lr-small", "lr-big")
    assert response.status_code == 200
    rows = rows_of(response.content.decode())
    assert rows["Hyperparameters: learning-rate"] == ["0.05", "0.5"]
    assert rows["Hyperparameters: optimizer"] == ["—", "adam"]
    assert rows["Channels: train"] == [
        "s3://data/train/ · text/csv · File",
        "s3://data/train-v2/ · text/csv · File",
    ]
    assert rows["Resources: instance count"] == ["1", "2"]
    assert rows["Job: owner"] == ["alice", "bob"]
    assert rows["Metrics: val_loss (last)"] == ["0.25", "0.4"]
    assert rows["Metrics: val_loss (min)"] == ["0.25", "0.4"]
    assert rows["Metrics: accuracy (max)"] == ["0.8", "0.9"]
    # The same everywhere: hidden, and counted.
    hidden = ("Hyperparameters: epochs", "Code: entry point", "Code: code sha256", "Resources: instance type")
    assert not set(hidden) & set(rows)
    body = response.content.decode()
    assert "hidden" in body and 'id="toggle-rows"' in body


def test_the_toggle_shows_everything_and_keeps_the_state_in_the_url(client, bob, pair):
    client.force_login(bob)
    body = page(client, "lr-small", "lr-big", x="rel", smooth="0.3").content.decode()
    toggle = re.search(r'<a href="([^"]+)" id="toggle-rows">Show everything</a>', body).group(1)
    toggle = toggle.replace("&amp;", "&")
    for kept in ("all=1", "x=rel", "smooth=0.3", "jobs=lr-small%2Clr-big"):
        assert kept in toggle
    full = client.get(toggle)
    rows = rows_of(full.content.decode())
    assert rows["Hyperparameters: epochs"] == ["30", "30"]
    assert rows["Code: entry point"] == ["train.py", "train.py"]
    assert rows["Resources: instance type"] == ["ml.m5.large", "ml.m5.large"]
    assert "Show what differs only" in full.content.decode()


def test_the_best_value_of_each_metric_row_follows_its_direction(client, bob, pair):
    client.force_login(bob)
    body = page(client, "lr-small", "lr-big").content.decode()
    row = re.search(r'data-row="Metrics: val_loss \(last\)">(.*?)</tr>', body, re.S).group(1)
    assert re.findall(r"<td( class=\"best\")?>", row) == [' class="best"', ""]  # lower is better
    row = re.search(r'data-row="Metrics: accuracy \(last\)">(.*?)</tr>', body, re.S).group(1)
    assert re.findall(r"<td( class=\"best\")?>", row) == ["", ' class="best"']  # higher is better
    assert "lower is better" in body and "higher is better" in body


@pytest.mark.parametrize(
    ("jobs", "status", "message"),
    [
        ("", 400, "Pick at least 2 jobs"),
        ("lr-small", 400, "Only one job given (lr-small)"),
        ("lr-small,lr-small", 400, "Listed more than once: lr-small"),
        ("lr-small,LR-SMALL", 400, "Listed more than once: LR-SMALL"),
        ("lr-small,no-such-job", 404, "No such job: no-such-job."),
        (",".join(f"job-{i}" for i in range(21)), 400, "21 jobs given: compare at most 20"),
        ("x" * 5000, 400, "Too many jobs"),
    ],
)
def test_bad_lists_get_a_clear_page_not_a_500(client, bob, pair, jobs, status, message):
    client.force_login(bob)
    response = client.get("/compare/", {"jobs": jobs})
    assert response.status_code == status
    assert message in response.content.decode()
    assert 'id="compare-error"' in response.content.decode()
    data = client.get("/compare/metrics.json", {"jobs": jobs})
    assert data.status_code == status
    assert message in data.json()["error"]


def test_nothing_a_user_typed_runs_as_html(client, alice, bob):
    evil = "<script>alert(1)</script>"
    make_job(alice, "evil-a", hyperparameters=[{"key": evil, "value": evil, "type": "string"}])
    b = make_job(alice, "evil-b", hyperparameters=[{"key": evil, "value": "x", "type": "string"}])
    curve(b, evil, [1.0, 2.0])
    client.force_login(bob)
    body = page(client, "evil-a", "evil-b", metric=evil).content.decode()
    assert evil not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body  # in the table, as text
    # The parallel coordinates' JSON is escaped for a <script> block too.
    block = r'<script id="parallel-data" type="application/json">(.*?)</script>'
    data = re.search(block, body, re.S).group(1)
    assert "<" not in data
    assert json.loads(data)["axes"][0]["name"] == evil
    # A name that is not a job's is shown escaped in the error.
    error = client.get("/compare/", {"jobs": f"evil-a,{evil}"}).content.decode()
    assert evil not in error and "No such job: &lt;script&gt;" in error


def test_secret_values_are_not_shown(client, alice, bob):
    secret = "hunter2-very-secret"
    make_job(
        alice,
        "with-secret",
        environment={"TOKEN": secret},
        secret_environment=["TOKEN"],
        hyperparameters=[{"key": "token", "value": secret, "type": "string"}],
    )
    make_job(alice, "without-secret")
    client.force_login(bob)
    body = page(client, "with-secret", "without-secret", all="1").content.decode()
    assert secret not in body
    assert "secret: set at submit" in body


def many_jobs(owner, n: int) -> list[str]:
    names = []
    for i in range(n):
        job = make_job(
            owner,
            f"many-{i:02d}",
            hyperparameters=[
                {"key": "learning-rate", "value": str(0.001 * (i + 1)), "type": "number"},
                {"key": "optimizer", "value": ["adam", "sgd"][i % 2], "type": "string"},
            ],
            parent=None,
        )
        curve(job, "loss", [1.0 / (k + 1 + i) for k in range(50)])
        curve(job, "accuracy", [k / 50 for k in range(50)])
        names.append(job.name)
    return names


def test_queries_are_the_same_for_2_and_20_jobs(client, alice, bob):
    names = many_jobs(alice, 20)
    client.force_login(bob)
    counts = {}
    for n in (2, 20):
        for url in ("/compare/", "/compare/metrics.json"):
            with CaptureQueriesContext(connection) as captured:
                response = client.get(url, {"jobs": ",".join(names[:n])})
            assert response.status_code == 200
            counts[(n, url)] = len(captured)
    assert counts[(2, "/compare/")] == counts[(20, "/compare/")], counts
    assert counts[(2, "/compare/metrics.json")] == counts[(20, "/compare/metrics.json")], counts
    assert counts[(20, "/compare/")] <= 6, counts


def test_metrics_json_has_a_line_per_job_in_order(client, bob, pair):
    client.force_login(bob)
    data = client.get("/compare/metrics.json", {"jobs": "lr-big,lr-small"}).json()
    assert [j["name"] for j in data["jobs"]] == ["lr-big", "lr-small"]
    big = data["jobs"][0]["metrics"]["val_loss"]
    assert big["points"] == [[1, T0, 0.8], [2, T0 + 1000, 0.6], [3, T0 + 2000, 0.55], [4, T0 + 3000, 0.4]]
    assert (big["last"], big["min"], big["max"], big["count"]) == (0.4, 0.4, 0.8, 4)


def test_a_long_series_is_thinned_and_keeps_its_extremes(client, alice, bob):
    a, b = make_job(alice, "long-a"), make_job(alice, "long-b")
    values = [math.sin(k / 500) for k in range(20_000)]
    values[12_345] = 50.0  # a spike between buckets' first and last points
    values[777] = -50.0
    curve(a, "loss", values)
    curve(b, "loss", [1.0, 0.5])
    client.force_login(bob)
    data = client.get("/compare/metrics.json", {"jobs": "long-a,long-b"}).json()
    points = data["jobs"][0]["metrics"]["loss"]["points"]
    assert len(points) <= compare.MAX_LINE_POINTS
    steps = [p[0] for p in points]
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 20_000
    assert [12_346, T0 + 12_345_000, 50.0] in points
    assert [778, T0 + 777_000, -50.0] in points
    assert data["jobs"][1]["metrics"]["loss"]["points"] == [[1, T0, 1.0], [2, T0 + 1000, 0.5]]


def test_parallel_coordinates_scale_numbers_and_order_categories(alice):
    jobs = []
    for i, (lr, opt) in enumerate([("0.0001", "sgd"), ("0.1", "adam"), ("0.001", "adamw")]):
        jobs.append(
            make_job(
                alice,
                f"pc-{i}",
                hyperparameters=[
                    {"key": "lr", "value": lr, "type": "number"},
                    {"key": "opt", "value": opt, "type": "string"},
                    {"key": "epochs", "value": "10", "type": "number"},
                ],
            )
        )
    metrics = {jobs[0].pk: {"loss": {"last": 2.0}}, jobs[1].pk: {"loss": {"last": 4.0}}}
    data = compare.parallel(jobs, metrics, "loss", "last")
    names = [a["name"] for a in data["axes"]]
    assert names == ["lr", "opt", "loss (last)"]  # epochs is the same for all: no axis
    lr, opt, loss = data["axes"]
    assert lr["kind"] == "number" and lr["log"]  # 0.0001 … 0.1: three decades
    assert opt["kind"] == "category" and [t[1] for t in opt["ticks"]] == ["adam", "adamw", "sgd"]
    assert loss["kind"] == "number" and not loss["log"]
    assert [line["values"] for line in data["lines"]] == [
        [0.0, 1.0, 0.0],
        [1.0, 0.0, 1.0],
        [pytest.approx(1 / 3, abs=1e-5), 0.5, None],  # log scale; no loss for the third
    ]


def test_compare_is_not_taken_for_a_job_name(client, bob, pair):
    client.force_login(bob)
    response = client.get("/compare/")
    assert response.status_code == 400
    assert "Pick at least 2 jobs" in response.content.decode()
