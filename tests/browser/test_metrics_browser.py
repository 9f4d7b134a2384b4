"""Metrics in Chromium: a running job's charts grow without a reload, and a compare of three jobs
shows the overlays, the parallel coordinates and the table of differences."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import shot, sign_in

JOB_TIMEOUT_MS = 90_000

# Three finished jobs with two metrics each, written into the stack's database as the poller
# would (jobs.metrics.append_points); values travel in the environment.
SEED_COMPARE = """
import json, os
from django.contrib.auth import get_user_model
from jobs.metrics import append_points
from jobs.models import TrainingJob
owner = get_user_model().objects.get(username=os.environ["SEED_OWNER"])
for spec in json.loads(os.environ["SEED_JOBS"]):
    job = TrainingJob.objects.create(
        owner=owner, name=spec["name"], entry_point="train.py", status="Completed",
        hyperparameters=spec["hyperparameters"],
        channels=[{"name": "train", "uri": "file:///data/train/", "content_type": "text/csv"}],
    )
    for metric, values in spec["metrics"].items():
        append_points(job, metric, [(1764000000000 + 1000 * i, v) for i, v in enumerate(values)])
"""


def hp(lr: str, optimizer: str) -> list[dict[str, str]]:
    return [
        {"key": "epochs", "value": "20", "type": "number"},
        {"key": "learning-rate", "value": lr, "type": "number"},
        {"key": "optimizer", "value": optimizer, "type": "string"},
    ]


def errors_of(page: Page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # A missing resource shows as a console error without its URL: the responses say which.
    # (Chromium asks for /favicon.ico by itself; the site has none.)
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}") if r.status >= 400 and "favicon" not in r.url else None
        ),
    )
    page.on(
        "console",
        lambda m: (
            errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None
        ),
    )
    return errors


def test_a_compare_of_three_jobs_shows_overlays_and_what_differs(page: Page, stack, request) -> None:
    gus = stack.create_user("gus", "gus-pass-42")
    jobs = [
        {
            "name": f"cmp-{i}",
            "hyperparameters": hp(lr, opt),
            "metrics": {
                "loss": [1 / (k * scale + 1) for k in range(200)],
                "accuracy": [1 - 1 / (k * scale + 2) for k in range(150)],
            },
        }
        for i, (lr, opt, scale) in enumerate(
            [("0.001", "adam", 0.5), ("0.01", "sgd", 1.0), ("0.1", "adam", 2.0)]
        )
    ]
    stack.manage(
        "shell",
        "--no-imports",
        "-c",
        SEED_COMPARE,
        extra_env={"SEED_OWNER": gus.username, "SEED_JOBS": json.dumps(jobs)},
    )
    errors = errors_of(page)
    sign_in(page, stack.base_url, gus.username, gus.password)
    page.goto("/compare/?jobs=cmp-0,cmp-1,cmp-2")
    table = page.locator("#differences")
    expect(table.locator('tr[data-row="Hyperparameters: learning-rate"] td')).to_have_text(
        ["0.001", "0.01", "0.1"]
    )
    expect(table.locator('tr[data-row="Hyperparameters: optimizer"] td')).to_have_text(
        ["adam", "sgd", "adam"]
    )
    expect(table.locator('tr[data-row="Metrics: loss (last)"]')).to_be_visible()
    expect(table.locator('tr[data-row="Hyperparameters: epochs"]')).to_have_count(0)  # the same for all

    # One overlaid chart per metric, a line per job, drawn on a canvas by uPlot.
    charts = page.locator("#compare-chart-list figure.metric-chart")
    expect(charts).to_have_count(2)
    expect(page.locator("#compare-charts")).to_have_attribute("data-loaded", "1")
    for name in ("accuracy", "loss"):
        chart = page.locator(f'#compare-chart-list figure[data-metric="{name}"]')
        expect(chart).to_have_attribute("data-lines", "3")
        expect(chart.locator("canvas")).to_have_count(1)
        # uPlot's legend names every job (raw and smoothed lines).
        for job in ("cmp-0", "cmp-1", "cmp-2"):
            expect(chart.locator(".u-legend")).to_contain_text(job)
    expect(page.locator("#parallel canvas")).to_have_count(1)
    expect(page.locator("#parallel")).to_have_attribute("data-lines", "3")
    shot(page, request, "compare")

    # The controls' state goes into the URL, to be shared; the metric picker keeps it.
    page.locator("[data-chart-log]").check()
    page.locator("[data-chart-x]").select_option("rel")
    page.locator("[data-chart-smooth]").fill("0.3")
    for kept in ("log=1", "x=rel", "smooth=0.3"):
        expect(page).to_have_url(re.compile(re.escape(kept)))
    page.locator("#parallel-metric").select_option("accuracy")
    page.wait_for_url(lambda url: "metric=accuracy" in url and "log=1" in url and "x=rel" in url)
    expect(page.locator("[data-chart-log]")).to_be_checked()
    expect(page.locator("[data-chart-x]")).to_have_value("rel")
    expect(page.locator("#compare-chart-list figure.metric-chart")).to_have_count(2)
    shot(page, request, "compare-log-relative")

    page.locator("#toggle-rows").click()
    expect(table.locator('tr[data-row="Hyperparameters: epochs"] td')).to_have_text(["20", "20", "20"])
    assert not errors, errors


# A script that prints two metrics over a few seconds: the charts must grow while it runs.
TRAIN = """
import time
for step in range(1, 31):
    print(f"step {step} loss={1.0 / step:.6f} acc={1 - 1.0 / (step + 1):.6f}", flush=True)
    time.sleep(0.4)
"""


def test_a_running_job_with_two_metrics_shows_two_charts_that_grow(
    page: Page, stack, request, tmp_path: Path
) -> None:
    hal = stack.create_user("hal", "hal-pass-42")
    errors = errors_of(page)
    sign_in(page, stack.base_url, hal.username, hal.password)
    page.goto("/new/")
    if page.locator("#id_md-TOTAL_FORMS").count() == 0:
        pytest.skip("the new-job form has no metric definitions yet (helper form/history's work)")
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    page.locator("#id_code").set_input_files(str(script))
    expect(page.locator("#id_entry_point")).to_have_value("train.py")
    for index, (name, regex) in enumerate([("loss", r"loss=([-+0-9.eE]+)"), ("acc", r"acc=([-+0-9.eE]+)")]):
        if page.locator(f"#id_md-{index}-name").count() == 0:
            page.locator('[data-add-row="md"]').click()
        page.locator(f"#id_md-{index}-name").fill(name)
        page.locator(f"#id_md-{index}-regex").fill(regex)
    page.locator("#id_name").fill("live-metrics")
    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(stack.url("/jobs/live-metrics/"))
    page.evaluate("window.anyjobTestMark = 'still here'")

    section = page.locator("#metric-charts")
    expect(section.locator("figure.metric-chart")).to_have_count(2)
    # Points arrive while the job runs: the count of drawn points goes up at least twice.
    seen = [0]
    for _ in range(3):
        page.wait_for_function(
            "n => Number(document.getElementById('metric-charts').dataset.points || 0) > n",
            arg=seen[-1],
            timeout=JOB_TIMEOUT_MS,
        )
        seen.append(int(section.get_attribute("data-points")))
        expect(page.locator("#status")).to_have_text("InProgress")
    shot(page, request, "growing")
    expect(page.locator("#status")).to_have_text("Completed", timeout=JOB_TIMEOUT_MS)
    for name in ("loss", "acc"):
        figure = section.locator(f'figure[data-metric="{name}"]')
        expect(figure.locator("canvas")).to_have_count(1)
        expect(figure.locator('[data-stat="count"]')).to_have_text("30", timeout=15_000)
    expect(section.locator('figure[data-metric="loss"] [data-stat="min"]')).to_have_text("0.033333")
    expect(section).to_have_attribute("data-following", "0", timeout=15_000)
    assert page.evaluate("window.anyjobTestMark") == "still here", "the page reloaded"
    shot(page, request, "completed")
    assert not errors, errors
