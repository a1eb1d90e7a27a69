"""Browser tests of cancel (issue 14 item 5), with the real backend: ``streamlit run app/main.py`` whose
Compute runs ``python -m backend run`` on a random tiny model in a child process. Clicking Cancel, or
closing the tab, stops that child, the store holds nothing of the run, and the UI says so. Screenshots go
to the test-artifact folder (``tests/app/artifacts.py``).
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from app import serve
from tests.app.artifacts import screenshot

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(serve.CHROMIUM).exists(), reason="Debian chromium not installed"),
]
sync_api = pytest.importorskip("playwright.sync_api")
TIMEOUT_MS = 90_000
# 8 documents of 4096 tokens of the stdlib on a random 12-layer tiny model: ~30 s on a CPU, time to cancel
SLOW = "/token_loss?model=tiny%2FSSSFSSSFSSSF&data=stdlib&params=n_docs%3D8%3Bmax_tokens%3D4096"
# closing the tab is noticed by polling the session (up to ~15 s on a loaded machine): a run ~4x longer
SLOWER = SLOW.replace("SSSFSSSFSSSF", "SSSFSSSFSSSFSSSFSSSFSSSF").replace("max_tokens%3D4096", "max_tokens%3D8192")
PROGRESS = '[data-testid="stSidebar"] [data-testid="stProgress"]'


@pytest.fixture
def served(tmp_path):
    pre, store = tmp_path / "precomputed", tmp_path / "store"
    pre.mkdir()
    proc, base = serve.start({"HYBRIDSCOPE_STORE": str(store), "HYBRIDSCOPE_PRECOMPUTED": str(pre),
                              "OMP_NUM_THREADS": "1"})
    yield proc, base, store
    serve.stop(proc)


@pytest.fixture
def page():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=serve.CHROMIUM, headless=True, args=serve.FLAGS)
        ctx = b.new_context(viewport={"width": 1400, "height": 1000})
        pg = ctx.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        yield pg
        b.close()


def children(proc) -> list[psutil.Process]:
    """The server's ``python -m backend run`` children."""
    out = []
    for c in psutil.Process(proc.pid).children(recursive=True):
        try:
            if "backend" in c.cmdline() and "run" in c.cmdline():
                out.append(c)
        except psutil.NoSuchProcess:
            pass
    return out


def gone(ps: list[psutil.Process], timeout: float = 30.0) -> bool:
    _, alive = psutil.wait_procs(ps, timeout=timeout)
    return not alive


def stored_runs(store: Path) -> list[Path]:
    """Everything of a run in the store (manifests, tables, leftovers), lock files aside."""
    runs = store / "runs"
    return [p for p in runs.rglob("*") if p.is_file() and not p.name.endswith(".lock")] if runs.exists() else []


def start_slow_run(page, base: str, proc, link: str = SLOW) -> list[psutil.Process]:
    page.goto(base + link)
    page.get_by_role("button", name="Compute token_loss for A").click()
    page.locator(PROGRESS).get_by_text("document", exact=False).wait_for()  # the child is computing
    kids = children(proc)
    assert kids, "no backend child process"
    return kids


def test_cancel_button_stops_the_child_and_stores_nothing(served, page):
    proc, base, store = served
    kids = start_slow_run(page, base, proc)
    text = page.locator(PROGRESS).inner_text()
    assert "token_loss on tiny/SSSFSSSFSSSF: document" in text and "% · " in text and " elapsed · " in text, text
    assert page.get_by_text("Deploy", exact=True).count() == 0  # .streamlit/config.toml: toolbarMode viewer
    screenshot(page, "cancel-1-progress")
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("Cancelled token_loss on tiny/SSSFSSSFSSSF after").wait_for()
    screenshot(page, "cancel-2-cancelled")
    msg = page.get_by_text("Cancelled token_loss on tiny/SSSFSSSFSSSF after").inner_text()
    assert msg.endswith("its process was stopped and nothing was stored.")
    assert gone(kids)
    assert children(proc) == []
    assert stored_runs(store) == []
    assert page.get_by_text("No token_loss traces yet").count() == 1  # still missing: offers Compute again
    assert page.locator(PROGRESS).count() == 0


def test_closing_the_tab_stops_the_child_and_stores_nothing(served, page):
    proc, base, store = served
    kids = start_slow_run(page, base, proc, SLOWER)
    page.close()
    assert gone(kids, timeout=40)
    assert stored_runs(store) == []
