"""Gradient influence vs distance: how strongly the input at distance d from the end drives the last
positions' predictions (||d sum-of-logits / d embedding||), log-log, A vs B and every model."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app import charts, data, session
from app.state import ViewState
from app.views import header, side_runs

PROBE = "gradient_influence"


def curve(run_id: str) -> pd.DataFrame:
    """Mean influence per distance bin (over documents, weighted by positions), x = bin midpoint + 1."""
    return data.query(
        "SELECT bin_start, bin_end, CAST(sum(mean * n) / sum(n) AS DOUBLE) AS influence, max(max) AS max_influence, "
        "CAST(sum(n) AS BIGINT) AS n FROM influence WHERE run_id = ? GROUP BY bin_start, bin_end ORDER BY bin_start",
        (run_id,),
    ).assign(distance=lambda d: (d["bin_start"] + d["bin_end"] - 1) / 2 + 1)


def influence_chart(df: pd.DataFrame, all_models: list[str], color: str = "model") -> alt.Chart:
    scale = charts.side_scale() if color == "side" else charts.model_scale(all_models)
    return (
        alt.Chart(df.assign(influence=df["influence"].clip(lower=1e-12)))
        .mark_line(point=True)
        .encode(
            x=alt.X("distance:Q", title="distance from the end + 1 (tokens)", scale=alt.Scale(type="log")),
            y=alt.Y("influence:Q", title="gradient norm (mean per bin)", scale=alt.Scale(type="log")),
            color=alt.Color(f"{color}:N", scale=scale),
            tooltip=["model", "ablation", "bin_start", "bin_end", alt.Tooltip("influence:Q", format=".3g"), "n"],
        )
        .properties(height=300)
    )


def render(vs: ViewState) -> None:
    header(
        "Gradient influence",
        "How much each input position moves the model's last predictions: the gradient norm of the summed "
        "logits of the last positions with respect to each input embedding, by distance from the end. "
        "Flat far out = long-range information is used; a cliff = a receptive field.",
    )
    found = side_runs(vs, PROBE)
    curves = [curve(s.run_id).assign(model=s.model, ablation=s.abl, side=s.label) for s in found if s.run_id]
    if curves:
        df = pd.concat(curves)
        charts.show("gradient influence a vs b", influence_chart, df, data.known_models(), color="side")
        charts.table_downloads(df, "gradient influence a b")
    st.subheader("Every model (unablated)")
    runs = data.runs()
    runs = runs[(runs["probe"] == PROBE) & (runs["status"] == "ok") & (runs["ablation"].fillna("") == "")]
    per_model = [curve(r["run_id"]).assign(model=r["model"], ablation="") for _, r in
                 runs.drop_duplicates("model").iterrows()]
    if per_model:
        df = pd.concat(per_model)
        charts.show("gradient influence per model", influence_chart, df, data.known_models())
        charts.table_downloads(df, "gradient influence per model")
    else:
        st.info("No gradient-influence runs yet.")


if __name__ == "__main__":  # run as a page by st.navigation
    render(session.current())
