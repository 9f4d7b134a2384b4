"""The product's whole flow, as a new teammate walks it in Chromium.

Sign in, upload the example script, add two channels and three hyperparameters, submit, watch
the job reach Completed without reloading the page, open the artifacts; submit the failing
example and find its traceback's last line; clone, change one hyperparameter, see the summary.
"""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import output_dir, shot, sign_in

EXAMPLES = Path(__file__).resolve().parents[2] / "container" / "examples"
DATA = f"file://{EXAMPLES}/linear/data"
#: A job on this machine takes a few seconds; the first may build nothing (cached image env).
JOB_TIMEOUT_MS = 90_000


def fill_row(page: Page, prefix: str, index: int, values: dict[str, str]) -> None:
    if page.locator(f"#id_{prefix}-{index}-{next(iter(values))}").count() == 0:
        page.locator(f'[data-add-row="{prefix}"]').click()
    for field, value in values.items():
        locator = page.locator(f"#id_{prefix}-{index}-{field}")
        if locator.evaluate("e => e.tagName") == "SELECT":
            locator.select_option(value)
        else:
            locator.fill(value)


def upload_code(page: Page, path: Path) -> None:
    page.locator("#id_code").set_input_files(str(path))
    # htmx stores the code at once and shows its files, the entry point and its source.
    expect(page.locator("#code-files")).to_contain_text(path.name)
    expect(page.locator("#id_entry_point")).to_have_value(path.name)
    expect(page.locator("#source pre")).to_be_visible()


def wait_for_status(page: Page, status: str) -> None:
    expect(page.locator("#status")).to_have_text(status, timeout=JOB_TIMEOUT_MS)


def test_a_new_teammate_runs_fails_and_clones_jobs(page: Page, stack, request) -> None:
    dana = stack.create_user("dana", "dana-pass-42")
    sign_in(page, stack.base_url, dana.username, dana.password)
    shot(page, request, "signed-in")

    # --- a job that completes ----------------------------------------------------------------
    page.get_by_role("link", name="New job").first.click()
    expect(page.get_by_role("heading", name="New training job")).to_be_visible()
    upload_code(page, EXAMPLES / "linear" / "train.py")
    expect(page.locator("#source pre")).to_contain_text("argparse")
    fill_row(page, "ch", 0, {"name": "train", "uri": DATA, "content_type": "text/csv"})
    fill_row(page, "ch", 1, {"name": "validation", "uri": DATA, "input_mode": "FastFile"})
    fill_row(page, "hp", 0, {"key": "epochs", "value": "30", "type": "number"})
    fill_row(page, "hp", 1, {"key": "learning-rate", "value": "0.05", "type": "number"})
    fill_row(page, "hp", 2, {"key": "l2", "value": "0.001", "type": "number"})
    # The live preview: the exact map and the command line the script will get.
    expect(page.locator("#preview-command")).to_have_text(
        "python train.py --epochs 30 --l2 0.001 --learning-rate 0.05"
    )
    expect(page.locator("#preview-hyperparameters")).to_contain_text('"sagemaker_program": "\\"train.py\\""')
    page.locator("#id_name").fill("linear-first-run")
    shot(page, request, "new-job-filled")

    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(stack.url("/jobs/linear-first-run/"))
    expect(page.locator(".messages")).to_contain_text("Job linear-first-run submitted.")
    shot(page, request, "submitted")
    # Mark this document: if the page reloaded, the mark would be gone.
    page.evaluate("window.anyjobTestMark = 'still here'")
    wait_for_status(page, "Completed")
    assert page.evaluate("window.anyjobTestMark") == "still here", "the page reloaded"
    expect(page.locator("#timeline")).to_contain_text("Training")
    expect(page.locator("#log-lines")).not_to_be_empty()
    shot(page, request, "completed")
    # One window's worth, as the README shows it (static/screenshot.png is a copy of one).
    page.locator("#log-lines").evaluate("e => { e.scrollTop = e.scrollHeight; }")
    page.screenshot(path=output_dir(request) / "readme-job-page.png")

    # The artifacts appeared with the final status; open model.tar.gz's file list and a file.
    expect(page.locator("#artifacts")).to_contain_text("model.tar.gz", timeout=15_000)
    expect(page.locator("#artifacts")).to_contain_text("output.tar.gz")
    shot(page, request, "artifacts")
    first_file = page.locator("#artifacts table a").first
    first_file.click()
    expect(page.locator("h2")).to_contain_text("model.tar.gz")
    shot(page, request, "artifact-file")

    # --- a job that fails ----------------------------------------------------------------------
    page.goto("/new/")
    upload_code(page, EXAMPLES / "failing" / "train.py")
    page.locator("#id_name").fill("failing-first-run")
    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(stack.url("/jobs/failing-first-run/"))
    wait_for_status(page, "Failed")
    failure = page.locator("#failure")
    expect(failure).to_be_visible()
    expect(failure).to_contain_text(re.compile(r"FileNotFoundError: \[Errno 2\] No such file or directory"))
    text = page.locator("#failure-text").inner_text()
    assert text.strip().splitlines()[-1].startswith("FileNotFoundError"), text[-500:]
    shot(page, request, "failed")

    # --- a clone with one change -----------------------------------------------------------------
    page.goto("/jobs/linear-first-run/")
    page.get_by_role("link", name="Clone").click()
    expect(page.get_by_text("Cloned from")).to_be_visible()
    expect(page.locator("#id_hp-0-value")).to_have_value("30")
    expect(page.locator("#code-files")).to_contain_text("train.py")
    page.locator("#id_hp-0-value").fill("60")
    expect(page.locator("#preview-command")).to_contain_text("--epochs 60")
    page.locator("#id_name").fill("linear-second-run")
    shot(page, request, "clone-edited")
    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(stack.url("/jobs/linear-second-run/"))
    expect(page.locator(".messages")).to_contain_text(
        "Changes against linear-first-run: hyperparameter epochs: '30' (number) → '60' (number)."
    )
    expect(page.locator("#changes")).to_contain_text("hyperparameter epochs")
    shot(page, request, "clone-submitted")
    wait_for_status(page, "Completed")

    # The history shows all three, newest first, with their owner.
    page.get_by_role("link", name="Jobs", exact=True).click()
    rows = page.locator("table#jobs tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("linear-second-run")
    expect(rows.first).to_contain_text("dana")
    shot(page, request, "history")


def test_bad_input_comes_back_with_messages_and_loses_nothing(page: Page, stack, request) -> None:
    erin = stack.create_user("erin", "erin-pass-42")
    sign_in(page, stack.base_url, erin.username, erin.password)
    page.goto("/new/")
    upload_code(page, EXAMPLES / "linear" / "train.py")
    fill_row(page, "ch", 0, {"name": "train data", "uri": DATA})
    fill_row(page, "hp", 0, {"key": "sagemaker_program", "value": "evil.py"})
    fill_row(page, "hp", 1, {"key": "epochs", "value": "many", "type": "number"})
    page.locator("#id_name").fill("<script>alert(1)</script>")
    page.get_by_role("button", name="Submit job").click()
    expect(page.locator("#form-errors")).to_be_visible()
    expect(page.locator("#id_name")).to_have_value("<script>alert(1)</script>")
    expect(page.locator("#hp-rows")).to_contain_text("reserved")
    expect(page.locator("#hp-rows")).to_contain_text("'many' is not a number.")
    expect(page.locator("#ch-rows")).to_contain_text("may only contain letters, digits")
    # The uploaded code is still there: nothing to upload again.
    expect(page.locator("#code-files")).to_contain_text("train.py")
    shot(page, request, "errors")


def test_deploy_a_model_and_keep_an_invocation_test(page: Page, stack, request) -> None:
    fay = stack.create_user("fay", "fay-pass-42")
    sign_in(page, stack.base_url, fay.username, fay.password)
    page.goto("/new/")
    page.locator("#id_code").set_input_files(
        [str(EXAMPLES / "linear" / "train.py"), str(EXAMPLES / "linear" / "inference.py")]
    )
    expect(page.locator("#code-files")).to_contain_text("inference.py")
    expect(page.locator("#id_entry_point")).to_have_value("train.py")
    fill_row(page, "ch", 0, {"name": "train", "uri": DATA})
    fill_row(page, "hp", 0, {"key": "epochs", "value": "50", "type": "number"})
    page.locator("#id_name").fill("linear-to-serve")
    page.get_by_role("button", name="Submit job").click()
    wait_for_status(page, "Completed")

    # Deploy from the job page; the inference script is picked for us.
    page.get_by_role("link", name="Deploy", exact=True).click()
    expect(page.locator("#id_inference_entry_point")).to_have_value("inference.py")
    page.locator("#id_name").fill("linear-live")
    page.locator("#id_ttl_minutes").fill("60")
    shot(page, request, "deploy-form")
    page.get_by_role("button", name="Deploy").click()
    expect(page).to_have_url(stack.url("/endpoints/linear-live/"))
    expect(page.locator("#status")).to_have_text("InService", timeout=JOB_TIMEOUT_MS)
    shot(page, request, "in-service")

    # An invocation, saved as a test with an expectation; its answer and latency appear.
    page.locator("#id_body").fill("[[1.0, 2.0], [3.0,")
    page.get_by_role("button", name="Format JSON").click()
    expect(page.locator("#id_body-json-error")).to_contain_text("Not valid JSON")
    page.locator("#id_body").fill("[[1.0, 2.0], [3.0, 4.0]]")
    page.get_by_role("button", name="Format JSON").click()
    expect(page.locator("#id_body")).to_have_value("[\n  [\n    1,\n    2\n  ],\n  [\n    3,\n    4\n  ]\n]")
    page.locator("details summary", has_text="Save as a test").click()
    page.locator("#id_save_as").fill("two rows")
    page.locator("#id_expect").select_option("status")
    page.locator("#id_expected_status").fill("200")
    page.get_by_role("button", name="Send").click()
    first = page.locator("article.invocation").first
    expect(first.locator("[data-status-code]")).to_have_text("200", timeout=30_000)
    expect(first.locator(".latency")).to_contain_text(" ms")
    expect(first.locator(".verdict")).to_have_text("pass")
    expect(first.locator("pre.response")).to_contain_text("[")
    # A request the handler refuses: its 400 and message are shown, and the endpoint serves on.
    page.locator("#id_body").fill('{"instances": [["a", "b"]]}')
    page.get_by_role("button", name="Send").click()
    refused = page.locator("article.invocation").first
    expect(refused.locator("[data-status-code]")).to_have_text("400", timeout=30_000)
    expect(refused).to_contain_text("not a number")
    expect(page.locator("#saved-tests")).to_contain_text("two rows")
    shot(page, request, "invocations")

    # The owner deletes it.
    page.get_by_role("link", name="Delete…").click()
    page.get_by_role("button", name="Delete the endpoint").click()
    expect(page.locator("#status")).to_have_text("Deleted", timeout=30_000)
    shot(page, request, "deleted")
