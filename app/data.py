"""The dashboard's read side: a cached StoreReader over the user store and precomputed/ (read-only).

All queries are parameterised (``?`` placeholders); table names come from a fixed allow-list, never
from the URL. Results are cached per store generation, so a new run shows up on the next rerun.
A view finds its run by the canonical RunSpec (:func:`find_run`: the ``runs.spec`` column, or the
run_id a submit of this session returned for that spec, else the same run under another spelling of
its ablation, :func:`equivalent_run`); views that compare many runs aggregate by SQL
over the stored columns (the ``ablation`` column is the runner's canonical text form).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from backend import ablation_match, paths
from backend.schema import TABLES
from backend.spec import RunSpec
from backend.store import canonical_json
from backend.store_reader import SqlError, StoreReader
from models.plan import ModelInfo


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
    _model_info.clear()
    _provenance.clear()
    _GEN.clear()
    reader().refresh()


def check_table(name: str) -> str:
    """Allow-list a table name (the only identifiers ever placed into SQL text)."""
    if name not in TABLES and name != "runs":
        raise ValueError(f"table: unknown table {name!r}; allowed: runs, {', '.join(TABLES)}")
    return name


@st.cache_data(show_spinner=False, max_entries=16)
def _runs(gen: str, roots_key: tuple[str, ...]) -> pd.DataFrame:
    return (
        _reader(roots_key)
        .sql(
            "SELECT run_id, model, probe, dataset, ablation, params, status, error, created_at, duration_s, "
            "tables, n_rows, store FROM runs ORDER BY created_at DESC, run_id"
        )
        .to_pandas()
    )


def runs() -> pd.DataFrame:
    """All runs (any status), newest first."""
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


_SUBMITTED = "_hs_submitted"  # session state: canonical spec JSON -> the run_id its submit returned


def remember(spec: RunSpec, run_id: str) -> None:
    """Keep the run_id a submit of ``spec`` returned: this session shows that run for the spec."""
    st.session_state.setdefault(_SUBMITTED, {})[spec.canonical_json()] = run_id


def find_run(spec: RunSpec) -> tuple[str | None, str | None]:
    """(run_id of the run of exactly ``spec``, error of its failed run when none succeeded).

    The run a submit of this session returned for the spec comes first; else the newest successful
    run whose stored canonical spec (``runs.spec``) is the spec's canonical JSON.
    """
    key = spec.canonical_json()
    mine = st.session_state.get(_SUBMITTED, {}).get(key)
    if mine:  # the backend may answer with the run of another spelling of the ablation: same model/probe
        df = query(
            "SELECT run_id FROM runs WHERE run_id = ? AND model = ? AND probe = ? AND status = 'ok'",
            (mine, spec.model, spec.probe),
        )
        if not df.empty:
            return mine, None
    df = query(
        "SELECT run_id, status, error FROM runs WHERE spec = ? ORDER BY created_at DESC, run_id", (key,)
    )
    ok = df[df["status"] == "ok"]
    if not ok.empty:
        return str(ok.iloc[0]["run_id"]), None
    same = equivalent_run(spec)
    if same:
        return same, None
    failed = df[df["status"] == "error"]
    return None, (str(failed.iloc[0]["error"]) if not failed.empty else None)


@st.cache_data(show_spinner=False, max_entries=64)
def _model_info(model: str, gen: str, roots_key: tuple[str, ...], pre: str) -> ModelInfo | None:
    df = _reader(roots_key).sql(
        "SELECT meta FROM runs WHERE model = ? AND status = 'ok' AND meta LIKE '%\"model_info\"%' "
        "ORDER BY created_at DESC LIMIT 1",
        [model],
    ).to_pandas()
    info = ablation_match.info_of_meta(df["meta"].iloc[0]) if not df.empty else None
    if info is None:
        try:
            from backend.model_refs import resolve

            path = resolve(model).path
        except Exception:  # noqa: BLE001 - an unknown or unreadable ref: no info, exact matches only
            path = None
        info = ablation_match.native_info_at(path) if path is not None else None
    return info


def model_info(model: str | None) -> ModelInfo | None:
    """The layer layout of ``model`` (torch-free): the ``model_info`` its newest run stored, else its
    native config.json; None when neither is known (ablations then match only as spelled)."""
    return _model_info(model, generation(), roots(), str(precomputed_dir())) if model else None


def equivalent_run(spec: RunSpec) -> str | None:
    """The newest ok run of ``spec`` stored under another spelling of its ablation: the same model,
    probe, dataset and params, and an ablation that does the same to the model (``rf[full]=64`` is the
    bundled ``rf[3,7]=64``; :mod:`backend.ablation_match`)."""
    info = model_info(spec.model)
    if info is None:
        return None
    df = query(
        "SELECT run_id, ablation FROM runs WHERE model = ? AND probe = ? AND status = 'ok' "
        "AND coalesce(dataset, '') = ? AND params = ? ORDER BY created_at DESC, run_id",
        (spec.model, spec.probe, spec.data or "", canonical_json(spec.params)),
    )
    for run_id, abl in zip(df["run_id"], df["ablation"].fillna(""), strict=True):
        if ablation_match.same_effect(abl, spec.ablation, info):
            return str(run_id)
    return None


def meaning(ablation: str | None, model: str | None = None) -> str:
    """An ablation named by what it does on ``model`` (``efficient layers, k=64``; ``none``)."""
    return ablation_match.meaning(ablation or "", model_info(model))


def attention_rows(spec: RunSpec, layer: int, head: int) -> pd.DataFrame:
    """Top attended keys of (layer, head): from the run of exactly ``spec``, else from the newest
    successful attention_rows run of the same model and ablation that holds this head (any dataset or
    params: the rows say which queries they are)."""
    run_id, _ = find_run(spec)
    cols = "a.run_id, a.query_pos, a.rank, a.key_pos, a.weight, a.token"
    if run_id:
        df = query(
            f"SELECT {cols} FROM attention_rows a WHERE a.run_id = ? AND a.layer = ? AND a.head = ? "
            "ORDER BY a.query_pos, a.rank",
            (run_id, layer, head),
        )
        if not df.empty:
            return df
    df = query(
        f"SELECT {cols} FROM attention_rows a JOIN runs r USING (run_id) WHERE r.status = 'ok' "
        "AND r.model = ? AND coalesce(r.ablation, '') = ? AND a.layer = ? AND a.head = ? "
        "ORDER BY r.created_at DESC, a.run_id, a.query_pos, a.rank",
        (spec.model, spec.ablation.to_text(), layer, head),
    )
    return df[df["run_id"] == df["run_id"].iloc[0]] if not df.empty else df


def layer_types(run_id: str) -> list[str]:
    """Layer kinds of a run's model, from its head_scores (empty when unknown)."""
    df = query(
        "SELECT layer, any_value(layer_type) AS t FROM head_scores WHERE run_id = ? "
        "GROUP BY layer ORDER BY layer",
        (run_id,),
    )
    return list(df["t"])


def provenance() -> str | None:
    """A label when traces are not from trained models: synthetic (fake) or random-init tiny models
    (cached per store generation: every rerun shows it, and it reads every run's meta)."""
    return _provenance(generation(), roots())


@st.cache_data(show_spinner=False, max_entries=16)
def _provenance(gen: str, roots_key: tuple[str, ...]) -> str | None:
    df = _reader(roots_key).sql("SELECT model, meta FROM runs").to_pandas()
    if df.empty:
        return None
    if df["meta"].fillna("").str.contains('"fake":true').any():
        return "Some traces here are synthetic (fake numbers written by a test double)."
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
    """Corpus PPL and LongPPL per (model, ablation), from the run over the most documents (newest first).

    ``ppl``/``longppl``: the reference's definition (Fang et al.'s script; the values compared with the
    literature): token- / key-token-weighted arithmetic means of the per-document values.
    ``ppl_pooled``/``longppl_pooled``: exp of the mean NLL over all tokens / all key tokens."""
    df = query("""
        SELECT r.run_id, r.model, r.ablation, r.created_at,
               sum(l.n_tokens * l.ppl) / sum(l.n_tokens) AS ppl,
               sum(CASE WHEN l.n_key > 0 THEN l.n_key * l.longppl END)
                   / nullif(sum(CASE WHEN l.n_key > 0 THEN l.n_key END), 0) AS longppl,
               exp(sum(l.n_tokens * ln(l.ppl)) / sum(l.n_tokens)) AS ppl_pooled,
               exp(sum(CASE WHEN l.n_key > 0 THEN l.n_key * ln(l.longppl) END)
                   / nullif(sum(CASE WHEN l.n_key > 0 THEN l.n_key END), 0)) AS longppl_pooled,
               sum(l.n_key) AS n_key, count(*) AS n_docs
        FROM longppl l JOIN runs r USING (run_id) WHERE r.status = 'ok' AND l.doc >= 0
        GROUP BY r.run_id, r.model, r.ablation, r.created_at""")  # doc -1 (the corpus row of v2 runs): left out
    return most_complete(df, ["model", "ablation"])


SWEEP_METRICS = {"LongPPL": "longppl", "PPL": "ppl"}  # chart title -> sweep.metric of the receptive-field sweep
POOLED_SWEEP_METRICS = {"LongPPL (pooled)": "longppl_pooled", "PPL (pooled)": "ppl_pooled"}  # in the tables only
FORMATION_METRIC = "retrieval_mass"  # sweep.metric of retrieval-head formation series ("formation:<variant>")


def sweeps() -> pd.DataFrame:
    """Every sweep row (name = series, metric) with the model of its run."""
    return query(
        "SELECT r.model, s.name, s.metric, s.x, s.y, s.label FROM sweep s JOIN runs r USING (run_id) "
        "WHERE r.status = 'ok' ORDER BY r.model, s.name, s.x"
    )


def receptive_field_sweeps(df: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """The receptive-field sweep rows by metric, {"LongPPL": ..., "PPL": ...} (formation series and
    other metrics left out); a metric without rows is left out."""
    df = sweeps() if df is None else df
    out = {title: df[df["metric"] == metric] for title, metric in SWEEP_METRICS.items()}
    return {k: v.reset_index(drop=True) for k, v in out.items() if not v.empty}


def formation_series(df: pd.DataFrame | None = None) -> pd.DataFrame:
    """Retrieval-head formation rows (max retrieval score vs training step, one series per variant)."""
    df = sweeps() if df is None else df
    return df[df["metric"] == FORMATION_METRIC].reset_index(drop=True)


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


__all__ = ["SqlError", "find_run", "known_models", "query", "remember", "roots", "runs", "store_dir", "user_sql"]
