"""Trace store: atomic writes, schema validation, merged read-only SQL views."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backend.schema import SCHEMAS, SchemaError, schema_id, validate_table
from backend.store import StoreError, TraceStore
from backend.store_reader import SqlError, StoreReader, check_sql

REPO = Path(__file__).resolve().parents[2]
SPEC = {"model": "zoo/tiny", "probe": "token_loss", "data": "zoo:test", "ablation": {},
        "params": {"n_docs": 2}}
META = {"fingerprints": {"model": "abc"}, "durations": {"total": 1.5}, "ablation_text": "skip=3"}


def token_loss(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "doc": rng.integers(0, 3, n).astype(np.int32), "pos": np.arange(n, dtype=np.int32),
        "token_id": rng.integers(0, 50_000, n), "token": [f"t{i}" for i in rng.integers(0, 99, n)],
        "char_start": np.arange(n) * 3, "char_end": np.arange(n) * 3 + 2,
        "nll": rng.random(n) * 8, "is_key": rng.random(n) > 0.8,
    }


def sweep(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"name": ["rf"] * n, "metric": ["ppl"] * n, "x": rng.random(n), "y": rng.random(n),
                     "label": ["a"] * n})


def test_roundtrip_manifest_and_views_match_pyarrow(tmp_path):
    store = TraceStore(tmp_path / "s")
    tables = {}
    for i in range(3):
        tables[f"r{i}"] = {"token_loss": token_loss(200 + i, i), "sweep": sweep(5, i)}
        m = store.write_run(f"r{i}", SPEC, tables[f"r{i}"], META)
    assert m["status"] == "ok" and m["rows"] == {"token_loss": 202, "sweep": 5} and m["error"] is None
    assert m["fingerprints"] == {"model": "abc"} and m["meta"] == {"ablation_text": "skip=3"}
    assert json.loads((store.run_dir("r2") / "manifest.json").read_text())["spec"] == SPEC
    assert store.runs() == ["r0", "r1", "r2"] and store.has("r1", status="ok") and not store.has("zz")
    back = store.read_table("r1", "token_loss")
    assert back.schema == SCHEMAS["token_loss"]
    np.testing.assert_allclose(back.column("nll").to_numpy(), tables["r1"]["token_loss"]["nll"], rtol=1e-6)

    reader = StoreReader([store.root])
    # reference: pyarrow reads every file; the DuckDB views must give the same numbers
    ref = pa.concat_tables(pq.read_table(store.table_path(f"r{i}", "token_loss")) for i in range(3))
    got = reader.sql("SELECT run_id, count(*) AS n, sum(nll) AS s, sum(is_key::INT) AS k "
                     "FROM token_loss GROUP BY run_id ORDER BY run_id").to_pylist()
    for row in got:
        part = ref.filter(pa.compute.equal(ref["run_id"], row["run_id"]))
        assert row["n"] == part.num_rows
        assert row["s"] == pytest.approx(float(np.sum(part["nll"].to_numpy().astype(np.float64))), rel=1e-9)
        assert row["k"] == int(np.sum(part["is_key"].to_numpy(zero_copy_only=False)))
    runs = reader.sql("SELECT run_id, model, probe, dataset, ablation, params, status, duration_s, n_rows "
                      "FROM runs ORDER BY run_id").to_pylist()
    assert runs[0] == {"run_id": "r0", "model": "zoo/tiny", "probe": "token_loss", "dataset": "zoo:test",
                       "ablation": "skip=3", "params": '{"n_docs":2}', "status": "ok", "duration_s": 1.5,
                       "n_rows": 205}
    assert reader.sql("SELECT * FROM token_loss", max_rows=7).num_rows == 7
    assert reader.sql("SELECT count(*) AS n FROM sweep WHERE x > ?", [2.0]).to_pylist() == [{"n": 0}]


def test_empty_store_has_every_view_with_its_schema(tmp_path):
    reader = StoreReader([tmp_path / "missing", tmp_path / "also-missing"])
    assert reader.sql("SELECT count(*) AS n FROM runs").to_pylist() == [{"n": 0}]
    for name, schema in SCHEMAS.items():
        t = reader.sql(f"SELECT * FROM {name}")
        assert t.num_rows == 0 and t.schema.names == schema.names and t.schema.types == schema.types


def test_write_error_then_rerun_and_overwrite_rules(tmp_path):
    store = TraceStore(tmp_path)
    m = store.write_error("bad", SPEC, "ValueError: text too short")
    assert m["status"] == "error" and m["error"] == "ValueError: text too short" and m["rows"] == {}
    assert not list(store.run_dir("bad").glob("*.parquet"))
    reader = StoreReader([tmp_path])
    assert reader.sql("SELECT status, error, tables FROM runs").to_pylist() == [
        {"status": "error", "error": "ValueError: text too short", "tables": ""}]
    with pytest.raises(StoreError, match="no successful run"):
        store.read_table("bad", "token_loss")
    store.write_run("bad", SPEC, {"sweep": sweep(3, 0)})  # a failed run may be replaced
    with pytest.raises(StoreError, match="already stored; pass overwrite=True"):
        store.write_run("bad", SPEC, {"sweep": sweep(4, 0)})
    with pytest.raises(StoreError, match="already stored"):
        store.write_error("bad", SPEC, "again")
    store.write_run("bad", SPEC, {"token_loss": token_loss(9, 1)}, overwrite=True)
    assert sorted(p.name for p in store.run_dir("bad").iterdir()) == ["manifest.json", "token_loss.parquet"]
    reader.refresh()
    assert reader.sql("SELECT count(*) AS n FROM token_loss").to_pylist() == [{"n": 9}]
    assert reader.sql("SELECT count(*) AS n FROM sweep").to_pylist() == [{"n": 0}]


@pytest.mark.parametrize("run_id", ["", "../x", "a/b", ".hidden", "x" * 129, "a b", None])
def test_bad_run_id(tmp_path, run_id):
    with pytest.raises(StoreError, match="run_id"):
        TraceStore(tmp_path).write_run(run_id, SPEC, {})


def test_read_only_and_unwritable_stores(tmp_path):
    ro = TraceStore(tmp_path / "ro", read_only=True)
    assert not (tmp_path / "ro").exists() and ro.runs() == []
    for call in (lambda: ro.write_run("a", SPEC, {}), lambda: ro.write_error("a", SPEC, "x"), ro.gc):
        with pytest.raises(StoreError, match="read-only"):
            call()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create"):
        TraceStore(tmp_path / "file" / "store")


@pytest.mark.parametrize("table, data, message", [
    ("tokens", {}, "table: unknown table 'tokens'; allowed: token_loss"),
    ("sweep", {"name": ["a"], "metric": ["ppl"], "x": [1.0], "y": [1.0]},
     r"table 'sweep': missing column\(s\) \['label'\]"),
    ("sweep", {"name": ["a"], "metric": ["ppl"], "x": [1.0], "y": [1.0], "label": ["l"], "z": [1]},
     r"table 'sweep': unexpected column\(s\) \['z'\]"),
    ("sweep", {"name": ["a"], "metric": ["ppl"], "x": ["one"], "y": [1.0], "label": ["l"]},
     "table 'sweep': column 'x': expected double, got string"),
    ("niah", {"length": [2**40], "depth": [0.5], "sample": [0], "expected": ["1"], "predicted": ["1"],
              "correct": [True]}, "table 'niah': column 'length': values do not fit int32"),
    ("niah", {"length": [8], "depth": [0.5], "sample": [0], "expected": ["1"], "predicted": ["1"],
              "correct": [None]}, "table 'niah': column 'correct' has 1 null"),
    ("sweep", {"name": ["a", "b"], "metric": ["ppl", "ppl"], "x": [1.0], "y": [1.0], "label": ["l"]},
     "table 'sweep': column 'x' has 1 rows, expected 2"),
    ("sweep", {"run_id": ["other"], "name": ["a"], "metric": ["ppl"], "x": [1.0], "y": [1.0], "label": ["l"]},
     "table 'sweep': column 'run_id' must equal 'r'"),
    ("head_scores", {"layer": [1.5], "head": [0], "layer_type": ["full_attention"], "score": [0.1],
                     "n_samples": [1], "metric": ["mass"]},
     "table 'head_scores': column 'layer': expected int16"),
    ("sweep", [1, 2], "table 'sweep': expected a pyarrow.Table or a dict of columns, got list"),
])
def test_schema_validation_errors_name_table_and_column(tmp_path, table, data, message):
    store = TraceStore(tmp_path)
    ok = {"sweep": sweep(2, 0)}
    with pytest.raises(SchemaError, match=message):
        store.write_run("r", SPEC, {**ok, table: data})
    assert not store.run_dir("r").exists()  # validated before anything is written


def test_validation_casts_safely_and_nullable_columns(tmp_path):
    t = validate_table("longppl", {"doc": [0, 1], "n_tokens": [10, 10], "n_key": [0, 3], "ppl": [2, 3],
                                   "longppl": [None, 4.5]}, "r")
    assert t.schema == SCHEMAS["longppl"] and t.column("run_id").to_pylist() == ["r", "r"]
    assert t.column("longppl").to_pylist() == [None, 4.5] and t.column("ppl").to_pylist() == [2.0, 3.0]
    empty = validate_table("niah", {c: [] for c in SCHEMAS["niah"].names if c != "run_id"}, "r")
    assert empty.num_rows == 0 and empty.schema == SCHEMAS["niah"]


KILLER = """
import os, sys
sys.path.insert(0, {repo!r})
import numpy as np
import pyarrow.parquet as pq
from backend import store as S
mode = sys.argv[1]
if mode == "before-manifest":
    S.TraceStore._write_manifest = lambda self, d, m: os._exit(3)
else:  # die while the second table is being written (its tmp file exists)
    real, calls = pq.write_table, []
    def write(t, p, **kw):
        calls.append(p)
        real(t, p, **kw)
        if len(calls) == 2:
            os._exit(3)
    S.pq.write_table = write
st = S.TraceStore(sys.argv[2])
n = 50
st.write_run("victim", {{"probe": "token_loss"}}, {{
    "sweep": {{"name": ["a"] * n, "metric": ["ppl"] * n, "x": np.arange(n) * 1.0, "y": np.ones(n), "label": ["l"] * n}},
    "position_loss": {{"bucket_start": [0], "bucket_end": [8], "mean_nll": [1.0], "n": [8]}},
}})
"""


@pytest.mark.parametrize("mode", ["before-manifest", "mid-table"])
def test_killed_writer_leaves_nothing_visible_and_run_is_rerunnable(tmp_path, mode):
    root = tmp_path / "s"
    store = TraceStore(root)
    store.write_run("other", SPEC, {"sweep": sweep(3, 1)})
    script = tmp_path / "killer.py"
    script.write_text(textwrap.dedent(KILLER.format(repo=str(REPO))))
    proc = subprocess.run([sys.executable, str(script), mode, str(root)], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    leftovers = sorted(p.name for p in store.run_dir("victim").iterdir())
    assert leftovers and "manifest.json" not in leftovers
    assert any(".tmp-" in n for n in leftovers) == (mode == "mid-table")
    assert not store.has("victim") and store.runs() == ["other"]
    reader = StoreReader([root])
    assert reader.run_ids() == ["other"]
    assert reader.sql("SELECT count(*) AS n FROM sweep").to_pylist() == [{"n": 3}]
    assert reader.sql("SELECT count(*) AS n FROM position_loss").to_pylist() == [{"n": 0}]
    assert store.gc(min_age_s=3600) == []  # too fresh: might be a writer at work
    assert store.gc(min_age_s=0) == [store.run_dir("victim")]
    store.write_run("victim", SPEC, {"sweep": sweep(4, 2)})
    assert reader.refresh() and reader.sql("SELECT count(*) AS n FROM sweep").to_pylist() == [{"n": 7}]


def test_gc_removes_stale_tmp_files_in_complete_runs(tmp_path):
    store = TraceStore(tmp_path)
    store.write_run("a", SPEC, {"sweep": sweep(2, 0)})
    stale = store.run_dir("a") / "sweep.parquet.tmp-deadbeef"
    stale.write_bytes(b"partial")
    os.utime(stale, (0, 0))
    assert StoreReader([tmp_path]).sql("SELECT count(*) AS n FROM sweep").to_pylist() == [{"n": 2}]
    assert store.gc() == [stale] and store.has("a")


def test_readers_never_see_a_run_without_its_tables(tmp_path):
    store = TraceStore(tmp_path)
    reader = StoreReader([tmp_path])
    n_runs, rows = 40, 25
    done = threading.Event()
    errors: list[BaseException] = []

    def writer():
        try:
            for i in range(n_runs):
                store.write_run(f"w{i:03d}", SPEC, {"token_loss": token_loss(rows, i), "sweep": sweep(2, i)})
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
        finally:
            done.set()

    t = threading.Thread(target=writer)
    t.start()
    seen = set()
    while True:
        finished = done.is_set()
        reader.refresh()
        r = reader.sql("SELECT (SELECT count(*) FROM runs) AS runs, (SELECT count(*) FROM token_loss) AS tl, "
                       "(SELECT count(DISTINCT run_id) FROM sweep) AS sw").to_pylist()[0]
        assert r["tl"] == r["runs"] * rows and r["sw"] == r["runs"], r
        for rid in store.runs():  # the writer's own ordering, without the reader's file check
            m = store.manifest(rid)
            assert all((store.run_dir(rid) / f).is_file() for f in m["files"].values()), rid
        seen.add(r["runs"])
        if finished:
            break
    t.join()
    assert not errors and r["runs"] == n_runs and len(seen) > 1


def test_files_of_an_older_schema_are_read_by_name(tmp_path):
    store = TraceStore(tmp_path)
    store.write_run("new", SPEC, {"sweep": sweep(2, 0)})
    store.write_run("old", SPEC, {"sweep": sweep(3, 0)})
    assert store.manifest("new")["schemas"] == {"sweep": schema_id("sweep")}
    reader = StoreReader([tmp_path])
    view_sql = "SELECT sql FROM duckdb_views() WHERE view_name = 'sweep'"
    assert "(union_by_name = false)" in reader.sql(view_sql)[0][0].as_py()
    # an "old" run: written before the nullable column 'label' existed, manifest without schema ids
    path = store.table_path("old", "sweep")
    pq.write_table(pq.read_table(path).drop_columns(["label"]).select(["x", "run_id", "name", "y"]), path)
    m = json.loads((store.run_dir("old") / "manifest.json").read_text())
    del m["schemas"]
    (store.run_dir("old") / "manifest.json").write_text(json.dumps(m))
    reader.refresh()
    assert "(union_by_name = true)" in reader.sql(view_sql)[0][0].as_py()
    got = reader.sql("SELECT run_id, count(*) AS n, count(label) AS labelled, sum(x) > 0 AS has_x FROM sweep "
                     "GROUP BY run_id ORDER BY run_id").to_pylist()
    assert got == [{"run_id": "new", "n": 2, "labelled": 2, "has_x": True},
                   {"run_id": "old", "n": 3, "labelled": 0, "has_x": True}]


def test_two_roots_merged_first_wins(tmp_path):
    user, pre = TraceStore(tmp_path / "user"), TraceStore(tmp_path / "pre")
    user.write_run("shared", SPEC, {"sweep": sweep(2, 0)})
    pre.write_run("shared", SPEC, {"sweep": sweep(5, 0)})
    pre.write_run("only-pre", {**SPEC, "model": "zoo/other"}, {"sweep": sweep(3, 0)})
    user.write_run("only-user", SPEC, {"sweep": sweep(1, 0)})
    reader = StoreReader([user.root, TraceStore(pre.root, read_only=True)])
    got = reader.sql("SELECT run_id, model, store, n_rows FROM runs ORDER BY run_id").to_pylist()
    assert got == [
        {"run_id": "only-pre", "model": "zoo/other", "store": str(pre.root), "n_rows": 3},
        {"run_id": "only-user", "model": "zoo/tiny", "store": str(user.root), "n_rows": 1},
        {"run_id": "shared", "model": "zoo/tiny", "store": str(user.root), "n_rows": 2},
    ]
    assert reader.sql("SELECT count(*) AS n FROM sweep").to_pylist() == [{"n": 6}]


def test_refresh_detects_changes_and_deleted_runs(tmp_path):
    store = TraceStore(tmp_path)
    store.write_run("a", SPEC, {"sweep": sweep(2, 0)})
    store.write_run("b", SPEC, {"sweep": sweep(3, 0)})
    reader = StoreReader([tmp_path])
    assert reader.refresh() is False
    store.delete("a")  # the views still list a's file: the query rebuilds them and retries
    assert reader.sql("SELECT count(*) AS n FROM sweep").to_pylist() == [{"n": 3}]
    assert reader.run_ids() == ["b"]


@pytest.mark.parametrize("query", [
    "INSERT INTO runs VALUES (1)",
    "CREATE TABLE x AS SELECT 1",
    "CREATE VIEW token_loss2 AS SELECT * FROM token_loss",
    "COPY runs TO '/tmp/hybridscope-leak.csv'",
    "ATTACH '/tmp/hybridscope-x.db' AS x",
    "PRAGMA version",
    "SELECT 1; SELECT 2",
    "SELECT 1; DROP VIEW sweep",
    "DROP VIEW sweep",
    "SET enable_external_access = true",
    "CALL pragma_version()",
    "INSTALL httpfs",
    "LOAD httpfs",
    "EXPLAIN ANALYZE INSERT INTO runs VALUES (1)",
    "WITH d AS (DELETE FROM runs RETURNING *) SELECT * FROM d",
    "",
    "-- only a comment",
])
def test_sql_rejects_anything_but_one_read_only_statement(tmp_path, query):
    store = TraceStore(tmp_path)
    store.write_run("a", SPEC, {"sweep": sweep(2, 0)})
    reader = StoreReader([tmp_path])
    with pytest.raises(SqlError, match="^sql: "):
        reader.sql(query)
    assert reader.sql("SELECT count(*) AS n FROM sweep").to_pylist() == [{"n": 2}]
    assert not Path("/tmp/hybridscope-leak.csv").exists()


@pytest.mark.parametrize("query", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM read_parquet('{outside}')",
    "SELECT * FROM '{outside}'",
])
def test_sql_file_access_is_disabled(tmp_path, query):
    store = TraceStore(tmp_path / "s")
    store.write_run("a", SPEC, {"sweep": sweep(2, 0)})
    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"secret": [42]}), outside)
    reader = StoreReader([store.root])
    with pytest.raises(SqlError, match="file access is disabled"):
        reader.sql(query.format(outside=outside))


@pytest.mark.parametrize("query", [
    "SELECT 1", "WITH a AS (SELECT 1 AS x) SELECT x FROM a", "FROM runs", "DESCRIBE token_loss",
    "SHOW TABLES", "SUMMARIZE sweep", "EXPLAIN SELECT * FROM sweep", "VALUES (1), (2)",
    "SELECT 'INSERT INTO runs VALUES (1)' AS s",
])
def test_sql_allows_read_only_statements(tmp_path, query):
    TraceStore(tmp_path).write_run("a", SPEC, {"sweep": sweep(2, 0)})
    assert StoreReader([tmp_path]).sql(query).num_columns >= 1
    assert check_sql(query) == query
