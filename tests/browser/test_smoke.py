"""The whole stack through a real browser: sign in, the job history, sign out."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.conftest import shot, sign_in

LOGIN = re.compile(r"/accounts/login/(\?.*)?$")


def test_admin_signs_in_sees_jobs_and_signs_out(page, stack, request) -> None:
    # Anonymous: /jobs/ sends you to sign in, and back to /jobs/ afterwards.
    page.goto("/jobs/")
    expect(page).to_have_url(stack.url("/accounts/login/?next=/jobs/"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot(page, request, "sign-in")

    sign_in(page, stack.base_url, stack.admin_username, stack.admin_password)
    expect(page).to_have_url(stack.url("/jobs/"))
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    expect(page.locator("table#jobs")).to_be_visible()
    expect(page.locator("header")).to_contain_text(stack.admin_username)
    shot(page, request, "jobs")

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(LOGIN)
    shot(page, request, "signed-out")

    page.goto("/jobs/")
    expect(page).to_have_url(stack.url("/accounts/login/?next=/jobs/"))


def test_teammate_signs_in(page, stack) -> None:
    bob = stack.create_user("bob", "builder-pass-1")
    sign_in(page, stack.base_url, bob.username, bob.password)
    expect(page).to_have_url(stack.url("/jobs/"))
    expect(page.locator("header")).to_contain_text("bob")
