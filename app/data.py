"""The dashboard's read side: a cached StoreReader over the user store and precomputed/ (read-only).

All queries are parameterised (``?`` placeholders); table names come from a fixed allow-list, never
from the URL. Results are cached per store generation, so a new run shows up on the next rerun.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from backend import paths
from backend.schema import TABLES
from backend.store_reader import SqlError, StoreReader
from models.ablation import Ablation, AblationError


def store_dir() -> Path:
    """The user store (the same one the backend writes)."""
    return paths.store_root()


def precomputed_dir() -> Path:
    return paths.precomputed_root()


def roots() -> tuple[str, ...]:
    """User store first (it wins on equal run_ids), then the bundled store, read-only."""
    pre = precomputed_dir()
    pre_store = pre / "store" if (pre / "store" / "runs").is_dir() else pre
    return str(store_dir()), str(pre_store)


@st.cache_resource(show_spinner=False)
def _reader(roots_key: tuple[str, ...]) -> StoreReader:
    return StoreReader(list(roots_key))


def reader() -> StoreReader:
    return _reader(roots())


_GEN: dict[tuple[str, ...], tuple[float, str]] = {}


def generation(max_age_s: float = 1.0) -> str:
    """Changes whenever a run appears, disappears or is replaced (rescans at most once a second)."""
    key = roots()
    now = time.monotonic()
    if key in _GEN and now - _GEN[key][0] < max_age_s:
        return _GEN[key][1]
    r = _reader(key)
    r.refresh()
    gen = (
        f"{len(r.manifests)}:{hash(tuple(sorted((k, m.get('created_at')) for k, m in r.manifests.items())))}"
    )
    _GEN[key] = (now, gen)
    return gen


@st.cache_data(show_spinner=False, max_entries=256)
def _query(
    sql: str, params: tuple, gen: str, roots_key: tuple[str, ...], max_rows: int | None
) -> pd.DataFrame:
    return _reader(roots_key).sql(sql, list(params), max_rows=max_rows).to_pandas()


def query(sql: str, params: tuple | list = (), max_rows: int | None = None) -> pd.DataFrame:
    """Run a fixed, parameterised query (cached per store generation)."""
    return _query(sql, tuple(params), generation(), roots(), max_rows)


def user_sql(sql: str, max_rows: int = 10_000) -> pd.DataFrame:
    """The Runs view's SQL box: read-only checks happen in StoreReader (SqlError on refusal)."""
    return reader().sql(sql, max_rows=max_rows).to_pandas()


def invalidate() -> None:
    """Forget cached results (after a run was computed)."""
    _query.clear()
    _runs.clear()
    _known_models.clear()
    _GEN.clear()
    reader().refresh()


def check_table(name: str) -> str:
    """Allow-list a table name (the only identifiers ever placed into SQL text)."""
    if name not in TABLES and name != "runs":
        raise ValueError(f"table: unknown table {name!r}; allowed: runs, {', '.join(TABLES)}")
    return name


def canonical_ablation(text: str | None) -> str:
    """The runs table holds the ablation as text or JSON; both map to the canonical text form."""
    if not text:
        return ""
    try:
        obj = json.loads(text) if text.lstrip().startswith("{") else None
        return (Ablation(**obj) if isinstance(obj, dict) else Ablation.from_text(text)).to_text()
    except (AblationError, ValueError):
        return text


@st.cache_data(show_spinner=False, max_entries=16)
def _runs(gen: str, roots_key: tuple[str, ...]) -> pd.DataFrame:
    df = (
        _reader(roots_key)
        .sql(
            "SELECT run_id, model, probe, dataset, ablation, params, status, error, created_at, duration_s, "
            "tables, n_rows, store FROM runs ORDER BY created_at DESC, run_id"
        )
        .to_pandas()
    )
    df["abl"] = [canonical_ablation(a) for a in df["ablation"]]
    return df


def runs() -> pd.DataFrame:
    """All runs (any status), newest first, with ``abl``: the canonical ablation text."""
    return _runs(generation(), roots())


@st.cache_data(show_spinner=False, max_entries=16)
def _known_models(gen: str, roots_key: tuple[str, ...], pre: str) -> list[str]:
    names = set(_runs(gen, roots_key)["model"].dropna())
    try:
        from backend.model_refs import list_models

        names |= set(list_models())
    except Exception:  # noqa: BLE001 - a broken model root must not break the dashboard
        pass
    return sorted(names, key=lambda m: (not m.startswith("zoo/"), m))


def known_models() -> list[str]:
    """Models with runs in any store, plus the bundled and configured ones (sorted; zoo first)."""
    return _known_models(generation(), roots(), str(precomputed_dir()))


def matching_runs(probe: str, model: str | None, abl: str, data: str | None = None) -> pd.DataFrame:
    """Runs (any status, newest first) of ``probe`` on ``model`` with ablation ``abl`` (and dataset)."""
    df = runs()
    df = df[(df["probe"] == probe) & (df["model"] == model) & (df["abl"] == canonical_ablation(abl))]
    return df[df["dataset"] == data] if data else df


def find_run(
    probe: str, model: str | None, abl: str, data: str | None = None, params: dict[str, Any] | None = None
) -> tuple[str | None, str | None]:
    """(run_id of the best matching successful run, error of a matching failed run).

    Matches probe, model and canonical ablation; ``data``/``params`` narrow when given (an exact
    params match is preferred; with no params asked for, a run with default params is preferred).
    """
    if not model:
        return None, None
    df = matching_runs(probe, model, abl, data)
    want = json.dumps(params or {}, sort_keys=True, separators=(",", ":"))
    exact = df[df["params"] == want]
    if params or not exact.empty:
        df = exact
    ok = df[df["status"] == "ok"]
    if not ok.empty:
        return str(ok.iloc[0]["run_id"]), None
    failed = df[df["status"] == "error"]
    return None, (str(failed.iloc[0]["error"]) if not failed.empty else None)


def layer_types(run_id: str) -> list[str]:
    """Layer kinds of a run's model, from its head_scores (empty when unknown)."""
    df = query(
        "SELECT layer, any_value(layer_type) AS t FROM head_scores WHERE run_id = ? "
        "GROUP BY layer ORDER BY layer",
        (run_id,),
    )
    return list(df["t"])


def provenance() -> str | None:
    """A label when traces are not from trained models: synthetic (fake) or random-init tiny models."""
    df = query("SELECT model, meta FROM runs")
    if df.empty:
        return None
    if df["meta"].fillna("").str.contains('"fake":true').any():
        return "Some traces here are synthetic (fake numbers written by the test/demo client)."
    if df["model"].fillna("").str.startswith("tiny/").all():
        return (
            "These traces come from small randomly initialised models: they show how the views work, "
            "not the paper's findings."
        )
    return None


def most_complete(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per ``keys``: the run over the most documents, the newest among equals (a receptive-field
    sweep's 2-document baseline must not hide the 13-document LongPPL run of the same model)."""
    df = df.sort_values(["n_docs", "created_at"], ascending=False)
    return df.drop_duplicates(keys).sort_values(keys)


def longppl_summary() -> pd.DataFrame:
    """Corpus PPL and LongPPL per (model, ablation), from the run over the most documents (newest first)."""
    df = query("""
        SELECT r.run_id, r.model, r.ablation, r.created_at,
               exp(sum(l.n_tokens * ln(l.ppl)) / sum(l.n_tokens)) AS ppl,
               exp(sum(CASE WHEN l.n_key > 0 THEN l.n_key * ln(l.longppl) END)
                   / nullif(sum(CASE WHEN l.n_key > 0 THEN l.n_key END), 0)) AS longppl,
               sum(l.n_key) AS n_key, count(*) AS n_docs
        FROM longppl l JOIN runs r USING (run_id) WHERE r.status = 'ok' AND l.doc >= 0
        GROUP BY r.run_id, r.model, r.ablation, r.created_at""")  # doc -1 is the corpus row: left out
    df["ablation"] = [canonical_ablation(a) for a in df["ablation"]]
    return most_complete(df, ["model", "ablation"])


SWEEP_PPL_SUFFIX = " (PPL)"  # backend/probes/sweep.py's PPL_SUFFIX (the app does not import probes)


def sweeps() -> pd.DataFrame:
    """Every sweep row with the model of its run."""
    return query(
        "SELECT r.model, s.name, s.x, s.y, s.label FROM sweep s JOIN runs r USING (run_id) "
        "WHERE r.status = 'ok' ORDER BY r.model, s.name, s.x"
    )


def receptive_field_sweeps(df: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """The receptive-field sweep rows (formation series left out) by metric: {"LongPPL": ..., "PPL": ...},
    series names without the PPL suffix; a metric without rows is left out."""
    df = sweeps() if df is None else df
    df = df[~df["name"].str.startswith("formation")]
    is_ppl = df["name"].str.endswith(SWEEP_PPL_SUFFIX)
    ppl = df[is_ppl].assign(name=df.loc[is_ppl, "name"].str.removesuffix(SWEEP_PPL_SUFFIX))
    out = {"LongPPL": df[~is_ppl], "PPL": ppl}
    return {k: v.reset_index(drop=True) for k, v in out.items() if not v.empty}


def position_curve(run_id: str) -> pd.DataFrame:
    """Loss vs position of one token_loss run: its position_loss table, else buckets of 256 tokens."""
    df = query(
        "SELECT bucket_start, sum(mean_nll * n) / sum(n) AS mean_nll FROM position_loss "
        "WHERE run_id = ? GROUP BY bucket_start ORDER BY bucket_start",
        (run_id,),
    )
    if df.empty:
        df = query(
            "SELECT (pos // 256) * 256 AS bucket_start, avg(nll) AS mean_nll FROM token_loss "
            "WHERE run_id = ? GROUP BY 1 ORDER BY 1",
            (run_id,),
        )
    return df


def niah_grid(run_id: str) -> pd.DataFrame:
    return query(
        "SELECT length, depth, avg(CASE WHEN correct THEN 1.0 ELSE 0.0 END) AS acc, count(*) AS n "
        "FROM niah WHERE run_id = ? GROUP BY length, depth ORDER BY length, depth",
        (run_id,),
    )


__all__ = ["SqlError", "query", "user_sql", "runs", "find_run", "known_models", "store_dir", "roots"]
