"""Dashboard latency in a real browser, with 10^7 token_loss rows in the store.

Builds a temp store holding two token_loss runs (A: no ablation, B: rf[full]=64) of ``--rows`` rows
in total, plus small synthetic runs for the other views; serves ``streamlit run app/main.py`` on
127.0.0.1; drives Debian's /usr/bin/chromium with Playwright and measures

- permalink open -> charts rendered (goal <= 2 s): a Per-token loss A-vs-B permalink as the app writes it
  (/token_loss?model=...&cmp=true&...; text shading + loss
  vs position), a fresh browser page per open, a different token window each time (no result cache);
  the very first open after the server starts (cold: imports, first DuckDB scan) is reported apart;
- view switch (goal <= 300 ms): click another view in the sidebar -> its header and charts rendered.

The same two timings are taken, in the same run and browser, on a baseline: a minimal two-page
Streamlit app (a header and one small Altair chart per page), i.e. what the framework itself costs on
this machine. Opens use a new page in one browser context (assets cached, as for a returning user).
Prints medians, their ratio to the goals (<= 1 meets the goal) and to the baseline.
Usage: OMP_NUM_THREADS=1 python benchmarks/bench_dashboard.py [--rows 10000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app import serve as dashboard  # noqa: E402
from backend.spec import RunSpec  # noqa: E402
from backend.store import TraceStore  # noqa: E402
from tests.app.fake_client import WORDS, write_synthetic  # noqa: E402

CHROMIUM, FLAGS = dashboard.CHROMIUM, dashboard.FLAGS
_CHART = '[data-testid="stVegaLiteChart"]'
RENDERED = f"document.querySelectorAll('{_CHART} canvas, {_CHART} svg').length"
GOAL_OPEN, GOAL_SWITCH = 2.0, 0.3


def token_loss_table(n_rows: int, n_docs: int, seed: int, shift: float) -> tuple[pa.Table, pa.Table]:
    """token_loss and position_loss tables with ``n_rows`` rows over ``n_docs`` equal documents."""
    rng = np.random.default_rng(seed)
    per = n_rows // n_docs
    pos = np.tile(np.arange(per, dtype=np.int32), n_docs)
    doc = np.repeat(np.arange(n_docs, dtype=np.int32), per)
    tok = np.random.default_rng(0).integers(0, len(WORDS), per * n_docs).astype(np.int32)
    lens = np.array([len(w) for w in WORDS], dtype=np.int32)[tok]
    ends = (np.cumsum(lens.reshape(n_docs, per), axis=1)).ravel().astype(np.int32)
    nll = (2.0 + 3.0 * np.exp(-pos / 2000.0) + shift * (pos > 64) + rng.gamma(2.0, 0.4, pos.size)).astype(
        np.float32
    )
    words = pa.DictionaryArray.from_arrays(pa.array(tok), pa.array(WORDS)).cast(pa.string())
    tl = pa.table(
        {
            "doc": doc,
            "pos": pos,
            "token_id": tok,
            "token": words,
            "char_start": ends - lens,
            "char_end": ends,
            "nll": nll,
            "is_key": (tok == 12) & (pos > 32),
        }
    )
    bucket = 4096
    b = pos // bucket
    sums, counts = np.bincount(b, weights=nll), np.bincount(b)
    starts = np.arange(len(counts), dtype=np.int32) * bucket
    pl = pa.table(
        {
            "bucket_start": starts,
            "bucket_end": np.minimum(starts + bucket, per).astype(np.int32),
            "mean_nll": sums / counts,
            "n": counts.astype(np.int64),
        }
    )
    return tl, pl


def build_store(root: Path, rows: int) -> None:
    store = TraceStore(root)
    for i, (abl, shift) in enumerate((("", 0.0), ("rf[full]=64", 0.6))):
        tl, pl = token_loss_table(rows // 2, n_docs=20, seed=i, shift=shift)
        spec = RunSpec.build(model="zoo/swa64", probe="token_loss", ablation=abl)  # what the view looks up
        store.write_run(
            f"bench-tl-{i}", spec.canonical(), {"token_loss": tl, "position_loss": pl},
            meta={"ablation_text": spec.ablation.to_text()},
        )
    for probe in ("longppl", "niah", "retrieval_heads", "attention_rows", "sweep"):
        for abl in ("", "rf[full]=64"):
            write_synthetic(root, "zoo/swa64", probe, abl)


BASELINE_APP = """
import altair as alt, pandas as pd, streamlit as st
df = pd.DataFrame({"x": range(200), "y": [i % 17 for i in range(200)]})
def page(title, mark):
    def run():
        st.header(title)
        st.altair_chart(getattr(alt.Chart(df), mark)().encode(x="x", y="y"))
    run.__name__ = mark
    return run
st.navigation([st.Page(page("Baseline A", "mark_line"), title="Baseline A", url_path="a", default=True),
               st.Page(page("Baseline B", "mark_point"), title="Baseline B", url_path="b")]).run()
"""


def serve(store: Path, pre: Path, script: str = "app/main.py") -> tuple[subprocess.Popen, str]:
    """The real app (it only reads here: nothing is computed, so no backend double is needed)."""
    return dashboard.start({"HYBRIDSCOPE_STORE": str(store), "HYBRIDSCOPE_PRECOMPUTED": str(pre)}, script)


def wait_rendered(page, header: str, n_charts: int, extra: str | None = None) -> None:
    """The view's header is shown, its charts are drawn (canvas/svg inside), and ``extra`` exists."""
    page.get_by_role("heading", name=header).first.wait_for(timeout=60_000)
    page.wait_for_function(f"{RENDERED} >= {n_charts}", timeout=60_000)
    if extra:
        page.locator(extra).first.wait_for(timeout=60_000)


def open_once(ctx, url: str, header: str, n_charts: int, extra: str | None) -> float:
    page = ctx.new_page()
    t0 = time.perf_counter()
    page.goto(url)
    wait_rendered(page, header, n_charts, extra)
    dt = time.perf_counter() - t0
    page.close()
    return dt


def switch_times(ctx, url: str, targets: list[tuple[str, str, int, str | None]], repeats: int) -> list[float]:
    """Click the sidebar navigation link of each target in turn; the first round is a warm-up. After
    each switch (outside the timing) the target's ``check`` text must be on the page: the view kept the
    link's state (B's ablation), so every switch measures the same page."""
    page = ctx.new_page()
    page.goto(url)
    wait_rendered(page, targets[-1][1], targets[-1][2])
    out = []
    for i in range(repeats + 1):
        for label, header, n, check in targets:
            t0 = time.perf_counter()
            page.get_by_test_id("stSidebarNav").get_by_role("link", name=label).click()
            wait_rendered(page, header, n)
            if i:
                out.append(time.perf_counter() - t0)
            if check:  # may come after the charts: waited for here, outside the timing
                try:
                    page.get_by_text(check, exact=False).first.wait_for(timeout=30_000)
                except Exception as e:  # noqa: BLE001 - playwright's timeout: say which state was lost
                    raise RuntimeError(f"after switch {len(out)} to {label}: {check!r} is not on the page") from e
    page.close()
    return out


def measure(browser, base: str, app: bool, repeats: int) -> dict[str, float | list[float]]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    if app:
        link = f"{base}/token_loss?model=zoo%2Fswa64&cmp=true&abl_b=rf%5Bfull%5D%3D64&doc=3"
        args = ("Per-token loss", 1, ".hs-tokens")
        urls = [f"{link}&start={512 * i}" for i in range(repeats + 1)]
        targets = [("NIAH", "Needle in a haystack", 3, "[rf[full]=64]: "),  # B's failures expander label
                   ("Per-token loss", "Per-token loss", 1, "B bench-tl-1")]  # the runs caption
    else:
        args = ("Baseline A", 1, None)
        urls = [f"{base}/?i={i}" for i in range(repeats + 1)]
        targets = [("Baseline B", "Baseline B", 1, None), ("Baseline A", "Baseline A", 1, None)]
    cold = open_once(ctx, urls[0], *args)
    opens = [open_once(ctx, u, *args) for u in urls[1:]]
    switches = switch_times(ctx, urls[0], targets, repeats)
    ctx.close()
    return {
        "cold": cold,
        "open": statistics.median(opens),
        "opens": opens,
        "switch": statistics.median(switches),
        "switches": switches,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        build_store(Path(tmp) / "store", args.rows)
        print(f"store: {args.rows:,} token_loss rows written in {time.perf_counter() - t0:.1f} s")
        (Path(tmp) / "pre").mkdir()
        (Path(tmp) / "baseline.py").write_text(BASELINE_APP)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            for name, script in (("baseline", str(Path(tmp) / "baseline.py")), ("dashboard", "app/main.py")):
                proc, base = serve(Path(tmp) / "store", Path(tmp) / "pre", script)
                try:
                    results[name] = measure(browser, base, name == "dashboard", args.repeats)
                finally:
                    dashboard.stop(proc)
            browser.close()
    d, b = results["dashboard"], results["baseline"]
    print(f"load average (1 min) after the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(
        f"permalink open, cold (first after server start): dashboard {d['cold']:.2f} s, "
        f"baseline {b['cold']:.2f} s"
    )
    print(
        f"permalink open, median of {len(d['opens'])}: {d['open']:.2f} s (goal {GOAL_OPEN:.0f} s: ratio "
        f"{d['open'] / GOAL_OPEN:.2f}; baseline {b['open']:.2f} s: ratio {d['open'] / b['open']:.2f})"
    )
    print(
        f"view switch, median of {len(d['switches'])}: {d['switch'] * 1000:.0f} ms (goal "
        f"{GOAL_SWITCH * 1000:.0f} ms: ratio {d['switch'] / GOAL_SWITCH:.2f}; baseline "
        f"{b['switch'] * 1000:.0f} ms: ratio {d['switch'] / b['switch']:.2f})"
    )
    for name, r in results.items():
        print(
            f"  {name}: opens {', '.join(f'{x:.2f}' for x in r['opens'])} s; "
            f"switches {', '.join(f'{x * 1000:.0f}' for x in r['switches'])} ms"
        )


if __name__ == "__main__":
    main()
