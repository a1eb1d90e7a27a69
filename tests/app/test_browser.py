"""Browser tests: Playwright (sync API) driving Debian's /usr/bin/chromium against a served app.

The server is ``streamlit run tests/app/fake_app.py`` (app/main.py with the fake backend client) on
127.0.0.1 and a free port, over the synthetic store, started by a fixture and stopped by its PID. Skips
cleanly when chromium or playwright is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app import serve
from tests.app.browser import CHROMIUM, TIMEOUT_MS, start_dashboard

CHART = '[data-testid="stVegaLiteChart"]'

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Debian chromium not installed (/usr/bin/chromium)"
    ),
]
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(base_store, tmp_path_factory):
    pre = tmp_path_factory.mktemp("precomputed")
    proc, base = start_dashboard(base_store[0], pre)
    yield base
    serve.stop(proc)


def href(page) -> str:
    """The address bar (page.url can lag behind history.replaceState)."""
    return page.evaluate("location.href")


def wait_charts(page, n: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('{CHART}').length >= {n}", timeout=TIMEOUT_MS)


def test_permalink_opens_its_chart(server, page):
    page.goto(f"{server}/retrieval_heads?model=zoo%2Fswa64&layer=3&head=2")
    page.get_by_text("Layer 3, head 2").wait_for()
    wait_charts(page, 3)  # head map + attention rows + entropy
    assert href(page) == f"{server}/retrieval_heads?model=zoo%2Fswa64&layer=3&head=2"
    assert page.locator(f"{CHART} canvas, {CHART} svg").count() >= 3


def test_old_view_parameter_redirects_to_its_page(server, page):
    page.goto(f"{server}/?view=retrieval_heads&model=zoo%2Fswa64&cmp=1&layer=3&head=2")
    page.get_by_text("Layer 3, head 2").wait_for()
    page.wait_for_function("location.pathname.endsWith('/retrieval_heads')")
    query = page.evaluate("location.search")
    assert "view=" not in query and "cmp=true" in query and "layer=3" in query and "head=2" in query
    assert page.get_by_role("switch", name="Compare A vs B").is_checked()
    assert page.locator('[data-testid="stAlert"]').count() == 0


def test_toggle_changes_url_and_reload_restores_view(server, page):
    page.goto(f"{server}/niah")
    wait_charts(page, 1)
    toggle = page.get_by_role("switch", name="Compare A vs B")
    assert not toggle.is_checked()
    page.get_by_text("Compare A vs B").click()
    page.wait_for_function("location.search.includes('cmp=true')")
    wait_charts(page, 3)  # A, B and B - A
    url = href(page)
    page.goto("about:blank")
    page.goto(url)
    wait_charts(page, 3)
    assert page.get_by_role("switch", name="Compare A vs B").is_checked()
    assert page.get_by_role("heading", name="Needle in a haystack").count() == 1
    assert href(page) == url
    # the permalink in the sidebar is the address bar, with the model pinned (its code block is drawn
    # only once its popover is opened: st.code costs the browser ~0.8 s per page, issue 11)
    assert url == f"{server}/niah?cmp=true"
    assert page.get_by_test_id("stCode").count() == 0
    page.get_by_role("button", name="Permalink").click()
    assert page.get_by_test_id("stCode").first.inner_text().strip() == f"{server}/niah?model=zoo%2Fgdn&cmp=true"
    page.keyboard.press("Escape")
    # a navigation link keeps the rest of the state (bound sidebar widgets, and the ablation text)
    page.get_by_role("textbox", name="Ablation A").fill("rf[full]=64")
    page.get_by_role("textbox", name="Ablation A").press("Enter")
    page.wait_for_function("location.search.includes('abl=rf')")
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="LongPPL").click()
    page.get_by_role("heading", name="PPL and LongPPL per model × ablation").wait_for()
    page.wait_for_function(
        "location.pathname.endsWith('/longppl') && location.search.includes('cmp=true') "
        "&& location.search.includes('abl=rf')"
    )
    page.go_back()  # history: the NIAH view as it was
    page.get_by_role("heading", name="Needle in a haystack").wait_for()
    page.wait_for_function("location.pathname.endsWith('/niah') && location.search.includes('cmp=true')")


def test_colour_scale_toggle_writes_the_url_and_the_link_restores_it(server, page):
    page.goto(f"{server}/retrieval_heads?model=zoo%2Fswa64&cmp=true")
    wait_charts(page, 2)
    page.get_by_text("Colour scale shared by every model").wait_for()
    page.get_by_text("per-map", exact=True).click()
    page.wait_for_function("location.search.includes('scale=per-map')")
    page.get_by_text("Colour scale per map").wait_for()
    url = href(page)
    page.goto("about:blank")
    page.goto(url)
    page.get_by_text("Colour scale per map").wait_for()
    wait_charts(page, 2)
    assert page.get_by_role("radio", name="per-map").is_checked() and href(page) == url
    page.get_by_text("shared", exact=True).click()
    page.wait_for_function("!location.search.includes('scale=')")  # the default leaves the URL
    page.get_by_text("Colour scale shared by every model").wait_for()


def test_malformed_link_shows_warning_and_falls_back(server, page):
    page.goto(f"{server}/?view=bogus&head=1%3BDROP%20TABLE%20runs&cmp=maybe")
    page.get_by_text("unknown view").wait_for()
    page.get_by_text("What each layer does at long context").wait_for()
    alerts = page.locator('[data-testid="stAlert"]').all_inner_texts()
    assert any("Ignored URL parameter" in a and "view=bogus" in a for a in alerts), alerts
    assert any("head=1;DROP TABLE runs" in a for a in alerts), alerts
    assert any("cmp=maybe" in a for a in alerts), alerts
    page.wait_for_function("location.search === ''")
    assert not page.get_by_role("switch", name="Compare A vs B").is_checked()


def test_compute_button_runs_the_fake_backend_in_the_server(tmp_path, browser):
    """The served app reaches the test double (tests/app/fake_app.py installs it in the server process):
    a missing run is computed, its traces appear."""
    pre = tmp_path / "precomputed"
    pre.mkdir()
    proc, base = start_dashboard(tmp_path / "store", pre)
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        pg = ctx.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        pg.goto(f"{base}/niah")
        pg.get_by_text("No niah traces yet").wait_for()
        pg.get_by_role("button", name="Compute niah for A").click()
        wait_charts(pg, 1)
        assert pg.get_by_text("niah run: A").count() == 1
    finally:
        ctx.close()
        serve.stop(proc)
