"""``GET /jobs/<name>/metrics.json``: its shape, ``since``, downsampling and size, who may read
it, a missing job, and bounded parameters with clear 400s."""

from __future__ import annotations

import json
import math

import pytest

from jobs import metrics
from jobs.models import TrainingJob

pytestmark = pytest.mark.django_db
T = 1_790_000_000_000


@pytest.fixture
def job(alice):
    job = TrainingJob.objects.create(owner=alice, name="charted-1", entry_point="t.py", status="InProgress")
    metrics.append_points(job, "loss", [(T + i * 1000, 1 / (i + 1)) for i in range(5)])
    metrics.append_points(job, "lr", [(T, 7e-05)])
    return job


def get(client, name="charted-1", **params):
    return client.get(f"/jobs/{name}/metrics.json", params)


def test_shape_for_a_teammate(client, bob, job):
    client.force_login(bob)  # not the owner: any team member reads any job's metrics
    response = get(client)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    data = response.json()
    assert (data["job"], data["status"], data["final"]) == ("charted-1", "InProgress", False)
    assert set(data["metrics"]) == {"loss", "lr"}
    loss = data["metrics"]["loss"]
    assert loss["points"] == [[i + 1, T + i * 1000, 1 / (i + 1)] for i in range(5)]
    assert (loss["count"], loss["dropped"], loss["min"], loss["max"], loss["last"]) == (5, 0, 0.2, 1.0, 0.2)
    assert data["metrics"]["lr"]["points"] == [[1, T, 7e-05]]


def test_since_brings_only_new_points_and_metric_picks(client, alice, job):
    client.force_login(alice)
    data = get(client, since=3).json()
    assert data["metrics"]["loss"]["points"] == [[4, T + 3000, 0.25], [5, T + 4000, 0.2]]
    assert data["metrics"]["lr"]["points"] == []
    assert data["metrics"]["loss"]["count"] == 5  # the totals still say where the series stands
    only = client.get("/jobs/charted-1/metrics.json?metric=lr").json()
    assert list(only["metrics"]) == ["lr"]


def test_long_series_are_downsampled_small(client, alice, job):
    for name in ("a", "b", "c"):
        metrics.append_points(job, name, [(T + i, math.sin(i / 50) + i * 1e-6) for i in range(100_000)])
    client.force_login(alice)
    response = get(client, metric=["a", "b", "c"])
    assert len(response.content) < 250_000
    data = response.json()["metrics"]
    for name in ("a", "b", "c"):
        assert data[name]["downsampled"] and data[name]["count"] == 100_000
        assert len(data[name]["points"]) <= metrics.DISPLAY_POINTS
        assert max(p[2] for p in data[name]["points"]) == data[name]["max"]
        assert min(p[2] for p in data[name]["points"]) == data[name]["min"]
    few = get(client, metric="a", points=8).json()["metrics"]["a"]["points"]
    assert len(few) <= 8


def test_signed_out_is_sent_to_sign_in(client, job):
    response = get(client)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_a_missing_job_is_404_even_by_its_name_in_another_case(client, alice, job):
    client.force_login(alice)
    assert get(client, name="no-such-job").status_code == 404
    assert get(client, name="CHARTED-1").status_code == 404


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ({"since": "-1"}, "since must be a whole number"),
        ({"since": "1e3"}, "since must be a whole number"),
        ({"since": "9" * 30}, "since must be a whole number"),
        ({"points": "7"}, "points must be a whole number from 8 to 10,000"),
        ({"points": "10001"}, "points must be a whole number from 8 to 10,000"),
        ({"points": "<script>"}, "points must be a whole number"),
        ({"metric": [f"m{i}" for i in range(41)]}, "At most 40 metric parameters"),
        ({"metric": "x" * 256}, "1 to 255 characters"),
    ],
)
def test_bad_parameters_are_clear_400s(client, alice, job, params, said):
    client.force_login(alice)
    response = get(client, **params)
    assert response.status_code == 400
    assert said in response.json()["error"]
    assert "<script>" not in response.content.decode()


def test_only_get(client, alice, job):
    client.force_login(alice)
    assert client.post("/jobs/charted-1/metrics.json").status_code in (403, 405)
    payload = json.loads(get(client).content)
    assert "metrics" in payload
