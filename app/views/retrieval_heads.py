"""Retrieval heads: layer x head map of attention mass on the needle, one lane per layer type (layers
without attention shown as such, never as zeros); a selected head shows its attention rows (top keys
over the long context) and entropy. The maps' colour scale starts at chance level and is shared by every
map (default) or, with ``scale=per-map`` in the link, each map's own."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app import charts, data, findings, run_panel, session, state
from app.charts import ATTENTION, kind_label
from app.state import ViewState
from app.views import Side, header, side_runs
from backend.spec import SpecError


def _scores(run_id: str) -> pd.DataFrame:
    return data.query(
        "SELECT layer, head, layer_type, score, metric FROM head_scores WHERE run_id = ? ORDER BY layer, head",
        (run_id,),
    )


def shared_max(maps: list[pd.DataFrame]) -> float:
    """The strongest head score of any model in the store with the maps' metric (and of the maps shown):
    one absolute scale for every map, so a model whose best head is at chance never looks bright."""
    metrics = sorted({str(m) for d in maps for m in d.get("metric", pd.Series(dtype=str)).dropna()}) or ["mass"]
    df = data.query(
        "SELECT max(h.score) AS top FROM head_scores h JOIN runs r USING (run_id) WHERE r.status = 'ok' "
        f"AND coalesce(h.metric, 'mass') IN ({', '.join('?' * len(metrics))})",
        tuple(metrics),
    )
    shown = [float(d["score"].max()) for d in maps if d["score"].notna().any()]
    store_top = float(df["top"].iloc[0]) if not df.empty and pd.notna(df["top"].iloc[0]) else 0.0
    return max([store_top, *shown]) or 1.0


def map_tops(maps: dict[str, pd.DataFrame], scale: str) -> dict[str, float]:
    """The brightest value of each map's colour scale: with ``scale="shared"`` the same for every map
    (:func:`shared_max`), with ``"per-map"`` the map's own strongest head (1.0 for a map without scores)."""
    if scale != "per-map":
        top = shared_max(list(maps.values()))
        return dict.fromkeys(maps, top)
    return {label: (float(d["score"].max()) if d["score"].notna().any() else 0.0) or 1.0
            for label, d in maps.items()}


def _head_layer(vs: ViewState, layers: list[int]) -> int:
    """The layer whose heads the head picker lists: the selected one, else the first attention layer."""
    return vs.layer if vs.layer is not None else layers[0]


def _check_selection(vs: ViewState, scores: pd.DataFrame) -> ViewState:
    """A layer/head from the URL must exist in run A and be an attention head (the pickers offer no other:
    their options say the same to Streamlit's binding)."""
    n_layers = int(scores["layer"].max()) + 1
    if vs.layer is not None and vs.layer >= n_layers:
        vs = session.fallback("layer", f"the model has layers 0..{n_layers - 1}")
    if vs.layer is not None:
        kinds = scores[scores["layer"] == vs.layer]
        if not kinds["layer_type"].isin(ATTENTION).any():
            vs = session.fallback(
                "layer",
                f"layer {vs.layer} is {kind_label(kinds['layer_type'].iloc[0])}: it has no attention heads",
            )
    layers = sorted(scores[scores["layer_type"].isin(ATTENTION)]["layer"].unique().tolist())
    if vs.head is not None and layers:
        layer = _head_layer(vs, layers)
        n_heads = int(scores[scores["layer"] == layer]["head"].max()) + 1
        if vs.head >= n_heads:
            vs = session.fallback("head", f"layer {layer} has heads 0..{n_heads - 1}")
    return vs


def _pick(scores: pd.DataFrame, vs: ViewState) -> None:
    attn = scores[scores["layer_type"].isin(ATTENTION)]
    layers = sorted(attn["layer"].unique().tolist())
    if not layers:
        st.info("This model has no attention layers.")
        return
    c1, c2 = st.columns(2)
    none = "—"
    kinds = attn.groupby("layer")["layer_type"].first()  # in the help: a bound option's label is its URL value
    c1.selectbox(
        "Layer",
        [None, *layers],
        format_func=lambda v: none if v is None else str(v),
        help="Attention layers: " + ", ".join(f"{layer} {kind_label(kinds[layer])}" for layer in layers),
        **session.bound("layer"),
    )
    heads = sorted(attn[attn["layer"] == _head_layer(vs, layers)]["head"].unique().tolist())
    c2.selectbox("Head", [None, *heads], format_func=lambda v: none if v is None else str(v), **session.bound("head"))


def _on_click(key: str) -> None:
    sel = st.session_state.get(key)
    points = (sel or {}).get("selection", {}).get("pick") or []
    if points:
        try:
            session.update(layer=int(points[0]["layer"]), head=int(points[0]["head"]))
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
    extra = {"layers": [vs.layer]}
    try:
        spec = run_panel.build_spec(vs, a.model, a.abl, "attention_rows", extra)
    except (SpecError, ValueError):
        rows = pd.DataFrame()
    else:
        rows = data.attention_rows(spec, vs.layer, vs.head)
    if rows.empty:
        run_panel.missing("A", "attention_rows", a.model, a.abl, vs, extra_params=extra)
        return
    run_id = rows["run_id"].iloc[0]
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
    chance = findings.retrieval_chance()
    st.radio(
        "Colour scale",
        state.SCALES,
        horizontal=True,
        help="shared: one absolute scale for every map (colours compare across models); per-map: each map "
        "from chance to its own strongest head (shows the pattern inside a weak model; colours do not "
        "compare across maps)",
        **session.bound("scale"),
    )
    tops = map_tops(maps, vs.scale)
    if vs.scale == "per-map":
        st.caption(
            f"Colour scale per map: chance level ({chance:g}, uniform attention over the context) and below "
            "is darkest, each map's own strongest head brightest ("
            + ", ".join(f"{label} {top:.3f}" for label, top in tops.items())
            + "). Colours do not compare across maps."
        )
    else:
        st.caption(
            f"Colour scale shared by every model in the store: chance level ({chance:g}, uniform attention "
            f"over the context) and below is darkest, the strongest head of any model "
            f"({next(iter(tops.values())):.3f}) brightest."
        )
    for side in found:
        if side.run_id:
            key = f"heads-{side.label}"
            charts.show(
                f"retrieval heads {side.label}",
                charts.head_heatmap,
                maps[side.label],
                side.name,
                selected,
                score_max=tops[side.label],
                chance=chance,
                st_kwargs={"key": key, "on_select": lambda k=key: _on_click(k), "selection_mode": "pick"},
            )
    if selected:
        _head_detail(vs, a)


if __name__ == "__main__":  # run as a page by st.navigation
    render(session.current())
