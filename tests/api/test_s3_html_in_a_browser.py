"""An attack through the S3 service: a teammate stores an HTML object whose script would act as
whoever opens it, and sends a presigned link. anyjob serves S3 from the dashboard's own origin
(AWS serves it from another), so the object must open sandboxed: its script never runs, in
real Chromium, even for a signed-in user."""

from __future__ import annotations

import pytest

from tests.browser.conftest import CHROMIUM, NOT_INSTALLED, chromium_args

pytestmark = pytest.mark.django_db(transaction=True)

EVIL = (
    b"<!doctype html><title>object</title><p id=p>an object</p>"
    b"<script>document.title = 'pwned'; fetch('/jobs/').then(r => r.text())"
    b".then(t => { document.title = 'pwned:' + t.length })</script>"
)


def test_an_html_object_opens_sandboxed_and_its_script_never_runs(api, client) -> None:
    if not CHROMIUM.exists():
        pytest.skip(NOT_INSTALLED)
    s3 = api.client("s3", signature_version="s3v4")
    s3.create_bucket(Bucket="team-share")
    s3.put_object(Bucket="team-share", Key="report.html", Body=EVIL, ContentType="text/html")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "team-share", "Key": "report.html"})

    # The victim is signed in to the dashboard in this browser.
    client.force_login(api.user)
    session = client.cookies["sessionid"].value
    host = api.url.split("//", 1)[1].split(":", 1)[0]
    cookie = {"name": "sessionid", "value": session, "domain": host, "path": "/"}
    # Playwright's sync API runs an event loop in this thread: no Django calls from here on.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=chromium_args()
        )
        try:
            context = browser.new_context()
            context.add_cookies([cookie])
            page = context.new_page()
            response = page.goto(url)
            assert response is not None and response.status == 200
            assert page.text_content("#p") == "an object"  # shown, as S3 would show it
            page.wait_for_timeout(500)
            assert page.title() == "object"  # its script did not run: no title change, no fetch
            assert "sandbox" in response.headers["content-security-policy"]
        finally:
            browser.close()
