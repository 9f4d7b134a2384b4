"""The local backend records every metric capture with its time as it reads a job's log
(``LocalMetricBatch``), answers ``metric_points`` with what is new, and the dashboard stores
it (``jobs.metric_poll``): real jobs in the sandbox, and the writer on its own for the bound."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from jobs import metric_poll, metrics
from jobs.backends.base import MetricsWanted
from jobs.backends.local import logs
from jobs.backends.local.metric_points import metric_points
from jobs.backends.local.models import LocalMetricBatch, LocalTrainingJob
from jobs.models import MetricSeries, TrainingJob
from tests.local.jobs import training_request, unique, wait_for

LINES = 100_000

#: Prints 100,000 metric lines as fast as it can (far more than 100,000 a minute), with
#: exponents and signs, a non-number, a 1 MB line and lines a catastrophic regex stalls on.
FLOOD = (
    "import sys\n"
    "print('a' * 5000 + '!', flush=True)\n"
    "print('b' * 1_000_000 + ' loss=1', flush=True)\n"
    f"for i in range({LINES}):\n"
    "    print(f'step {i} loss={(i + 1) * 1e-05:.6e} delta=-{i}.5E+2')\n"
    "    if i % 25_000 == 0:\n"
    "        print('a' * 5000 + '!')\n"
    "print('loss=nan delta=inf', flush=True)\n"
)
DEFINITIONS = [
    {"Name": "loss", "Regex": r"loss=([-+0-9.eE]+|nan)"},
    {"Name": "delta", "Regex": r"delta=([-+0-9.eE]+|inf)"},
    {"Name": "slow", "Regex": r"(a|a)+$"},
]


@pytest.fixture
def code(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / "flood.py").write_text(FLOOD)
    (code / "two.py").write_text(
        "import time\n"
        "for i in range(40):\n"
        "    print(f'epoch={i} loss={1 / (i + 1):.4f} acc={i / 40:.3f}', flush=True)\n"
        "    time.sleep(0.05)\n"
    )
    return code


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_flood_of_metric_lines_is_recorded_whole_without_stalling(backend, output, code, alice) -> None:
    name = unique("metric-flood")
    request = training_request(name, code, "flood.py", output)
    request["AlgorithmSpecification"]["MetricDefinitions"] = DEFINITIONS
    started = time.monotonic()
    backend.create_training_job(request)
    job = wait_for(backend, name, timeout=110)
    took = time.monotonic() - started
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert took < 100, f"{LINES:,} metric lines took {took:.0f} s"

    # FinalMetricDataList: the last value of each; nan and inf were refused, not recorded.
    final = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert final == {"loss": pytest.approx(LINES * 1e-05), "delta": -(LINES - 0.5) * 100}

    # The catastrophic regex gave up after a few bounded tries, and the job says so (its
    # log did too, but keeps only the newest lines).
    notes = backend.job_notes(name)
    assert any("metric 'slow'" in m and "no longer read" in m for m in notes), notes

    # Every capture, in order, with its exponent; the 1 MB line was cut before its loss=1.
    new = backend.metric_points([MetricsWanted(job=name, metrics=("loss", "delta"))])[name]
    loss, delta = new["loss"].points, new["delta"].points
    assert len(loss) == len(delta) == LINES
    assert [v for _, v in loss[:3]] == [1e-05, 2e-05, 3e-05]
    assert delta[0][1] == -50.0 and delta[-1][1] == -(LINES - 0.5) * 100
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(loss))

    # The dashboard's side: the poller's store reads what is new, once.
    row = TrainingJob.objects.create(
        owner=alice, name=name, entry_point="flood.py", status="Completed", metric_definitions=DEFINITIONS
    )
    assert metric_poll.store(backend, [row]) == 2 * LINES
    assert metric_poll.store(backend, [row]) == 0
    series = {s.name: s for s in MetricSeries.objects.filter(job=row)}
    assert (series["loss"].count, series["loss"].min, series["loss"].last) == (LINES, 1e-05, LINES * 1e-05)
    shown = metrics.display_series(row)["metrics"]
    assert shown["loss"]["downsampled"] and len(shown["loss"]["points"]) <= metrics.DISPLAY_POINTS


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_points_arrive_while_the_job_runs(backend, output, code, alice) -> None:
    name = unique("metric-live")
    request = training_request(name, code, "two.py", output)
    request["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "loss", "Regex": r"loss=([0-9.]+)"},
        {"Name": "acc", "Regex": r"acc=([0-9.]+)"},
    ]
    backend.create_training_job(request)
    row = TrainingJob.objects.create(
        owner=alice,
        name=name,
        entry_point="two.py",
        status="InProgress",
        metric_definitions=[{"name": "loss", "regex": "-"}, {"name": "acc", "regex": "-"}],
    )
    counts = []
    deadline = time.monotonic() + 60
    while backend.describe_training_job(name)["TrainingJobStatus"] not in ("Completed", "Failed", "Stopped"):
        metric_poll.store(backend, [row])
        acc = MetricSeries.objects.filter(job=row, name="acc").first()
        counts.append(acc.count if acc else 0)
        assert time.monotonic() < deadline
        time.sleep(0.3)
    metric_poll.store(backend, [row])
    assert any(0 < c < 40 for c in counts), f"no points seen while it ran: {counts}"
    shown = metrics.display_series(row)["metrics"]
    assert [p[0] for p in shown["acc"]["points"]] == list(range(1, 41))
    assert [p[2] for p in shown["loss"]["points"]][:3] == [1.0, 0.5, 0.3333]
    ms = [p[1] for p in shown["loss"]["points"]]
    assert ms == sorted(ms) and ms[-1] - ms[0] >= 39 * 50


@pytest.mark.django_db
def test_the_writer_keeps_its_bound_and_counts_the_rest(monkeypatch) -> None:
    monkeypatch.setattr(metrics, "MAX_POINTS", 10)
    from datetime import UTC, datetime

    from jobs.backends.local.models import LocalLogEvent

    t = datetime(2026, 11, 20, tzinfo=UTC)
    job = LocalTrainingJob.objects.create(
        name="bounded", key="bounded", arn="arn", request={}, creation_time=t, last_modified_time=t
    )
    writer = logs.LogWriter(
        "s", 1000, flush_on_add=False, metric_definitions=[{"Name": "m", "Regex": r"m=(\d+)"}]
    )
    writer.attach(LocalLogEvent, {"job": job})
    for i in range(1, 8):
        writer.add(f"m={i}")
    writer.flush()
    wanted = [MetricsWanted(job="bounded", metrics=("m",))]

    got = metric_points(wanted)["bounded"]["m"]
    assert [v for _, v in got.points] == [1, 2, 3, 4, 5, 6, 7] and got.dropped == 0
    for i in range(8, 21):
        writer.add(f"m={i}")
        if i in (12, 20):
            writer.flush()
    batches = LocalMetricBatch.objects.filter(job=job).order_by("first_step")
    rows = list(batches.values_list("first_step", "count", "dropped"))
    assert rows == [(1, 7, 0), (8, 3, 0), (11, 1, 9)]  # the bounded row: 9 counted, the newest kept
    after = metric_points([MetricsWanted(job="bounded", metrics=("m",), seen={"m": (7, None)})])["bounded"][
        "m"
    ]
    assert [v for _, v in after.points] == [8, 9, 10, 20] and after.dropped == 9
    partly = metric_points([MetricsWanted(job="bounded", metrics=("m",), seen={"m": (14, None)})])["bounded"][
        "m"
    ]
    assert [v for _, v in partly.points] == [20] and partly.dropped == 5
    assert metric_points([MetricsWanted(job="bounded", metrics=("m",), seen={"m": (20, None)})]) == {}
    assert {m["MetricName"]: m["Value"] for m in writer.final_metrics()} == {"m": 20.0}
