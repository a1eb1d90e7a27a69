"""Issue 15, the parts below the server: the bundled store is read-only whatever names it, leftovers of
killed writers are cleaned when a store opens, writes are fsynced; SQL has a time limit and a row cap
and one query does not hold the others; a cancelled run stores nothing; only what a run needs is read
and tokenized; params are strict."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from backend import store as store_mod
from backend.codec import CharCodec, HFCodec
from backend.data.text import load_text_dataset
from backend.runner import CancelToken, RunCancelled, Runner
from backend.spec import RunSpec, SpecError
from backend.store import READ_ONLY_MARK, StoreError, TraceStore
from backend.store_reader import SqlError, StoreReader
from tests.backend.test_cli import cli

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_DIR = REPO / "precomputed" / "zoo" / "full"


# ---- store ----------------------------------------------------------------------------------------
def test_bundled_store_is_read_only_whatever_path_names_it(tmp_path, capsys, monkeypatch):
    bundled = REPO / "precomputed" / "store"
    assert (bundled / READ_ONLY_MARK).is_file()
    os.symlink(bundled, tmp_path / "alias")
    for name in (bundled, tmp_path / "alias", REPO / "precomputed" / "store" / ".." / "store"):
        with pytest.raises(StoreError, match="is a bundled read-only store"):
            TraceStore(name)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / READ_ONLY_MARK).write_text("bundled")  # a copy of the bundle keeps its mark
    with pytest.raises(StoreError, match="is a bundled read-only store"):
        TraceStore(copy)
    assert TraceStore(copy, read_only=True).runs() == []
    monkeypatch.chdir(REPO)
    before = sorted(p.name for p in (bundled / "runs").iterdir())
    code, out, err = cli(["run", "--model", "tiny/SF", "--probe", "token_loss", "--data", "stdlib",
                          "--param", "n_docs=1", "--param", "max_tokens=32", "--store", "precomputed/store"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: store: ") and "is a bundled read-only store" in err
    assert sorted(p.name for p in (bundled / "runs").iterdir()) == before


def test_leftovers_of_killed_writers_are_cleaned_when_a_store_opens(tmp_path):
    s = TraceStore(tmp_path / "s")
    s.write_run("keep", {"model": "m"}, {"sweep": {"name": ["a"], "metric": ["m"], "x": [1.0], "y": [2.0],
                                                   "label": [None]}})
    old_tmp = s.run_dir("keep") / f"manifest.json{store_mod.TMP_MARK}dead"
    old_tmp.write_bytes(b"")  # the 0-byte manifest tmp a kill -9 leaves
    half = s.runs_dir / "half"
    half.mkdir()
    (half / f"sweep.parquet{store_mod.TMP_MARK}dead").write_bytes(b"PAR1")
    fresh = s.run_dir("keep") / f"sweep.parquet{store_mod.TMP_MARK}live"
    fresh.write_bytes(b"")  # a writer working right now
    past = time.time() - store_mod.GC_ON_OPEN_S - 60
    for p in (old_tmp, half / f"sweep.parquet{store_mod.TMP_MARK}dead", half):
        os.utime(p, (past, past))
    TraceStore(tmp_path / "s")  # opening cleans
    assert not old_tmp.exists() and not half.exists() and fresh.exists()
    assert s.has("keep", status="ok")


def test_writes_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    synced, renamed = [], []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def replace(a, b):
        renamed.append(str(a))
        assert str(a) in synced, "renamed before its data was on disk"
        return real_replace(a, b)

    monkeypatch.setattr(store_mod.os, "fsync", fsync)
    monkeypatch.setattr(store_mod.os, "replace", replace)
    s = TraceStore(tmp_path / "s")
    s.write_run("r1", {"model": "m"}, {"sweep": {"name": ["a"], "metric": ["m"], "x": [1.0], "y": [2.0],
                                                 "label": [None]}})
    assert len(renamed) == 2  # the table, then the manifest
    assert str(s.run_dir("r1")) in synced  # and the directory after the renames


# ---- SQL ------------------------------------------------------------------------------------------
def test_sql_time_limit_and_one_query_does_not_hold_the_others(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDSCOPE_SQL_TIMEOUT_S", "1.5")
    reader = StoreReader([TraceStore(tmp_path / "s")])
    errors = []

    def slow():
        try:
            reader.sql("SELECT count(*) FROM range(100000000000) t(i) WHERE i % 7 = 3")
        except SqlError as e:
            errors.append(str(e))

    t = threading.Thread(target=slow)
    t0 = time.monotonic()
    t.start()
    time.sleep(0.2)
    quick = time.monotonic()
    assert reader.sql("SELECT 42 AS x").to_pylist() == [{"x": 42}]
    assert time.monotonic() - quick < 1.0  # not queued behind the slow one
    t.join(10)
    assert errors == ["sql: stopped at the time limit of 1.5 s (sql_timeout_s)"]
    assert time.monotonic() - t0 < 5


def test_cli_sql_rows_are_capped(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(tmp_path / "pre"))
    monkeypatch.setenv("HYBRIDSCOPE_SQL_MAX_ROWS", "7")
    code, out, _ = cli(["sql", "SELECT * FROM range(1000000000000)", "--json", "--store", str(tmp_path / "s")],
                       capsys)
    assert code == 0 and len(json.loads(out)) == 7


# ---- cancellation ---------------------------------------------------------------------------------
@pytest.fixture
def docs(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(tmp_path / "pre"))
    d = tmp_path / "docs"
    d.mkdir()
    for i in range(4):
        (d / f"{i}.txt").write_text(f"document {i}: " + "some words to read. " * 20)
    return d


def test_a_cancelled_run_stores_nothing_and_a_rerun_computes(tmp_path, docs):
    runner = Runner(tmp_path / "store", read_only_roots=[])
    spec = RunSpec.build(model="tiny/SF", probe="token_loss", data=f"file:{docs}",
                         params={"n_docs": 4, "max_tokens": 64})
    token, seen = CancelToken(), []

    def progress(f, m):
        seen.append(m)
        if m == "document 2/4":
            token.cancel("run: cancelled by the test")

    with pytest.raises(RunCancelled, match="^run: cancelled by the test$"):
        runner.run(spec, progress, cancel=token)
    assert seen[-1] == "document 2/4"  # stopped at the next check, before document 3
    assert [p for p in (tmp_path / "store" / "runs").rglob("*")] == []  # no tables, no manifest, no error run
    res = runner.run(spec)
    assert not res.cached and res.manifest["status"] == "ok"


def test_wall_clock_limit_of_a_token(tmp_path, docs, monkeypatch):
    import backend.probes.token_loss as token_loss

    real = token_loss.token_nll
    monkeypatch.setattr(token_loss, "token_nll", lambda *a: (time.sleep(0.4), real(*a))[1])
    runner = Runner(tmp_path / "store", read_only_roots=[])
    spec = RunSpec.build(model="tiny/SF", probe="token_loss", data=f"file:{docs}",
                         params={"n_docs": 4, "max_tokens": 64})
    with pytest.raises(RunCancelled, match=r"wall-clock limit of 0\.5 s"):
        runner.run(spec, cancel=CancelToken(limit_s=0.5))
    assert not (tmp_path / "store" / "runs").exists() or not any((tmp_path / "store" / "runs").iterdir())


# ---- read and tokenize only what a run needs --------------------------------------------------------
def test_only_the_sampled_documents_are_read(tmp_path):
    lines = [json.dumps({"text": f"document {i} " * 5}) for i in range(50)]
    lines[7] = "{broken json"  # a line outside the sample is never parsed
    (tmp_path / "d.jsonl").write_text("\n".join(lines))
    docs = load_text_dataset(tmp_path / "d.jsonl", n_docs=3, seed=1)
    assert len(docs) == 3 and all("document" in d.text for d in docs)
    with pytest.raises(ValueError, match=r"d\.jsonl:8: not valid JSON"):
        load_text_dataset(tmp_path / "d.jsonl")  # reading everything does meet it


def test_tokenization_reads_only_a_prefix_and_matches_the_full_text(monkeypatch):
    from transformers import AutoTokenizer

    codec = HFCodec(AutoTokenizer.from_pretrained(TOKENIZER_DIR))
    text = (REPO / "backend" / "runner.py").read_text()
    for n in (1, 16, 200, 10_000_000):
        assert codec.encode(text, max_tokens=n) == _truncated(codec.encode(text), n)
    calls = []
    real = codec._encode
    monkeypatch.setattr(codec, "_encode", lambda t: (calls.append(len(t)), real(t))[1])
    huge = text * 400  # ~4 MB
    t0 = time.monotonic()
    enc = codec.encode(huge, max_tokens=64)
    assert len(enc.ids) == 64 and max(calls) < 10_000 and time.monotonic() - t0 < 2
    assert CharCodec().encode(huge, max_tokens=64).ids == [ord(c) if ord(c) < 256 else 63 for c in huge[:64]]


def _truncated(enc, n):
    enc.ids, enc.offsets = enc.ids[:n], enc.offsets[:n]
    return enc


# ---- strict params --------------------------------------------------------------------------------
@pytest.mark.parametrize("params, field", [
    ({"n_docs": True}, "n_docs"), ({"n_docs": 1e3}, "n_docs"), ({"n_docs": "5"}, "n_docs"),
    ({"max_tokens": 64.0}, "max_tokens"), ({"bucket": False}, "bucket"),
])
def test_params_are_strict(params, field):
    with pytest.raises(SpecError, match=rf"^params\.{field}: Input should be a valid integer"):
        RunSpec.build(model="tiny/SF", probe="token_loss", params=params)


def test_float_params_are_finite_and_take_ints():
    assert RunSpec.build(model="tiny/SF", probe="longppl", params={"alpha": 3, "max_tokens": 4096}).params == {
        "alpha": 3.0}
    for bad in (float("inf"), float("nan"), True, "2"):
        with pytest.raises(SpecError, match=r"^params\.alpha: "):
            RunSpec.build(model="tiny/SF", probe="longppl", params={"alpha": bad})
