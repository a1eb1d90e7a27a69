"""Browser test of the permalink checks (issue 14 item 6) over the bundled store: real Chromium on the
served dashboard (fake backend client, nothing computed; the server stopped by its PID).

An unknown path shows the Overview with one warning and the Overview's link in the address bar and the
permalink; a head the model lacks (zoo/swa64 has 6 heads per layer, from its config.json) is refused
with one warning before the view, which then shows the layer without a head and no Compute button.
Screenshots ``links-unknown-path.png`` and ``links-head-out-of-range.png`` go to the test-artifacts folder
(``tests/app/artifacts.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from app import serve
from tests.app.artifacts import screenshot
from tests.app.browser import CHROMIUM, start_dashboard

PRE = Path(__file__).resolve().parents[2] / "precomputed"
ALERT = '[data-testid="stAlert"]'

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (/usr/bin/chromium)"),
    pytest.mark.skipif(not (PRE / "store" / "runs").is_dir(), reason="no bundled store"),
]
SWA64 = {"model_type": "hybridscope", "num_attention_heads": 6, "sliding_window": 64,  # the zoo's layout
         "layer_types": (["sliding_attention"] * 3 + ["full_attention"]) * 2}
sync_api = pytest.importorskip("playwright.sync_api")


def bundle(root: Path) -> Path:
    """The bundle (links to its store, defaults, findings...) with zoo/swa64's config.json only (its
    layout: no weights needed, nothing is computed)."""
    for item in PRE.iterdir():
        if item.name != "zoo":
            (root / item.name).symlink_to(item)
    (root / "zoo" / "swa64").mkdir(parents=True)
    (root / "zoo" / "swa64" / "config.json").write_text(json.dumps(SWA64))
    (root / "zoo" / "swa64" / "model.safetensors").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("user-store")
    pre = bundle(tmp_path_factory.mktemp("precomputed"))
    proc, base = start_dashboard(store, pre)
    yield base
    serve.stop(proc)


def alerts(page, needle: str) -> list[str]:
    return [a for a in page.locator(ALERT).all_inner_texts() if needle in a]


def permalink(page) -> str:
    page.get_by_role("button", name="Permalink").click()
    text = page.get_by_test_id("stCode").first.inner_text().strip()
    page.keyboard.press("Escape")
    return text


def test_unknown_path_redirects_to_the_overview_with_a_warning(server, page):
    page.goto(f"{server}/bogus?model=zoo%2Fgdn&layer=3")
    page.get_by_text("Ignored unknown page").wait_for()
    page.get_by_text("What each layer does at long context").wait_for()  # the Overview
    page.wait_for_function("location.pathname === '/' && location.search === '?model=zoo%2Fgdn'")
    unknown = alerts(page, "Ignored unknown page")
    assert len(unknown) == 1 and "/bogus" in unknown[0] and "Showing the Overview" in unknown[0], unknown
    assert len(alerts(page, "layer=3")) == 1  # a Retrieval heads parameter: ignored on the Overview
    dialog = page.get_by_role("dialog")  # Streamlit's own "Page not found" notice: closed by the reader
    if dialog.count():
        dialog.get_by_role("button", name="Close").click()
        dialog.wait_for(state="detached")
    screenshot(page, "links-unknown-path")
    assert permalink(page) == f"{server}/?model=zoo%2Fgdn"


def test_out_of_range_head_is_refused_before_the_view(server, page):
    page.goto(f"{server}/retrieval_heads?model=zoo%2Fswa64&layer=3&head=9")
    page.get_by_text("Ignored URL parameter “head=9”").wait_for()
    page.wait_for_function("location.pathname.endsWith('/retrieval_heads') && !location.search.includes('head=')")
    refused = alerts(page, "head=9")
    assert len(refused) == 1 and "layer 3 of zoo/swa64 has heads 0..5" in refused[0], refused
    page.get_by_role("heading", name="Retrieval heads").first.wait_for()
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()  # the head map of the bundled run
    assert page.get_by_role("button", name="Compute").count() == 0
    screenshot(page, "links-head-out-of-range")
    query = parse_qs(urlsplit(permalink(page)).query)
    assert query == {"model": ["zoo/swa64"], "layer": ["3"]}, query
