"""Runs: the cached runs table with filters, a read-only SQL box, and downloads of any table slice."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import charts, data, session, state
from app.state import RUN_PROBES, ViewState
from app.views import header
from backend.schema import TABLES

EXAMPLE_SQL = (
    "SELECT r.model, r.ablation, avg(t.nll) AS mean_loss, count(*) AS tokens\n"
    "FROM token_loss t JOIN runs r USING (run_id)\nGROUP BY ALL ORDER BY mean_loss"
)


SHOWN = ["model", "probe", "meaning", "ablation", "dataset", "params", "status", "n_rows", "tables",
         "created_at", "duration_s", "run_id", "error", "store"]


def overview_table(df: pd.DataFrame) -> pd.DataFrame:
    """The runs as one readable table: successful runs first, grouped by model and probe (the run panel's
    probes first, internal ones such as key_tokens after), the ablation also by meaning
    (``efficient layers, k=64``)."""
    out = df.assign(
        meaning=[data.meaning(a, m) for a, m in zip(df["ablation"], df["model"], strict=True)],
        _failed=df["status"] != "ok",
        _probe=[RUN_PROBES.index(p) if p in RUN_PROBES else len(RUN_PROBES) for p in df["probe"]],
    )
    keys = ["_failed", "model", "_probe", "probe", "ablation", "created_at"]
    out = out.sort_values(keys, ascending=[True] * 5 + [False])
    return out[SHOWN].reset_index(drop=True)


def _table(df: pd.DataFrame) -> None:
    st.dataframe(
        df,
        hide_index=True,
        width="stretch",
        column_config={
            "meaning": st.column_config.TextColumn("ablation (meaning)"),
            "ablation": st.column_config.TextColumn("ablation (as stored)"),
            "n_rows": st.column_config.NumberColumn("rows"),
            "duration_s": st.column_config.NumberColumn("seconds", format="%.1f"),
        },
    )


def _sql_box() -> None:
    st.subheader("SQL (read-only)")
    st.caption(f"One SELECT over the views runs, {', '.join(TABLES)}. At most 10,000 rows are shown.")
    sql = st.text_area("Query", EXAMPLE_SQL, height=120, key="sql_box")
    if st.button("Run query", key="sql_run"):
        st.session_state["sql_last"] = sql
    last = st.session_state.get("sql_last")
    if last:
        try:
            res = data.user_sql(last)
        except data.SqlError as e:
            st.error(state.shown(e, 400))
        else:
            st.dataframe(res, hide_index=True, width="stretch")
            charts.table_downloads(res, "query result")


def _slice(runs: pd.DataFrame) -> None:
    """A run, then one of the tables it wrote (so a slice is never empty), in the order of the table above."""
    st.subheader("Download a table slice")
    if runs.empty:
        st.info("No successful runs to slice.")
        return
    labels = {
        r.run_id: f"{r.model} · {r.probe} · {r.meaning} · {r.run_id[:8]}" for r in runs.itertuples(index=False)
    }
    c1, c2, c3 = st.columns([3, 2, 1])
    run_id = c1.selectbox("Run", list(labels), format_func=labels.get, key="slice_run")
    own = [t for t in str(runs.set_index("run_id").loc[run_id, "tables"] or "").split(",") if t in TABLES]
    if not own:
        st.caption("This run wrote no tables.")
        return
    table = data.check_table(c2.selectbox("Table", own, key=f"slice_table_{run_id}"))
    limit = int(c3.number_input("Rows", 1, 1_000_000, 10_000, key="slice_rows"))
    df = data.query(f'SELECT * FROM "{table}" WHERE run_id = ? LIMIT ?', (run_id, limit))
    st.caption(f"{len(df)} rows of {table} for run {run_id}")
    st.dataframe(df.head(200), hide_index=True, width="stretch")
    charts.table_downloads(df, f"{table} {run_id}")


def render(vs: ViewState) -> None:
    header(
        "Runs",
        "Every run in the user store and in precomputed/ (read-only). Failed runs keep their "
        "error message and no traces.",
    )
    df = data.runs()
    models = sorted(set(df["model"].dropna()) | set(vs.models))
    c1, c2, c3 = st.columns(3)
    c1.multiselect("Models", models, **session.bound("models"))
    probes = c2.multiselect("Probes", sorted(set(df["probe"].dropna())), key="runs_probes")
    status = c3.multiselect("Status", ["ok", "error"], key="runs_status")
    if vs.models:
        df = df[df["model"].isin(vs.models)]
    if probes:
        df = df[df["probe"].isin(probes)]
    if status:
        df = df[df["status"].isin(status)]
    table = overview_table(df)
    ok = (table["status"] == "ok").sum()
    st.caption(f"{len(table)} runs ({ok} ok, {len(table) - ok} failed) of {table['model'].nunique()} models")
    _table(table)
    charts.table_downloads(table, "runs")
    _sql_box()
    _slice(table[table["status"] == "ok"])


if __name__ == "__main__":  # run as a page by st.navigation
    render(session.current())
