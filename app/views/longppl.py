"""LongPPL view: LongPPL and PPL per model x ablation, loss-vs-position curves, receptive-field sweep."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import charts, data, run_panel, session
from app.state import ViewState
from app.views import find, header, side_runs


def _filter(df: pd.DataFrame, models: tuple[str, ...]) -> pd.DataFrame:
    return df[df["model"].isin(models)] if models and not df.empty else df


def render(vs: ViewState) -> None:
    header(
        "LongPPL",
        "LongPPL (Fang et al. 2025) is the perplexity on key tokens — tokens whose prediction "
        "needs long context. Plain PPL is over all tokens. Lower is better.",
    )
    models = data.known_models()
    opts = sorted(set(models) | set(vs.models))
    st.multiselect("Models (empty = all)", opts, **session.bound("models"))
    side_runs(vs, "longppl")  # prompts to compute A/B when missing

    summary = _filter(data.longppl_summary(), vs.models)
    st.subheader("PPL and LongPPL per model × ablation")
    if summary.empty:
        st.info("No LongPPL runs for these models yet.")
    else:
        summary = summary.assign(
            meaning=[data.meaning(a, m) for a, m in zip(summary["ablation"], summary["model"], strict=True)]
        )
        long = summary.melt(id_vars=["model", "meaning"], value_vars=["ppl", "longppl"], var_name="metric")
        long["metric"] = long["metric"].map({"ppl": "PPL", "longppl": "LongPPL"})
        long = long.rename(columns={"meaning": "ablation"})
        charts.show("ppl and longppl", charts.ppl_bars, long.dropna(), models)
        table = summary[["model", "meaning", "ablation", "ppl", "longppl", "n_key", "n_docs", "run_id"]]
        st.dataframe(table, hide_index=True, width="stretch")
        charts.table_downloads(table, "longppl summary")

    st.subheader("Loss vs position")
    curves = []
    tl = data.runs()  # every (model, ablation) with a token_loss run: the newest run of each
    tl = tl[(tl["probe"] == "token_loss") & (tl["status"] == "ok")]
    tl = _filter(tl, vs.models or tuple(m for _, m, _ in run_panel.sides(vs) if m))
    for _, row in tl.drop_duplicates(["model", "ablation"]).iterrows():
        c = data.position_curve(row["run_id"]).assign(
            model=row["model"], ablation=data.meaning(row["ablation"], row["model"]), side=row["run_id"][:8]
        )
        curves.append(c)
    if curves:
        charts.show("loss vs position", charts.position_curves, pd.concat(curves), models)
    else:
        st.info("No per-token loss runs for these models yet (Per-token loss view → compute).")

    st.subheader("Receptive-field sweep")
    st.caption(
        "One panel per model: LongPPL when only the full-attention layers (orange), or only the efficient "
        "layers (blue), may see the last k tokens; the dashed line is the unrestricted model. The paper: "
        "restricting full attention hurts, restricting efficient layers barely does."
    )
    sweeps = data.receptive_field_sweeps(_filter(data.sweeps(), vs.models))
    _, model, abl = run_panel.sides(vs)[0]
    run_id, error = find(vs, "sweep", model, abl)
    if run_id is None:
        run_panel.missing("A", "sweep", model, abl, vs, error)
    if sweeps and "LongPPL" not in sweeps:
        st.caption("LongPPL is undefined for these runs (the evaluator found no key tokens); PPL is shown.")
    for metric, sweep in sweeps.items():
        charts.show(f"receptive field sweep {metric}", charts.rf_sweep_panels, sweep, y_title=metric)
        charts.table_downloads(sweep, f"receptive field sweep {metric}")


if __name__ == "__main__":  # run as a page by st.navigation
    render(session.current())
