"""Q/K weight drift over training: per full-attention head, how far its Q and K weights are from their
final values at each checkpoint, next to retrieval-head formation (finding 3: large windows delay it)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app import charts, data, run_panel, session, state
from app.state import ViewState
from app.views import header, side_runs
from backend.checkpoints import describe, has_series

PROBE = "qk_distance"


def model_dir(model: str | None):
    from backend.model_refs import ModelRefError, resolve

    try:
        return resolve(model).path if model else None
    except (ModelRefError, ValueError, OSError):
        return None


def drift_chart(df: pd.DataFrame, title: str) -> alt.Chart:
    long = df.melt(id_vars=["layer", "head", "kv_head", "step"], value_vars=["q_dist", "k_dist"], var_name="weights",
                   value_name="distance")
    long["weights"] = long["weights"].map({"q_dist": "Q", "k_dist": "K"})
    return (
        alt.Chart(long, title=title)
        .mark_line(point=True)
        .encode(
            x=alt.X("step:Q", title="training step"),
            y=alt.Y("distance:Q", title="‖W − W_final‖ / ‖W_final‖"),
            color=alt.Color("head:N", title="head"),
            strokeDash=alt.StrokeDash("weights:N"),
            detail="weights:N",
            tooltip=["layer", "head", "kv_head", "weights", "step", alt.Tooltip("distance:Q", format=".3f")],
        )
        .properties(height=220)
        .facet(row=alt.Row("layer:N", title="full-attention layer"))
    )


def render(vs: ViewState) -> None:
    header(
        "Q/K drift",
        "Relative distance of each full-attention head's query and key weights to their final values, over "
        "the checkpoints a model directory records (qk/step_<N>.safetensors, what the zoo's trainer writes). "
        "Heads whose weights settle early formed early.",
    )
    sides = run_panel.sides(vs)
    with_series = []
    for label, model, _ in sides:
        path = model_dir(model)
        if has_series(path):
            with_series.append(label)
            st.caption(f"{label}: {state.shown(model)} — {describe(path)}")
        else:
            st.info(f"{label}: {state.shown(model)} has no checkpoint series, so there is no Q/K drift to show: "
                    f"{describe(path) if path else 'it is not a model directory'}. The bundled zoo (v1) does not "
                    "record Q/K weights per checkpoint; zoo v2 models do.")
    if with_series:
        for s in side_runs(vs, PROBE):
            if s.run_id and s.label in with_series:
                df = data.query("SELECT layer, head, kv_head, step, tokens, q_dist, k_dist FROM qk_distance "
                                "WHERE run_id = ? ORDER BY layer, head, step", (s.run_id,))
                charts.show(f"qk drift {s.label}", drift_chart, df, s.name)
                charts.table_downloads(df, f"qk drift {s.label}")
    st.subheader("Retrieval-head formation")
    form = data.formation_series()
    if form.empty:
        st.info("No retrieval-head formation series in the store.")
    else:
        charts.show("qk view retrieval head formation", charts.sweep_chart, form, data.known_models(),
                    x_title="training step", y_title="max retrieval score")


if __name__ == "__main__":  # run as a page by st.navigation
    render(session.current())
