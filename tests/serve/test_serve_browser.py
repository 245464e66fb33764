"""The web page in a real browser: Playwright drives Debian's Chromium (headless) against a live server."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# As root in a container Chromium needs --no-sandbox; the rest keep it off this closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (the dev extra)")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's Chromium (apt-get install -y chromium); "
                    "the test never downloads a browser")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_search_the_demo_catalog_and_chat(browser, live_url, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(live_url + "/")
    sync_api.expect(page.locator("#status")).to_contain_text("ranker:")
    sync_api.expect(page.locator("#catalog option")).to_have_count(1)

    page.fill("#query", "cordless drill")
    page.click("#search-form button")
    cards = page.locator("#results .card")
    sync_api.expect(cards.first).to_be_visible()
    assert cards.count() >= 3
    assert "drill" in cards.first.locator(".title").inner_text().lower()
    ranks = [int(c.locator(".rank").inner_text()) for c in cards.all()]
    assert ranks == list(range(1, len(ranks) + 1))
    utilities = [float(c.locator(".utility .value").inner_text()) for c in cards.all()]
    assert utilities == sorted(utilities, reverse=True)
    widths = [c.locator(".fill").evaluate("e => e.getBoundingClientRect().width") for c in cards.all()]
    assert widths[0] >= widths[-1] > 0

    page.fill("#message", "How do I fix a squeaky door hinge?")
    page.click("#chat-form button")
    reply = page.locator("#chat-log .msg.bot")
    sync_api.expect(reply).to_have_count(1)
    sync_api.expect(reply.locator(".verdict")).to_contain_text("keyword")

    shot = tmp_path / "serve_page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert errors == []


def test_a_search_error_is_shown_not_thrown(browser, live_url):
    page = browser.new_page()
    page.goto(live_url + "/")
    page.fill("#query", "d" * 2001)  # over the text limit: 413
    page.click("#search-form button")
    sync_api.expect(page.locator("#search-info .error")).to_contain_text("413")
