"""python -m zoo rekey: old-schema sweep runs and formation runs migrate to the current ids and schema,
values copied exactly, and a second pass changes nothing."""

from __future__ import annotations

import hashlib

import pyarrow.parquet as pq

from backend.spec import RunSpec
from backend.store import TraceStore
from zoo.precompute import FORMATION_DATA, formation_specs
from zoo.rekey import rekey_store

SPEC = {"model": "tiny/SMGF", "probe": "sweep", "data": "zoo:test", "params": {"ks": [8, 32], "n_docs": 2}}
FPS = {"model": "m" * 20, "data": "d" * 64}
RECORDS = [{"step": 0, "max_full": 0.01, "top5_full": 0.01}, {"step": 8, "max_full": 0.2, "top5_full": 0.1},
           {"step": 16, "max_full": 0.5, "top5_full": 0.3}]


def _old_id(spec: RunSpec, version: str) -> str:
    h = hashlib.sha256()
    for part in (spec.canonical_json(), FPS["model"], FPS["data"], version):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def _write_old(store: TraceStore, run_id: str, spec: dict, rows: dict, meta: dict) -> None:
    """A run as the previous code wrote it: sweep table without the metric column."""
    store.write_run(run_id, spec, {"sweep": {**rows, "metric": ["x"] * len(rows["x"])}}, meta=meta)
    path = store.table_path(run_id, "sweep")
    pq.write_table(pq.read_table(path).drop_columns(["metric"]), path)


def test_rekey_migrates_sweep_and_formation_runs(tmp_path):
    store = TraceStore(tmp_path / "store")
    spec = RunSpec.build(**SPEC)
    old_sweep = _old_id(spec, "3")
    rows = {"name": ["baseline", "baseline (PPL)", "restrict_full", "restrict_full (PPL)"],
            "x": [300.0, 300.0, 8.0, 8.0], "y": [5.5, 4.25, 9.0, 7.0], "label": ["unrestricted"] * 2 + ["rf[3]=8"] * 2}
    _write_old(store, old_sweep, spec.canonical(), rows, {"fingerprints": FPS, "probe_version": "3", "points": 2})
    ((new_formation, fspec, frows),) = formation_specs({"swa64": RECORDS})
    old_formation = "formation-swa64-000000000000"
    _write_old(store, old_formation, fspec, {k: v for k, v in frows.items() if k != "metric"},
               {"records": RECORDS})
    assert fspec["data"] == FORMATION_DATA

    changed = dict(rekey_store(store.root))

    new_sweep = spec.run_id(FPS["model"], FPS["data"])
    assert changed == {old_sweep: new_sweep, old_formation: new_formation} and new_sweep != old_sweep
    assert sorted(store.runs()) == sorted([new_sweep, new_formation])
    t = store.read_table(new_sweep, "sweep").to_pydict()
    assert t["name"] == ["baseline", "baseline", "restrict_full", "restrict_full"]
    assert t["metric"] == ["longppl", "ppl", "longppl", "ppl"]
    assert t["x"] == rows["x"] and t["y"] == rows["y"] and t["label"] == rows["label"]
    m = store.manifest(new_sweep)
    assert m["fingerprints"] == FPS and m["meta"]["probe_version"] == spec.probe_version == "4"
    assert m["meta"]["points"] == 2 and m["meta"]["rekeyed_from"] == old_sweep
    f = store.read_table(new_formation, "sweep").to_pydict()
    assert f["metric"] == ["retrieval_mass"] * 2 and f["y"] == [0.2, 0.5]
    assert rekey_store(store.root) == []  # already current

