"""Dashboard latency in a real browser, with 10^7 token_loss rows in the store.

Builds a temp store holding two token_loss runs (A: no ablation, B: rf[full]=64) of ``--rows`` rows
in total, plus small synthetic runs for the other views; serves ``streamlit run app/main.py`` on
127.0.0.1; drives Debian's /usr/bin/chromium with Playwright and measures

- permalink open -> charts rendered (goal <= 2 s): a Per-token loss A-vs-B link (text shading + loss
  vs position), a fresh browser page per open, a different token window each time (no result cache);
  the very first open after the server starts (cold: imports, first DuckDB scan) is reported apart;
- view switch (goal <= 300 ms): click another view in the sidebar -> its header and charts rendered.

Prints medians and their ratio to the goals (ratio <= 1 meets the goal).
Usage: OMP_NUM_THREADS=1 python benchmarks/bench_dashboard.py [--rows 10000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.fake_client import WORDS, write_synthetic  # noqa: E402
from backend.store import TraceStore  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
RENDERED = "document.querySelectorAll('[data-testid=\"stVegaLiteChart\"] canvas, [data-testid=\"stVegaLiteChart\"] svg').length"
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
    nll = (2.0 + 3.0 * np.exp(-pos / 2000.0) + shift * (pos > 64) + rng.gamma(2.0, 0.4, pos.size)).astype(np.float32)
    words = pa.DictionaryArray.from_arrays(pa.array(tok), pa.array(WORDS)).cast(pa.string())
    tl = pa.table({"doc": doc, "pos": pos, "token_id": tok, "token": words, "char_start": ends - lens,
                   "char_end": ends, "nll": nll, "is_key": (tok == 12) & (pos > 32)})
    bucket = 4096
    b = pos // bucket
    sums, counts = np.bincount(b, weights=nll), np.bincount(b)
    starts = np.arange(len(counts), dtype=np.int32) * bucket
    pl = pa.table({"bucket_start": starts, "bucket_end": np.minimum(starts + bucket, per).astype(np.int32),
                   "mean_nll": sums / counts, "n": counts.astype(np.int64)})
    return tl, pl


def build_store(root: Path, rows: int) -> None:
    store = TraceStore(root)
    for i, (abl, shift) in enumerate((("", 0.0), ("rf[full]=64", 0.6))):
        tl, pl = token_loss_table(rows // 2, n_docs=20, seed=i, shift=shift)
        spec = {"model": "zoo/swa64", "probe": "token_loss"} | ({"ablation": abl} if abl else {})
        store.write_run(f"bench-tl-{i}", spec, {"token_loss": tl, "position_loss": pl},
                        meta={"ablation_text": abl})
    for probe in ("longppl", "niah", "retrieval_heads", "attention_rows", "sweep"):
        for abl in ("", "rf[full]=64"):
            write_synthetic(root, "zoo/swa64", probe, abl)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(store: Path, pre: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HYBRIDSCOPE_STORE": str(store), "HYBRIDSCOPE_PRECOMPUTED": str(pre),
           "HYBRIDSCOPE_CLIENT": "fake"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.address",
                             "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{base}/_stcore/health", timeout=2)
            return proc, base
        except OSError:
            time.sleep(0.3)
    os.kill(proc.pid, signal.SIGTERM)
    raise RuntimeError("streamlit did not start")


def wait_rendered(page, header: str, n_charts: int, extra: str | None = None) -> None:
    page.get_by_role("heading", name=header).first.wait_for()
    page.wait_for_function(f"{RENDERED} >= {n_charts}", timeout=60_000)
    if extra:
        page.locator(extra).first.wait_for()
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"] button')", timeout=60_000)


def open_once(browser, url: str) -> float:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    t0 = time.perf_counter()
    page.goto(url)
    wait_rendered(page, "Per-token loss", 1, ".hs-tokens")
    dt = time.perf_counter() - t0
    ctx.close()
    return dt


def switch_times(browser, url: str, repeats: int) -> list[float]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.goto(url)
    wait_rendered(page, "Per-token loss", 1, ".hs-tokens")
    targets = [("NIAH", "Needle in a haystack", 3), ("Per-token loss", "Per-token loss", 1)]
    # the first visit of each view fills the query cache; time the later ones
    for label, header, n in targets:
        page.get_by_test_id("stSidebar").get_by_text(label, exact=True).click()
        wait_rendered(page, header, n)
    out = []
    for _ in range(repeats):
        for label, header, n in targets:
            t0 = time.perf_counter()
            page.get_by_test_id("stSidebar").get_by_text(label, exact=True).click()
            wait_rendered(page, header, n)
            out.append(time.perf_counter() - t0)
    ctx.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        build_store(Path(tmp) / "store", args.rows)
        print(f"store: {args.rows:,} token_loss rows written in {time.perf_counter() - t0:.1f} s")
        (Path(tmp) / "pre").mkdir()
        proc, base = serve(Path(tmp) / "store", Path(tmp) / "pre")
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
                link = f"{base}/?view=token_loss&model=zoo%2Fswa64&cmp=1&abl_b=rf%5Bfull%5D%3D64&doc=3"
                cold = open_once(browser, link + "&start=0")
                warm = [open_once(browser, f"{link}&start={512 * (i + 1)}") for i in range(args.repeats)]
                switches = switch_times(browser, link, args.repeats)
                browser.close()
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    open_med, switch_med = statistics.median(warm), statistics.median(switches)
    print(f"permalink open, cold (first after server start): {cold:.3f} s")
    print(f"permalink open, median of {len(warm)}: {open_med:.3f} s  (goal {GOAL_OPEN} s, "
          f"ratio {open_med / GOAL_OPEN:.2f}) all: {', '.join(f'{x:.2f}' for x in warm)}")
    print(f"view switch, median of {len(switches)}: {switch_med * 1000:.0f} ms  (goal {GOAL_SWITCH * 1000:.0f} ms, "
          f"ratio {switch_med / GOAL_SWITCH:.2f}) all: {', '.join(f'{x * 1000:.0f}' for x in switches)}")


if __name__ == "__main__":
    main()
