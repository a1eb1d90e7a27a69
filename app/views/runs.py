"""Runs: the cached runs table with filters, a read-only SQL box, and downloads of any table slice."""

from __future__ import annotations

import streamlit as st

from app import charts, data, state
from app.state import ViewState
from app.views import header
from backend.schema import TABLES

EXAMPLE_SQL = (
    "SELECT r.model, r.ablation, avg(t.nll) AS mean_loss, count(*) AS tokens\n"
    "FROM token_loss t JOIN runs r USING (run_id)\nGROUP BY ALL ORDER BY mean_loss"
)


def _table(df) -> None:
    cols = [
        "run_id",
        "model",
        "probe",
        "dataset",
        "ablation",
        "params",
        "status",
        "error",
        "created_at",
        "duration_s",
        "tables",
        "n_rows",
        "store",
    ]
    st.dataframe(df[cols], hide_index=True, width="stretch")


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


def _slice(run_ids: list[str]) -> None:
    st.subheader("Download a table slice")
    c1, c2, c3 = st.columns([2, 3, 1])
    table = data.check_table(c1.selectbox("Table", TABLES, key="slice_table"))
    run_id = c2.selectbox("Run", run_ids, key="slice_run")
    limit = int(c3.number_input("Rows", 1, 1_000_000, 10_000, key="slice_rows"))
    if not run_id:
        return
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
    c1.multiselect("Models", models, **state.bound("models"))
    probes = c2.multiselect("Probes", sorted(set(df["probe"].dropna())), key="runs_probes")
    status = c3.multiselect("Status", ["ok", "error"], key="runs_status")
    if vs.models:
        df = df[df["model"].isin(vs.models)]
    if probes:
        df = df[df["probe"].isin(probes)]
    if status:
        df = df[df["status"].isin(status)]
    st.caption(f"{len(df)} runs")
    _table(df)
    charts.table_downloads(df, "runs")
    _sql_box()
    _slice(df[df["status"] == "ok"]["run_id"].tolist())


if __name__ == "__main__":  # run as a page by st.navigation
    render(state.current())
