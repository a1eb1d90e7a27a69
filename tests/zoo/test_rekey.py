"""python -m zoo rekey: old runs migrate to the current ids, specs and schemas, values copied exactly (derived
values computed from stored ones), runs today's rules refuse are reported and left, and a second pass
changes nothing."""

from __future__ import annotations

import hashlib
import math

import pyarrow.parquet as pq
import pytest

from backend.spec import RunSpec
from backend.store import TraceStore
from zoo.precompute import FORMATION_DATA, formation_specs
from zoo.rekey import rekey_store

# stored under the old LongPPL defaults (trunc_len 4096, stride 1024): max_tokens 8192 leaves room for key tokens
OLD_PARAMS = {"ks": [8], "n_docs": 2, "max_tokens": 8192}
SPEC = {"model": "tiny/SMGF", "probe": "sweep", "data": "zoo:test", "params": OLD_PARAMS}
FPS = {"model": "m" * 20, "data": "d" * 64}
RECORDS = [{"step": 0, "max_full": 0.01, "top5_full": 0.01}, {"step": 8, "max_full": 0.2, "top5_full": 0.1},
           {"step": 16, "max_full": 0.5, "top5_full": 0.3}]
DOCS = {"n_tokens": [100, 300], "n_key": [2, 6], "ppl": [4.0, 8.0], "longppl": [10.0, 30.0]}


def _old_id(canonical_json: str, version: str) -> str:
    h = hashlib.sha256()
    for part in (canonical_json, FPS["model"], FPS["data"], version):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def _old_json(spec: dict) -> str:
    from backend.store import canonical_json

    return canonical_json(spec)


def _write_old_sweep(store: TraceStore, run_id: str, spec: dict, rows: dict, meta: dict) -> None:
    """A run as the oldest code wrote it: sweep table without the metric column."""
    store.write_run(run_id, spec, {"sweep": {**rows, "metric": ["x"] * len(rows["x"])}}, meta=meta)
    path = store.table_path(run_id, "sweep")
    pq.write_table(pq.read_table(path).drop_columns(["metric"]), path)


def _write_old_longppl(store: TraceStore, abl: str, scale: float) -> tuple[str, dict]:
    """A v2 longppl run (a point of the sweep): per-document rows plus the pooled corpus row (doc -1)."""
    params = {"n_docs": 2, "max_tokens": 8192}
    spec = {"model": SPEC["model"], "probe": "longppl", "data": "zoo:test", "params": params}
    if abl:
        spec["ablation"] = RunSpec.build(model="tiny/SF", probe="token_loss", ablation=abl).canonical()["ablation"]
    lp = [v * scale for v in DOCS["longppl"]]
    pooled_lp = math.exp(sum(n * math.log(v) for n, v in zip(DOCS["n_key"], lp)) / 8)
    pooled_ppl = math.exp(sum(n * math.log(v) for n, v in zip(DOCS["n_tokens"], DOCS["ppl"])) / 400)
    run_id = _old_id(_old_json(spec), "2")
    table = {"doc": [0, 1, -1], "n_tokens": [*DOCS["n_tokens"], 400], "n_key": [*DOCS["n_key"], 8],
             "ppl": [*DOCS["ppl"], pooled_ppl], "longppl": [*lp, pooled_lp]}
    store.write_run(run_id, spec, {"longppl": table, "token_loss": {k: [] for k in (
        "doc", "pos", "token_id", "token", "char_start", "char_end", "nll", "is_key")},
        "position_loss": {"bucket_start": [0], "bucket_end": [256], "mean_nll": [1.5], "n": [3]}},
        meta={"fingerprints": FPS, "probe_version": "2", "longppl": pooled_lp, "ppl": pooled_ppl, "n_key": 8,
              "key_run": "k" * 20})
    return run_id, {"pooled_lp": pooled_lp, "pooled_ppl": pooled_ppl,
                    "ref_lp": sum(n * v for n, v in zip(DOCS["n_key"], lp)) / 8, "ref_ppl": (400 + 2400) / 400}


def test_rekey_migrates_longppl_sweep_and_formation_runs(tmp_path):
    store = TraceStore(tmp_path / "store")
    old_sweep = _old_id(_old_json(SPEC), "3")
    rows = {"name": ["baseline", "baseline (PPL)", "restrict_full", "restrict_full (PPL)"],
            "x": [8192.0, 8192.0, 8.0, 8.0], "y": [5.5, 4.25, 9.0, 7.0],
            "label": ["unrestricted"] * 2 + ["rf[3]=8"] * 2}
    _write_old_sweep(store, old_sweep, SPEC, rows, {"fingerprints": FPS, "probe_version": "3", "points": 2})
    base_id, base = _write_old_longppl(store, "", 1.0)
    rf_id, rf = _write_old_longppl(store, "rf[3]=8", 3.0)
    ((new_formation, fspec, frows),) = formation_specs({"swa64": RECORDS})
    old_formation = "formation-swa64-000000000000"
    _write_old_sweep(store, old_formation, fspec, {k: v for k, v in frows.items() if k != "metric"},
                     {"records": RECORDS})
    # the old default spec (trunc_len 4096 = max_tokens 4096: no key token can exist) cannot be represented
    refused = {"model": "tiny/SF", "probe": "longppl", "params": {"n_docs": 1}}
    refused_id = _old_id(_old_json(refused), "2")
    store.write_run(refused_id, refused, {"longppl": {"doc": [0], "n_tokens": [10], "n_key": [0], "ppl": [3.0],
                                                      "longppl": [None]}}, meta={"probe_version": "2"})
    assert fspec["data"] == FORMATION_DATA

    left: list = []
    changed = dict(rekey_store(store.root, left))

    new = RunSpec.build(**{**SPEC, "params": {**OLD_PARAMS, "trunc_len": 4096, "stride": 1024}})
    assert new.params == {**OLD_PARAMS, "trunc_len": 4096, "stride": 1024}  # the old defaults now explicit
    new_sweep = new.run_id(FPS["model"], FPS["data"])
    assert changed[old_sweep] == new_sweep and changed[old_formation] == new_formation
    assert len(changed) == 4 and {base_id, rf_id} <= set(changed)
    assert [r for r, _ in left] == [refused_id] and "trunc_len must be < max_tokens" in left[0][1]
    assert sorted(store.runs()) == sorted([new_sweep, new_formation, changed[base_id], changed[rf_id], refused_id])

    lp = store.read_table(changed[rf_id], "longppl").to_pydict()
    assert lp["doc"] == [0, 1] and lp["longppl"] == [30.0, 90.0]  # per-document rows copied, doc -1 gone
    corpus = store.read_table(changed[rf_id], "longppl_corpus").to_pydict()
    assert corpus["definition"] == ["reference", "pooled"] and corpus["n_key"] == [8, 8]
    assert corpus["longppl"] == pytest.approx([rf["ref_lp"], rf["pooled_lp"]], rel=1e-12)
    assert corpus["ppl"] == pytest.approx([rf["ref_ppl"], rf["pooled_ppl"]], rel=1e-12)
    meta = store.manifest(changed[rf_id])["meta"]
    assert meta["longppl"] == pytest.approx(rf["ref_lp"]) and meta["longppl_pooled"] == pytest.approx(rf["pooled_lp"])
    assert meta["probe_version"] == "3" and meta["rekeyed_from"] == rf_id

    t = store.read_table(new_sweep, "sweep").to_pydict()
    got = {(n, m, x): y for n, m, x, y in zip(t["name"], t["metric"], t["x"], t["y"])}
    assert got == {  # old (pooled) values kept under *_pooled; reference values from the points' runs
        ("baseline", "longppl", 8192.0): pytest.approx(base["ref_lp"]), ("baseline", "ppl", 8192.0): 7.0,
        ("baseline", "longppl_pooled", 8192.0): 5.5, ("baseline", "ppl_pooled", 8192.0): 4.25,
        ("restrict_full", "longppl", 8.0): pytest.approx(rf["ref_lp"]), ("restrict_full", "ppl", 8.0): 7.0,
        ("restrict_full", "longppl_pooled", 8.0): 9.0, ("restrict_full", "ppl_pooled", 8.0): 7.0,
    }
    m = store.manifest(new_sweep)
    assert m["fingerprints"] == FPS and m["meta"]["probe_version"] == new.probe_version == "5"
    assert m["meta"]["points"] == 2 and m["meta"]["rekeyed_from"] == old_sweep
    assert m["meta"]["reference_points_missing"] == 0
    f = store.read_table(new_formation, "sweep").to_pydict()
    assert f["metric"] == ["retrieval_mass"] * 2 and f["y"] == [0.2, 0.5]
    assert rekey_store(store.root) == []  # already current
