"""Runner: cache hits, compute-once under threads and processes, killed runs, failed runs.

Computations are counted directly (Runner.computed, a wrapped probe function, marker files written
by child processes), never inferred from timings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import backend.probes.token_loss as token_loss
from backend.probes.context import ProbeInputError
from backend.runner import Runner
from backend.spec import RunSpec
from backend.store import StoreError, TraceStore
from backend.store_reader import StoreReader

REPO = Path(__file__).resolve().parents[2]
DRIVER = '''
import os, sys, time
from pathlib import Path

mark, delay = Path(os.environ["HS_MARK"]), float(os.environ["HS_DELAY"])


def marked(fn):
    def wrapper(*a, **k):
        (mark / str(os.getpid())).write_text(os.environ["HS_HOOK"])
        time.sleep(delay)
        return fn(*a, **k)
    return wrapper


if os.environ["HS_HOOK"] == "probe":
    import backend.probes.token_loss as m
    m.run = marked(m.run)
else:  # the tables are written, the manifest is not yet
    from backend.store import TraceStore as m
    m._write_manifest = marked(m._write_manifest)
from backend.cli import main

sys.exit(main(sys.argv[1:]))
'''


def write_doc(tmp_path: Path, text: str = "", name: str = "doc.txt") -> str:
    path = tmp_path / name
    path.write_text(text or "".join(f"line {i}: the quick brown fox. " for i in range(6)))
    return f"file:{path}"


def spec(data: str, **kw) -> RunSpec:
    return RunSpec.build(**{"model": "tiny/SF", "probe": "token_loss", "data": data,
                            "params": {"n_docs": 1, "max_tokens": 120}, **kw})


def runner(tmp_path: Path) -> Runner:
    return Runner(tmp_path / "store", read_only_roots=[])


@pytest.fixture
def probe_calls(monkeypatch):
    """Wrap the token_loss probe: records every call; ``slow[0]`` seconds of sleep; ``fail[0]`` raises."""
    calls, slow, fail, lock = [], [0.0], [None], threading.Lock()
    orig = token_loss.run

    def wrapped(ctx):
        with lock:
            calls.append(ctx.spec.canonical_json())
        time.sleep(slow[0])
        if fail[0]:
            raise fail[0]
        return orig(ctx)

    monkeypatch.setattr(token_loss, "run", wrapped)
    return calls, slow, fail


def test_cache_hit_returns_same_run_id_without_recomputing(tmp_path, probe_calls):
    calls = probe_calls[0]
    data, seen = write_doc(tmp_path), []
    r1 = runner(tmp_path)
    a = r1.run(spec(data), progress=lambda f, m: seen.append((f, m)))
    assert not a.cached and r1.computed == [a.run_id] and len(calls) == 1
    assert seen[-1] == (1.0, "done") and all(0.0 <= f <= 1.0 for f, _ in seen)
    run_dir = r1.store.run_dir(a.run_id)
    stamps = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    # the same spec written differently; a fresh runner over the same store
    again = RunSpec.build(model="tiny/SF", probe="token_loss", data=data, ablation=" ",
                          params={"max_tokens": 120, "n_docs": 1, "bucket": 256})
    r2 = runner(tmp_path)
    b = r2.run(again)
    assert b.cached and b.run_id == a.run_id == r2.run_id(again) and r2.computed == [] and len(calls) == 1
    assert b.manifest == json.loads((run_dir / "manifest.json").read_text())
    assert r1.run(spec(data)).cached and r1.computed == [a.run_id] and len(calls) == 1
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == stamps  # nothing rewritten
    # a run found in a read-only store (e.g. precomputed/) is returned from there
    r3 = Runner(tmp_path / "other", read_only_roots=[tmp_path / "store"])
    c = r3.run(spec(data))
    assert c.cached and c.store.root == (tmp_path / "store").resolve() and r3.computed == []


def test_run_id_tracks_spec_model_and_data(tmp_path):
    data = write_doc(tmp_path)
    r = runner(tmp_path)
    base = r.run_id(spec(data))
    assert r.run_id(spec(data)) == base == r.run_id(RunSpec.model_validate_json(spec(data).canonical_json()))
    others = [spec(data, ablation="skip=0"), spec(data, params={"n_docs": 1, "max_tokens": 121}),
              spec(data, model="tiny/SS"), spec(write_doc(tmp_path, "another text " * 20, "b.txt"))]
    ids = {r.run_id(s) for s in others}
    assert base not in ids and len(ids) == 4
    write_doc(tmp_path, "edited text " * 20)  # same ref, new content: a new dataset fingerprint
    assert r.run_id(spec(data)) != base


def test_threads_compute_an_identical_run_once(tmp_path, probe_calls):
    calls, slow, _ = probe_calls
    slow[0] = 0.5  # every thread arrives while the first one computes
    data = write_doc(tmp_path)
    runners = [runner(tmp_path) for _ in range(4)]
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda r: r.run(spec(data)), runners))
    assert len({res.run_id for res in results}) == 1
    assert len(calls) == 1 and sum(len(r.computed) for r in runners) == 1
    assert sorted(res.cached for res in results) == [False, True, True, True]


def test_threads_run_different_ablations_of_one_model(tmp_path, probe_calls):
    """The cached model is shared: runs on it are serialised, none fails on another's ablation."""
    calls, slow, _ = probe_calls
    slow[0] = 0.2
    data = write_doc(tmp_path)
    specs = [spec(data, ablation=a) for a in ("", "skip=0", "window[all]=4", "heads=1.0")] * 2
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda s: runner(tmp_path).run(s), specs))
    assert len(calls) == 4 and len({r.run_id for r in results}) == 4
    assert [r.run_id for r in results[:4]] == [r.run_id for r in results[4:]]
    nll = {r.run_id: r.tables["token_loss"]["nll"] for r in results}
    assert len({tuple(v) for v in nll.values()}) == 4  # each ablation really applied


def cli_env(tmp_path: Path, hook: str, delay: float) -> dict:
    (tmp_path / "marks").mkdir(exist_ok=True)
    (tmp_path / "empty").mkdir(exist_ok=True)
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
            "HS_MARK": str(tmp_path / "marks"), "HS_DELAY": str(delay), "HS_HOOK": hook,
            "HYBRIDSCOPE_PRECOMPUTED": str(tmp_path / "empty")}


def cli_args(tmp_path: Path, data: str) -> list[str]:
    return [sys.executable, str(tmp_path / "driver.py"), "run", "--model", "tiny/SF", "--probe", "token_loss",
            "--data", data, "--param", "n_docs=1", "--param", "max_tokens=120",
            "--store", str(tmp_path / "store"), "--json"]


def test_processes_compute_an_identical_run_once(tmp_path):
    (tmp_path / "driver.py").write_text(DRIVER)
    data = write_doc(tmp_path)
    env = cli_env(tmp_path, "probe", 1.5)
    procs = [subprocess.Popen(cli_args(tmp_path, data), cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    results = [json.loads(out) for out, _ in outs]
    assert len({r["run_id"] for r in results}) == 1
    assert sorted(r["cached"] for r in results) == [False, True, True]
    assert len(list((tmp_path / "marks").iterdir())) == 1  # the probe ran in one process only
    assert TraceStore(tmp_path / "store").runs() == [results[0]["run_id"]]


@pytest.mark.parametrize("hook", ["probe", "manifest"])
def test_killed_run_leaves_store_readable_and_rerunnable(tmp_path, hook):
    (tmp_path / "driver.py").write_text(DRIVER)
    data = write_doc(tmp_path)
    r = runner(tmp_path)
    done = r.run(spec(data, ablation="skip=1"))  # another run, already stored
    run_id = r.run_id(spec(data))
    proc = subprocess.Popen(cli_args(tmp_path, data), cwd=REPO, env=cli_env(tmp_path, hook, 300),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not any((tmp_path / "marks").iterdir()) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        assert any((tmp_path / "marks").iterdir())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    run_dir = r.store.run_dir(run_id)
    if hook == "manifest":  # killed between its tables and its manifest
        assert sorted(p.name for p in run_dir.glob("*.parquet")) == ["position_loss.parquet",
                                                                      "token_loss.parquet"]
    reader = StoreReader([r.store])
    assert reader.run_ids() == [done.run_id] and not r.store.has(run_id) and r.lookup(run_id) is None
    assert reader.sql("SELECT count(DISTINCT run_id) AS n FROM token_loss").to_pylist() == [{"n": 1}]
    again = r.run(spec(data))  # the dead process's lock is gone: the rerun computes and stores it
    assert again.run_id == run_id and not again.cached and r.computed == [done.run_id, run_id]
    reader.refresh()
    assert reader.run_ids() == sorted([done.run_id, run_id])
    assert reader.sql("SELECT status FROM runs WHERE run_id = ?", [run_id]).to_pylist() == [{"status": "ok"}]


def test_failed_run_stores_its_error_and_no_tables(tmp_path):
    r = runner(tmp_path)
    short = spec(write_doc(tmp_path, "a", "short.txt"))
    with pytest.raises(ProbeInputError, match="data: document has 1 token"):
        r.run(short)
    run_id = r.run_id(short)
    m = r.store.manifest(run_id)
    assert m["status"] == "error" and "data: document has 1 token(s)" in m["error"] and m["rows"] == {}
    assert [p.name for p in r.store.run_dir(run_id).iterdir()] == ["manifest.json"]
    assert r.lookup(run_id) is None and r.computed == []
    with pytest.raises(StoreError):
        r.store.read_table(run_id, "token_loss")
    reader = StoreReader([r.store])
    assert reader.sql("SELECT status, error FROM runs").to_pylist() == [{"status": "error",
                                                                         "error": m["error"]}]
    assert reader.sql("SELECT count(*) AS n FROM token_loss").to_pylist() == [{"n": 0}]
    # a failing dependency fails the dependent run too, each with its own error manifest
    lp = RunSpec.build(model="tiny/SF", probe="longppl", data=short.data,
                       params={"n_docs": 1, "trunc_len": 32, "stride": 8})
    with pytest.raises(ProbeInputError):
        r.run(lp)
    reader.refresh()
    statuses = sorted((m["spec"]["probe"], m["status"]) for m in reader.manifests.values())
    assert statuses == [("key_tokens", "error"), ("longppl", "error"), ("token_loss", "error")]


def test_failed_run_is_rerun_and_replaced(tmp_path, probe_calls):
    calls, _, fail = probe_calls
    data = write_doc(tmp_path)
    r = runner(tmp_path)
    fail[0] = RuntimeError("out of memory (simulated)")
    with pytest.raises(RuntimeError, match="simulated"):
        r.run(spec(data))
    run_id = r.run_id(spec(data))
    assert r.store.manifest(run_id)["error"] == "RuntimeError: out of memory (simulated)"
    fail[0] = None
    res = r.run(spec(data))  # an error manifest is not a cache hit
    assert res.run_id == run_id and not res.cached and r.computed == [run_id] and len(calls) == 2
    m = r.store.manifest(run_id)
    assert m["status"] == "ok" and m["error"] is None and m["rows"]["token_loss"] == 119
    assert r.run(spec(data)).cached and len(calls) == 2
