"""Layer-wise retrieval probing: from which layer on can a linear probe read the needle's magic number
off the last token (easy set: far-apart numbers; hard set: near-duplicates), one lane per layer type."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app import charts, data, session
from app.state import ViewState
from app.views import header, side_runs

PROBE = "retrieval_probe"
KINDS = {**{k: v[0] for k, v in charts.LAYER_KINDS.items()}, "embedding": "embedding"}


def probe_chart(df: pd.DataFrame, title: str) -> alt.Chart:
    d = df.assign(kind=df["layer_type"].map(lambda k: KINDS.get(k, k)))
    scale = charts.kind_scale()
    scale = alt.Scale(domain=[*scale.domain, "embedding"], range=[*scale.range, charts.NO_DATA])
    base = alt.Chart(d, title=title)
    points = base.mark_line(point=True, color=charts.NO_DATA).encode(
        x=alt.X("layer:O", title="layer (-1: embeddings)"),
        y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), title="probe accuracy (held-out 20%)"),
        strokeDash=alt.StrokeDash("feature:N", title="feature"),
        detail="feature:N",
    ) + base.mark_point(filled=True, size=80).encode(
        x="layer:O", y="accuracy:Q", color=alt.Color("kind:N", scale=scale, title="layer type"),
        shape=alt.Shape("feature:N"),
        tooltip=["set", "layer", "kind", "feature", alt.Tooltip("accuracy:Q", format=".2f"), "n_test"],
    )
    chance = base.mark_rule(strokeDash=[4, 4], color="#000").encode(y="mean(chance):Q")
    return (points + chance).properties(height=240).facet(column=alt.Column("set:N", title=None))


def render(vs: ViewState) -> None:
    header(
        "Retrieval probing",
        "Single-needle prompts whose magic number is one of 8 classes; a logistic-regression probe on the last "
        "token's state after each layer (and on the layer's own contribution) predicts the class. Where "
        "accuracy jumps is where retrieval happens. Dashed line: chance (1/8).",
    )
    found = side_runs(vs, PROBE)
    for s in found:
        if not s.run_id:
            continue
        df = data.query(
            'SELECT "set", layer, layer_type, feature, accuracy, n_train, n_test, chance FROM layer_probe '
            'WHERE run_id = ? ORDER BY "set", feature, layer', (s.run_id,))
        if df.empty:
            st.info(f"Run {s.label} has no probe rows.")
            continue
        charts.show(f"retrieval probing {s.label}", probe_chart, df, s.name)
        charts.table_downloads(df, f"retrieval probing {s.label}")


if __name__ == "__main__":  # run as a page by st.navigation
    render(session.current())
