"""Re-key a trace store after a probe-version or table-schema change: ``python -m zoo rekey --store DIR``.

A run_id hashes the canonical spec, the fingerprints and the probe version, so bumping a probe's
version leaves stored runs under ids nobody asks for. This tool migrates, run by run:

* ``sweep`` tables of the old schema (LongPPL and PPL series told apart by a ``" (PPL)"`` name
  suffix) get the ``metric`` column; a sweep run is re-keyed to ``spec.run_id(fingerprints)`` with the
  current probe version (its manifest meta keeps everything else, ``probe_version`` updated);
* formation runs (retrieval-head formation, written by precompute from ``formation.json``) are
  rewritten by :func:`zoo.precompute.write_formation` from the records their manifest keeps, so
  they get exactly the ids and rows a fresh precompute writes.

Runs that are already current are left as they are; numbers are never recomputed (every value is
copied). Prints what changed; running it twice changes nothing the second time.
"""

from __future__ import annotations

from pathlib import Path

from backend.spec import RunSpec
from backend.store import TraceStore
from zoo.precompute import FORMATION_DATA, formation_specs, write_formation

OLD_PPL_SUFFIX = " (PPL)"


def sweep_rows_with_metric(rows: dict) -> dict:
    """Old-schema sweep rows -> the current schema (``metric`` from the name suffix); current rows as is."""
    if "metric" in rows:
        return rows
    ppl = [n.endswith(OLD_PPL_SUFFIX) for n in rows["name"]]
    return {
        "name": [n.removesuffix(OLD_PPL_SUFFIX) for n in rows["name"]],
        "metric": ["ppl" if p else "longppl" for p in ppl],
        **{k: rows[k] for k in ("x", "y", "label")},
    }


def rekey_store(root: str | Path) -> list[tuple[str, str]]:
    """Migrate the store at ``root``; returns ``(old run_id, new run_id)`` for every run rewritten."""
    store = TraceStore(root, allow_bundled=True)  # the tool that maintains the bundle
    changed: list[tuple[str, str]] = []
    for run_id in store.runs():
        m = store.manifest(run_id)
        if not m or m.get("status") != "ok" or "sweep" not in (m.get("rows") or {}):
            continue
        spec, meta = m["spec"], m.get("meta") or {}
        current = "metric" in store.read_table(run_id, "sweep").column_names
        if spec.get("data") == FORMATION_DATA:
            formation = {spec["model"].removeprefix("zoo/"): meta["records"]}
            ((new_id, _, _),) = formation_specs(formation)
            if new_id == run_id and current:
                continue
            write_formation(store, formation)
        else:
            rows = store.read_table(run_id, "sweep").to_pydict()
            rows.pop("run_id", None)
            fps = m.get("fingerprints") or {}
            run_spec = RunSpec.build(**spec)
            new_id = run_spec.run_id(fps.get("model", ""), fps.get("data", ""))
            if new_id == run_id and current:
                continue
            store.write_run(new_id, spec, {"sweep": sweep_rows_with_metric(rows)}, overwrite=True,
                            meta={**meta, "fingerprints": fps, "durations": m.get("durations") or {},
                                  "code_version": m.get("code_version"), "probe_version": run_spec.probe_version,
                                  "rekeyed_from": run_id})
        if new_id != run_id:
            store.delete(run_id)
            changed.append((run_id, new_id))
    return changed
