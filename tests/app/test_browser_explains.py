"""Browser tests over the bundled store (issue 14 items 1-4, 7): real Chromium on the served dashboard.

Each test saves a full-page screenshot to the test-artifacts folder (``tests/app/artifacts.py``:
``$HYBRIDSCOPE_TEST_ARTIFACTS``, else ``out/test-artifacts/``) as ``explains-<view>.png``. Charts must fit
their container (nothing cut off at the right, where a clipped legend would be). The server runs the
fake backend client (``tests/app/fake_app.py``), so nothing is ever computed; it is stopped by its PID.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app import serve
from tests.app.artifacts import screenshot
from tests.app.browser import CHROMIUM, start_dashboard

CHART = '[data-testid="stVegaLiteChart"]'
PRE = Path(__file__).resolve().parents[2] / "precomputed"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (/usr/bin/chromium)"),
    pytest.mark.skipif(not (PRE / "store" / "runs").is_dir(), reason="no bundled store"),
]
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("user-store")
    proc, base = start_dashboard(store, PRE)
    yield base
    serve.stop(proc)


def wait_charts(page, n: int) -> None:
    page.wait_for_function(
        f"[...document.querySelectorAll('{CHART}')].filter(e => e.querySelector('canvas, svg')).length >= {n}"
    )
    page.wait_for_timeout(500)  # let vega finish its layout


def overflowing_charts(page) -> list[str]:
    """Charts whose drawing is wider than their container (a cut-off right edge or legend)."""
    return page.evaluate(f"""(() => {{
        const main = document.querySelector('[data-testid="stMainBlockContainer"]') || document.body;
        const edge = Math.min(main.getBoundingClientRect().right, document.documentElement.clientWidth);
        return [...document.querySelectorAll('{CHART}')].flatMap((el, i) => {{
            const c = el.querySelector('canvas, svg'); if (!c) return [];
            const r = c.getBoundingClientRect(), outer = el.getBoundingClientRect();
            const cut = r.right > edge + 1 || r.width > outer.width + 1;
            return cut ? [`chart ${{i}}: right ${{r.right}} > ${{edge}}`] : [];
        }});
    }})()""")


def test_overview_states_verdicts_and_draws_whole_charts(server, page):
    page.goto(f"{server}/")
    page.get_by_text("bundled zoo: not reproduced").first.wait_for()
    wait_charts(page, 5)
    body = page.inner_text("body")
    assert "4. Paper: NoPE on full attention helps small-window hybrids — bundled zoo: not reproduced" in body
    assert "2. Paper: full attention carries long-range retrieval — bundled zoo: reproduced" in body
    assert "No model retrieves a needle" in body
    assert overflowing_charts(page) == []
    screenshot(page, "explains-overview")


def test_typed_ablation_finds_the_bundled_run(server, page):
    if not (PRE / "zoo" / "swa64" / "config.json").is_file():
        pytest.skip("bundled checkpoints not in the checkout")
    page.goto(f"{server}/longppl?model=zoo%2Fswa64&abl=rf%5Bfull%5D%3D64&params=n_docs%3D2")
    wait_charts(page, 3)
    body = page.inner_text("body")
    assert "93804e6fdc2e42034abf" in body  # the run stored as rf[3,7]=64
    assert page.get_by_role("button", name="Compute longppl for A").count() == 0
    assert overflowing_charts(page) == []
    screenshot(page, "explains-longppl-rf-full-64")


def test_retrieval_heads_scale_is_anchored_at_chance(server, page):
    page.goto(f"{server}/retrieval_heads?model=zoo%2Ffull")
    wait_charts(page, 1)
    assert "chance level (0.005" in page.inner_text("body")
    assert overflowing_charts(page) == []
    screenshot(page, "explains-retrieval-heads-full")


def test_niah_says_no_model_retrieves(server, page):
    page.goto(f"{server}/niah?model=zoo%2Fswa64")
    wait_charts(page, 1)
    body = page.inner_text("body")
    assert "retrieves no needle" in body and "No model in the store retrieves a needle" in body
    screenshot(page, "explains-niah")


def test_runs_view_opens_on_a_useful_table(server, page):
    page.goto(f"{server}/runs")
    page.get_by_text("Download a table slice").wait_for()
    slice_caption = page.get_by_text(re.compile(r"^\d+ rows of \w+ for run "))
    slice_caption.wait_for()
    assert not slice_caption.inner_text().startswith("0 rows")  # a table the first run wrote
    screenshot(page, "explains-runs")
