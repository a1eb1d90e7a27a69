"""Re-key a trace store after a probe-version, parameter-default or table-schema change:
``python -m zoo rekey --store DIR`` (and ``--dashboard FILE`` to rewrite the bundle's dashboard.json).

A run_id hashes the canonical spec, the fingerprints and the probe version, so bumping a probe's
version leaves stored runs under ids nobody asks for, and changing a params default changes what a
stored spec (only non-default params are written) means. This tool migrates, run by run, never
recomputing a number (every value is copied; derived values are computed from stored ones):

* ``key_tokens`` (v2 -> v3), ``longppl`` (v2 -> v3), ``sweep`` (v3/v4 -> v5): stored specs were written
  under the LongPPL defaults of before (``trunc_len=4096, stride=1024``): those are filled in and the
  spec re-canonicalised under today's defaults (a spec that today's rules refuse, e.g. the old default
  ``trunc_len = max_tokens``, which has no key token, is left where it is and reported). A longppl run's
  corpus row (doc -1, the pooled value) becomes the ``longppl_corpus`` table with both definitions
  (the reference's and pooled) computed from the per-document rows; its manifest's ``longppl``/``ppl``
  become the reference's values, ``longppl_pooled``/``ppl_pooled`` the pooled ones, ``key_run`` the
  re-keyed id. A sweep's old rows (pooled numbers) become metrics ``longppl_pooled``/``ppl_pooled`` and
  its ``longppl``/``ppl`` rows are taken from its points' re-keyed longppl runs (when in the store);
* ``sweep`` tables of the oldest schema (series told apart by a ``" (PPL)"`` name suffix) get the
  ``metric`` column;
* formation runs (written by precompute from ``formation.json``) are rewritten by
  :func:`zoo.precompute.write_formation` from the records their manifest keeps.

Runs that are already current are left as they are. Prints what changed; a second run changes nothing.
"""

from __future__ import annotations

from pathlib import Path

from backend.probes.longppl import corpus_meta
from backend.probes.longppl_math import corpus_rows
from backend.probes.registry import PROBES
from backend.spec import RunSpec, SpecError
from backend.store import TraceStore
from zoo.precompute import FORMATION_DATA, formation_specs, write_formation

OLD_PPL_SUFFIX = " (PPL)"
# LongPPLParams defaults that stored specs of these probes (versions before today's) were written under
OLD_LONGPPL_DEFAULTS = {"trunc_len": 4096, "stride": 1024}
OLD_DEFAULT_VERSIONS = {"key_tokens": ("1", "2"), "longppl": ("1", "2"), "sweep": ("1", "2", "3", "4")}
ORDER = ("key_tokens", "longppl", "sweep")  # dependencies first: later runs point at re-keyed ids
_LONGPPL = ("n_docs", "max_tokens", "trunc_len", "stride", "alpha", "beta", "evaluator")


def sweep_rows_with_metric(rows: dict) -> dict:
    """Old-schema sweep rows -> rows with a ``metric`` column (from the name suffix); others as is."""
    if "metric" in rows:
        return rows
    ppl = [n.endswith(OLD_PPL_SUFFIX) for n in rows["name"]]
    return {
        "name": [n.removesuffix(OLD_PPL_SUFFIX) for n in rows["name"]],
        "metric": ["ppl" if p else "longppl" for p in ppl],
        **{k: rows[k] for k in ("x", "y", "label")},
    }


def current_spec(spec: dict, version: str | None) -> RunSpec:
    """The stored ``spec`` (written by probe ``version``) as today's RunSpec: old defaults filled in."""
    params = dict(spec.get("params") or {})
    if version in OLD_DEFAULT_VERSIONS.get(spec["probe"], ()) or version is None:
        params = {**OLD_LONGPPL_DEFAULTS, **params}
    return RunSpec.build(**{**spec, "params": params})


def _version(m: dict) -> str | None:
    return (m.get("meta") or {}).get("probe_version")


def _tables(store: TraceStore, run_id: str, m: dict) -> dict:
    out = {}
    for name in m["files"]:
        t = store.read_table(run_id, name).to_pydict()
        t.pop("run_id", None)
        out[name] = t
    return out


def _migrate_longppl(tables: dict) -> tuple[dict, dict]:
    """(tables, meta update) of a v2 longppl run: doc -1 dropped, longppl_corpus derived."""
    lp = tables["longppl"]
    keep = [i for i, d in enumerate(lp["doc"]) if d >= 0]
    lp = {k: [v[i] for i in keep] for k, v in lp.items()}
    corpus = corpus_rows(lp["n_tokens"], lp["n_key"], lp["ppl"], lp["longppl"])
    return {**tables, "longppl": lp, "longppl_corpus": corpus}, corpus_meta(corpus)


def _migrate_sweep(store: TraceStore, spec: RunSpec, rows: dict, fps: dict, ids: dict) -> tuple[dict, int]:
    """(rows, points without a longppl run) of an old sweep: old values as pooled metrics, reference
    values from each point's (re-keyed) longppl run."""
    rows = sweep_rows_with_metric(rows)
    p = spec.typed_params
    params = {k: getattr(p, k) for k in _LONGPPL if getattr(p, k) is not None}
    points: dict[tuple, None] = {}
    for n, x, label in zip(rows["name"], rows["x"], rows["label"], strict=True):
        points.setdefault((n, x, label), None)
    old = {(n, x, label, metric): y for n, metric, x, y, label in
           zip(rows["name"], rows["metric"], rows["x"], rows["y"], rows["label"], strict=True)}
    out: dict[str, list] = {k: [] for k in ("name", "metric", "x", "y", "label")}
    missing = 0
    for n, x, label in points:
        abl = "" if label == "unrestricted" else label
        lp = RunSpec.build(model=spec.model, probe="longppl", data=spec.data, ablation=abl, params=params)
        lp_id = lp.run_id(fps.get("model", ""), fps.get("data", ""))
        meta = (store.manifest(lp_id) or {}).get("meta") or {} if store.has(lp_id, status="ok") else {}
        missing += not meta
        values = {"longppl": meta.get("longppl"), "ppl": meta.get("ppl"),
                  "longppl_pooled": old.get((n, x, label, "longppl")), "ppl_pooled": old.get((n, x, label, "ppl"))}
        for metric, y in values.items():
            if y is None:
                continue
            for k, v in (("name", n), ("metric", metric), ("x", x), ("y", float(y)), ("label", label)):
                out[k].append(v)
    return out, missing


def rekey_store(root: str | Path, report: list | None = None) -> list[tuple[str, str]]:
    """Migrate the store at ``root``; returns ``(old run_id, new run_id)`` for every run rewritten.
    Runs that cannot be migrated are appended to ``report`` as ``(run_id, reason)``."""
    store = TraceStore(root, allow_bundled=True)  # the tool that maintains the bundle
    changed: list[tuple[str, str]] = []
    ids: dict[str, str] = {}
    manifests = {r: store.manifest(r) for r in store.runs()}
    todo = sorted((r for r, m in manifests.items() if m and m.get("status") == "ok"),
                  key=lambda r: (ORDER.index(p) if (p := manifests[r]["spec"]["probe"]) in ORDER else -1, r))
    for run_id in todo:
        m = manifests[run_id]
        spec, meta = m["spec"], m.get("meta") or {}
        probe = spec["probe"]
        if probe == "sweep" and spec.get("data") == FORMATION_DATA:
            current = "metric" in store.read_table(run_id, "sweep").column_names
            formation = {spec["model"].removeprefix("zoo/"): meta["records"]}
            ((new_id, _, _),) = formation_specs(formation)
            if new_id == run_id and current:
                continue
            write_formation(store, formation)
        elif probe in ORDER:
            version = _version(m)
            if version == PROBES[probe].version:
                continue
            try:
                run_spec = current_spec(spec, version)
            except SpecError as e:
                if report is not None:
                    report.append((run_id, f"left as is: {e}"))
                continue
            fps = m.get("fingerprints") or meta.get("fingerprints") or {}
            tables, extra = _tables(store, run_id, m), {}
            if probe == "longppl":
                tables, extra = _migrate_longppl(tables)
                if meta.get("key_run") in ids:
                    extra["key_run"] = ids[meta["key_run"]]
            elif probe == "sweep":
                tables["sweep"], missing = _migrate_sweep(store, run_spec, tables["sweep"], fps, ids)
                extra["reference_points_missing"] = missing
            new_id = run_spec.run_id(fps.get("model", ""), fps.get("data", ""))
            store.write_run(new_id, run_spec.canonical(), tables, overwrite=True,
                            meta={**meta, **extra, "fingerprints": fps, "durations": m.get("durations") or {},
                                  "code_version": m.get("code_version"), "probe_version": run_spec.probe_version,
                                  "rekeyed_from": run_id})
        else:
            continue
        ids[run_id] = new_id
        if new_id != run_id:
            store.delete(run_id)
            changed.append((run_id, new_id))
    return changed
