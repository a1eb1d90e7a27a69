"""Retrieval heads: layer x head map of attention mass on the needle, one lane per layer type (layers
without attention shown as such, never as zeros); a selected head shows its attention rows (top keys
over the long context) and entropy."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app import charts, data, run_panel, state
from app.charts import ATTENTION, kind_label
from app.state import ViewState
from app.views import Side, header, side_runs


def _scores(run_id: str) -> pd.DataFrame:
    return data.query(
        "SELECT layer, head, layer_type, score FROM head_scores WHERE run_id = ? ORDER BY layer, head",
        (run_id,),
    )


def _check_selection(vs: ViewState, scores: pd.DataFrame) -> ViewState:
    """A layer/head from the URL must exist in run A and be an attention head."""
    n_layers = int(scores["layer"].max()) + 1
    if vs.layer is not None and vs.layer >= n_layers:
        vs = state.fallback("layer", f"the model has layers 0..{n_layers - 1}")
    if vs.layer is not None:
        kinds = scores[scores["layer"] == vs.layer]
        if not kinds["layer_type"].isin(ATTENTION).any():
            vs = state.fallback(
                "layer",
                f"layer {vs.layer} is {kind_label(kinds['layer_type'].iloc[0])}: it has no attention heads",
            )
    if vs.head is not None:
        n_heads = int(scores[scores["layer"] == (vs.layer or 0)]["head"].max()) + 1
        if vs.head >= n_heads:
            vs = state.fallback("head", f"layer {vs.layer or 0} has heads 0..{n_heads - 1}")
    return vs


def _pick(scores: pd.DataFrame, vs: ViewState) -> None:
    attn = scores[scores["layer_type"].isin(ATTENTION)]
    layers = sorted(attn["layer"].unique().tolist())
    if not layers:
        st.info("This model has no attention layers.")
        return
    c1, c2 = st.columns(2)
    none = "—"
    c1.selectbox(
        "Layer",
        [none, *layers],
        format_func=lambda v: (
            v if v == none else f"{v} ({kind_label(attn[attn['layer'] == v]['layer_type'].iloc[0])})"
        ),
        **state.bind(
            "layer",
            to_widget=lambda v: none if v is None else v,
            from_widget=lambda v: None if v == none else int(v),
        ),
    )
    heads = sorted(attn[attn["layer"] == (vs.layer if vs.layer is not None else layers[0])]["head"].unique())
    c2.selectbox(
        "Head",
        [none, *heads],
        **state.bind(
            "head",
            to_widget=lambda v: none if v is None else v,
            from_widget=lambda v: None if v == none else int(v),
        ),
    )


def _on_click(key: str) -> None:
    sel = st.session_state.get(key)
    points = (sel or {}).get("selection", {}).get("pick") or []
    if points:
        try:
            state.update(layer=int(points[0]["layer"]), head=int(points[0]["head"]))
        except (KeyError, TypeError, ValueError):
            pass


def rows_chart(rows: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(rows)
        .mark_bar(color=charts.OKABE_ITO[0])
        .encode(
            x=alt.X("key_pos:Q", title="key position"),
            y=alt.Y("weight:Q", title="attention weight"),
            tooltip=["query_pos", "rank", "key_pos", alt.Tooltip("weight:Q", format=".4f"), "token"],
        )
        .properties(height=220, title="top attended keys (one bar per key)")
    )


def entropy_chart(ent: pd.DataFrame, layer: int, head: int) -> alt.Chart:
    return (
        alt.Chart(ent.assign(selected=ent["head"] == head))
        .mark_bar()
        .encode(
            x=alt.X("head:O"),
            y=alt.Y("entropy:Q", title="entropy (nats)"),
            color=alt.condition("datum.selected", alt.value(charts.OKABE_ITO[5]), alt.value(charts.NO_DATA)),
            tooltip=["head", alt.Tooltip("entropy:Q", format=".3f")],
        )
        .properties(height=180, title=f"entropy of every head in layer {layer}")
    )


def _head_detail(vs: ViewState, a: Side) -> None:
    st.subheader(f"Layer {vs.layer}, head {vs.head}")
    cands = data.matching_runs("attention_rows", a.model, a.abl)
    cands = cands[cands["status"] == "ok"]["run_id"].tolist()
    rows = pd.DataFrame()
    if cands:
        rows = data.query(
            "SELECT run_id, query_pos, rank, key_pos, weight, token FROM attention_rows "
            "WHERE list_contains(?, run_id) AND layer = ? AND head = ? ORDER BY run_id, query_pos, "
            "rank",
            (cands, vs.layer, vs.head),
        )
    if rows.empty:
        run_panel.missing("A", "attention_rows", a.model, a.abl, vs, extra_params={"layers": [vs.layer]})
        return
    run_id = rows["run_id"].iloc[0]
    rows = rows[rows["run_id"] == run_id]
    charts.show(f"attention rows l{vs.layer} h{vs.head}", rows_chart, rows)
    ent = data.query(
        "SELECT head, avg(entropy) AS entropy FROM head_entropy WHERE run_id = ? AND layer = ? "
        "GROUP BY head ORDER BY head",
        (run_id, vs.layer),
    )
    if not ent.empty:
        mine = ent[ent["head"] == vs.head]["entropy"]
        if not mine.empty:
            st.metric(
                "Attention entropy (nats)",
                f"{float(mine.iloc[0]):.3f}",
                help="Low: the head focuses on few keys. High: it spreads attention.",
            )
        charts.show(f"entropy layer {vs.layer}", entropy_chart, ent, vs.layer, vs.head)
    st.dataframe(rows.drop(columns="run_id"), hide_index=True, width="stretch")
    charts.table_downloads(rows, f"attention rows l{vs.layer} h{vs.head}")


def render(vs: ViewState) -> None:
    header(
        "Retrieval heads",
        "Attention mass from the question onto the needle, per layer and head "
        "(the paper's tracing definition). Lanes show each layer's type; Mamba-2/GDN layers have no "
        "attention to score. Click a cell or pick a head to see where it looks.",
    )
    found = side_runs(vs, "retrieval_heads")
    a = found[0]
    if not a.run_id:
        return
    scores = _scores(a.run_id)
    if scores.empty:
        st.info("Run A has an empty head map.")
        return
    vs = _check_selection(vs, scores)
    _pick(scores, vs)
    selected = (vs.layer, vs.head) if vs.layer is not None and vs.head is not None else None
    maps = {side.label: _scores(side.run_id) for side in found if side.run_id}
    top = max(float(m["score"].max()) if m["score"].notna().any() else 0.0 for m in maps.values()) or None
    for side in found:
        if side.run_id:
            key = f"heads-{side.label}"
            charts.show(
                f"retrieval heads {side.label}",
                charts.head_heatmap,
                maps[side.label],
                side.name,
                selected,
                score_max=top,
                st_kwargs={"key": key, "on_select": lambda k=key: _on_click(k), "selection_mode": "pick"},
            )
    if selected:
        _head_detail(vs, a)


if __name__ == "__main__":  # run as a page by st.navigation
    render(state.current())
