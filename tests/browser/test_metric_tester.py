"""The metric tester in Chromium: as the user types a metric's expression, pastes lines or picks
a preset, the captures appear beside the rows (htmx, no reload), with the warnings."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import shot, sign_in

LINES = "epoch 1 step 10: loss=0.52 lr=7e-05\nepoch 2 step 20: loss=0.31 lr=5e-05\nno metric here"


def test_the_tester_shows_captures_as_the_user_types(page: Page, stack, request) -> None:
    ivy = stack.create_user("ivy", "ivy-pass-42")
    sign_in(page, stack.base_url, ivy.username, ivy.password)
    page.goto("/new/")
    tester = page.locator("#metric-test")
    page.evaluate("window.anyjobTestMark = 'still here'")

    page.locator("#id_mt-lines").fill(LINES)
    page.locator("#id_md-0-name").fill("loss")
    # Typed a character at a time, as a person does: the tester follows each pause.
    page.locator("#id_md-0-regex").press_sequentially(r"loss=([0-9.]+)", delay=20)
    expect(tester).to_contain_text("2 captures, 2 numbers")
    expect(tester.locator("table.captures tbody tr")).to_have_count(2)
    expect(tester.locator("table.captures tbody tr").first).to_contain_text("0.52")
    # A group that stops before an exponent is warned about, line by line.
    page.locator('[data-add-row="md"]').click()
    page.locator("#id_md-1-name").fill("lr")
    page.locator("#id_md-1-regex").fill(r"lr=([0-9.]+)")
    lr = tester.locator('[data-metric-result="1"]')
    expect(lr).to_contain_text("stops before the exponent")
    expect(lr).to_contain_text("Warning:")
    shot(page, request, "typed")

    # Fixed as the warning says: the exponent is kept.
    page.locator("#id_md-1-regex").fill(r"lr=([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)")
    expect(lr.locator("table.captures tbody tr").first).to_contain_text("7e-05")
    expect(lr).not_to_contain_text("stops before the exponent")

    # A regex that does not compile says so on its result, and the page does not break.
    page.locator("#id_md-0-regex").fill("loss=([0-9.]+")
    expect(tester.locator('[data-metric-result="0"]')).to_contain_text("Does not compile in Python")

    # Removing a row tests again without it.
    page.locator('[data-rows="md"] tbody tr.row').nth(0).locator("[data-remove-row]").click()
    expect(tester.locator('[data-metric-result="0"]')).to_contain_text("lr")
    expect(tester.locator("[data-metric-result]")).to_have_count(1)

    # A preset fills rows (the names typed) and the tester reads its example line.
    page.locator("#id_mt-lines").fill("")
    page.locator("#metric-preset-names").fill("loss, accuracy")
    page.get_by_role("button", name="Keras progress").click()
    shown = "els => els.filter(e => !e.closest('tr').hidden).map(e => e.value)"
    expect(tester).to_contain_text("0.2513")
    assert page.eval_on_selector_all("[data-metric-name]", shown) == ["lr", "loss", "accuracy"]
    expect(tester).to_contain_text("0.9279")
    shot(page, request, "preset")
    assert page.evaluate("window.anyjobTestMark") == "still here", "the page reloaded"
