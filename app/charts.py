"""Altair charts with one colour per layer type and per model (Okabe-Ito, colour-blind safe), and
download buttons: SVG/PNG of any chart (rendered on click with vl-convert) and CSV/Parquet of tables.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from collections.abc import Callable
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision deficiencies
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
NO_DATA = "#BBBBBB"
LAYER_KINDS = {  # layer_types value -> (label, colour)
    "full_attention": ("full", "#0072B2"),
    "sliding_attention": ("SWA", "#E69F00"),
    "mamba2": ("Mamba-2", "#009E73"),
    "gated_deltanet": ("GDN", "#CC79A7"),
}
ATTENTION = ("full_attention", "sliding_attention")


def kind_label(kind: str) -> str:
    return LAYER_KINDS.get(kind, (kind, NO_DATA))[0]


def kind_scale() -> alt.Scale:
    return alt.Scale(domain=[v[0] for v in LAYER_KINDS.values()], range=[v[1] for v in LAYER_KINDS.values()])


def model_scale(all_models: list[str]) -> alt.Scale:
    """Same colour for a model in every chart: the domain is every model the store knows, sorted."""
    domain = sorted(set(all_models))
    return alt.Scale(
        domain=domain or ["-"], range=[OKABE_ITO[i % len(OKABE_ITO)] for i in range(len(domain) or 1)]
    )


def side_scale() -> alt.Scale:
    return alt.Scale(domain=["A", "B"], range=[OKABE_ITO[0], OKABE_ITO[5]])


# ---------------------------------------------------------------------------------------------
# showing and downloading
# ---------------------------------------------------------------------------------------------
def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60] or "chart"


def _svg(spec: dict) -> bytes:
    import vl_convert

    return vl_convert.vegalite_to_svg(spec).encode()


def _png(spec: dict) -> bytes:
    import vl_convert

    return vl_convert.vegalite_to_png(spec, scale=2)


def _frame_key(df: pd.DataFrame) -> bytes:
    """A digest of a chart's table for the spec cache: its pickle (~0.05 ms for a view's tables, where
    Streamlit's own DataFrame hashing takes ~1.5 ms each rerun). Equal digests mean equal tables, dtypes
    and index; a table that pickles differently only costs a rebuilt spec."""
    try:
        return hashlib.blake2b(pickle.dumps(df, protocol=5), digest_size=20).digest()
    except Exception:  # noqa: BLE001 - an unpicklable cell: hash the values instead
        cols = repr((list(df.columns), list(map(str, df.dtypes)))).encode()
        return cols + pd.util.hash_pandas_object(df.astype(str), index=True).to_numpy().tobytes()


@st.cache_data(show_spinner=False, max_entries=512, hash_funcs={pd.DataFrame: _frame_key})
def _spec(key: str, _make: Callable[..., alt.TopLevelMixin], args: tuple, kwargs: dict) -> dict:
    """The Vega-Lite spec of ``_make(*args, **kwargs)``, cached on ``key`` and the (hashed) inputs:
    building and validating Altair charts is the slowest part of a rerun."""
    return _make(*args, **kwargs).to_dict()


def show(
    name: str,
    make: Callable[..., alt.TopLevelMixin],
    *args: Any,
    st_kwargs: dict | None = None,
    **kwargs: Any,
) -> object:
    """Render ``make(*args, **kwargs)`` with SVG/PNG download buttons (converted only when clicked)."""
    spec = _spec(f"{make.__module__}.{make.__qualname__}", make, args, kwargs)
    out = st.vega_lite_chart(spec=spec, width="stretch", **(st_kwargs or {}))
    slug = _slug(name)
    c1 = c2 = st.container(horizontal=True, gap="small")
    for col, fmt, convert, mime in ((c1, "svg", _svg, "image/svg+xml"), (c2, "png", _png, "image/png")):
        col.download_button(
            fmt.upper(),
            lambda convert=convert: convert(spec),  # converted only when clicked
            f"{slug}.{fmt}",
            mime,
            key=f"{fmt}-{slug}",
            on_click="ignore",
            help=f"Download '{name}' as {fmt.upper()}",
        )
    return out


def _parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def table_downloads(df: pd.DataFrame, name: str) -> None:
    """CSV and Parquet downloads of a table slice (built only when clicked)."""
    slug = _slug(name)
    c1 = c2 = st.container(horizontal=True, gap="small")
    c1.download_button(
        "CSV",
        lambda: df.to_csv(index=False).encode(),
        f"{slug}.csv",
        "text/csv",
        key=f"csv-{slug}",
        on_click="ignore",
    )
    c2.download_button(
        "Parquet",
        lambda: _parquet(df),
        f"{slug}.parquet",
        "application/vnd.apache.parquet",
        key=f"pq-{slug}",
        on_click="ignore",
    )


# ---------------------------------------------------------------------------------------------
# charts shared by several views
# ---------------------------------------------------------------------------------------------
def legend(title: str | None = None, columns: int = 4) -> alt.Legend:
    """A legend under the chart whose labels are never cut (no label limit), in the app and in exports."""
    return alt.Legend(title=title, orient="bottom", direction="horizontal", columns=columns, labelLimit=0,
                      titleLimit=0, symbolLimit=0)


def label_axis(**kw: Any) -> alt.Axis:
    """An axis that shows every label in full (none dropped for overlap, none truncated)."""
    return alt.Axis(labelAngle=-35, labelLimit=0, labelOverlap=False, **kw)


def ppl_bars(df: pd.DataFrame, all_models: list[str], by: str = "ablation") -> alt.Chart:
    """df: model, ablation (a label), metric ("PPL"/"LongPPL"), value -> bars, one panel per metric.

    ``by="ablation"``: one row of bars per ablation label, one bar per model in it (horizontal: any
    number of ablations fits the width); ``by="model"``: one bar per model, each labelled on the axis.
    """
    d = df.assign(ablation=df["ablation"].replace("", "none"))
    tooltip = ["model", "ablation", "metric", alt.Tooltip("value:Q", format=".3f")]
    colour = alt.Color("model:N", scale=model_scale(all_models), legend=legend("model"))
    panels = alt.Column("metric:N", title=None, sort=["PPL", "LongPPL"])
    if by == "ablation":
        enc = dict(
            y=alt.Y("ablation:N", title=None, axis=alt.Axis(labelLimit=0, labelOverlap=False)),
            yOffset="model:N",
            x=alt.X("value:Q", title="perplexity"),
        )
        size = dict(width=260, height=alt.Step(6))
    else:
        enc = dict(x=alt.X("model:N", title=None, axis=label_axis()), y=alt.Y("value:Q", title="perplexity"))
        size = dict(width=alt.Step(30), height=240)
    return (
        alt.Chart(d)
        .mark_bar()
        .encode(color=colour, column=panels, tooltip=tooltip, **enc)
        .properties(**size)
        .resolve_scale(x="independent" if by == "ablation" else "shared", y="independent")
    )


def position_curves(df: pd.DataFrame, all_models: list[str]) -> alt.Chart:
    """df: model, ablation (a label), side, bucket_start, mean_nll -> loss vs position (lines only: a
    dash legend stays readable)."""
    d = df.assign(ablation=df["ablation"].replace("", "none"))
    return (
        alt.Chart(d)
        .mark_line()
        .encode(
            x=alt.X("bucket_start:Q", title="token position"),
            y=alt.Y("mean_nll:Q", title="mean loss (nats)", scale=alt.Scale(zero=False)),
            color=alt.Color("model:N", scale=model_scale(all_models), legend=legend("model")),
            strokeDash=alt.StrokeDash("ablation:N", legend=legend("ablation", columns=2)),
            detail="side:N",
            tooltip=["model", "ablation", "side", "bucket_start", alt.Tooltip("mean_nll:Q", format=".3f")],
        )
        .properties(height=280)
    )


def sweep_chart(
    df: pd.DataFrame,
    all_models: list[str],
    x_title: str = "training step",
    y_title: str = "max retrieval score",
) -> alt.Chart:
    """df: model, x, y (one series per model, e.g. retrieval-head formation) -> one line per model."""
    return (
        alt.Chart(df)
        .mark_line(point=True)
        .encode(
            x=alt.X("x:Q", title=x_title),
            y=alt.Y("y:Q", title=y_title),
            color=alt.Color("model:N", scale=model_scale(all_models), legend=legend("model")),
            tooltip=["model", "x", alt.Tooltip("y:Q", format=".3f"), "label"],
        )
        .properties(height=280)
    )


RF_SERIES = {  # sweep.name of the receptive-field sweep -> what the line shows
    "restrict_full": "full-attention layers restricted to the last k tokens",
    "restrict_efficient": "efficient layers restricted to the last k tokens",
}
RF_COLOURS = [OKABE_ITO[5], OKABE_ITO[0]]


def rf_sweep_panels(df: pd.DataFrame, y_title: str = "LongPPL", columns: int = 4) -> alt.FacetChart:
    """df: model, name, x, y (the receptive-field sweep) -> one panel per model: the two restrictions as
    labelled lines over k (log2 axis, ticks at the swept k), the unrestricted value as a dashed reference
    line labelled in the panel."""
    d = df.assign(series=df["name"].map(RF_SERIES))
    ks = sorted(d.loc[d["series"].notna(), "x"].unique().tolist())
    lines = (
        alt.Chart()
        .transform_filter("datum.series != null")
        .mark_line(point=True)
        .encode(
            x=alt.X("x:Q", title="k (tokens)", scale=alt.Scale(type="log", base=2),
                    axis=alt.Axis(values=ks, format="d", labelOverlap=False)),
            y=alt.Y("y:Q", title=y_title, scale=alt.Scale(type="log"), axis=alt.Axis(tickCount=4, format="~g")),
            color=alt.Color("series:N", scale=alt.Scale(domain=list(RF_SERIES.values()), range=RF_COLOURS),
                            legend=legend(None, columns=1)),
            tooltip=["model", "series", alt.Tooltip("x:Q", title="k"), alt.Tooltip("y:Q", format=".2f")],
        )
    )
    base = alt.Chart().transform_filter("datum.name == 'baseline'")
    rule = base.mark_rule(strokeDash=[5, 3], color="#444").encode(y="y:Q")
    note = (
        base.transform_calculate(note="'unrestricted ' + format(datum.y, '.1f')")
        .mark_text(align="left", baseline="bottom", dx=3, dy=-2, fontSize=10, color="#444")
        .encode(y="y:Q", x=alt.value(0), text="note:N")
    )
    return (
        alt.layer(lines, rule, note, data=d)
        .properties(width=150, height=140)
        .facet(facet=alt.Facet("model:N", title=None), columns=columns)
        .resolve_scale(y="independent")
    )


def niah_heatmap(df: pd.DataFrame, title: str, delta: bool = False) -> alt.Chart:
    """df: length, depth, acc (or delta) -> length x depth heatmap with the values written in."""
    field = "delta" if delta else "acc"
    scale = (
        alt.Scale(scheme="blueorange", domain=[-1, 1], reverse=True)
        if delta
        else alt.Scale(scheme="viridis", domain=[0, 1])
    )
    base = alt.Chart(df, title=title).encode(
        x=alt.X("length:O", title="context length (tokens)", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("depth:O", title="needle depth", sort="ascending"),
    )
    rect = base.mark_rect().encode(
        color=alt.Color(f"{field}:Q", scale=scale, title="Δ accuracy" if delta else "accuracy"),
        tooltip=["length", "depth", alt.Tooltip(f"{field}:Q", format=".2f"), "n"],
    )
    text = base.mark_text(fontSize=11).encode(
        text=alt.Text(f"{field}:Q", format=".2f"),
        color=alt.condition(  # dark cells get white text
            f"abs(datum.{field}) <= 0.6" if delta else f"datum.{field} > 0.5",
            alt.value("black"),
            alt.value("white"),
        ),
    )
    # fit-x: the height is the plot's own (with "fit" the axes and title would eat into it)
    return (rect + text).properties(
        height=36 * max(df["depth"].nunique(), 3),
        autosize=alt.AutoSizeParams(type="fit-x", contains="padding"),
    )


def head_heatmap(
    df: pd.DataFrame,
    title: str,
    selected: tuple[int, int] | None = None,
    score_max: float | None = None,
    chance: float | None = None,
) -> alt.TopLevelMixin:
    """df: layer, head, layer_type, score (null for non-attention layers).

    Left: one lane per layer coloured by its type. Right: score per (layer, head); heads of layers
    without attention are grey and labelled (they have no attention to score, they are not zeros).
    The colour scale is absolute: [``chance``, ``score_max``] (clamped: a head at or below chance is the
    darkest colour), the same for every map given the same bounds, chance marked in the legend; without
    ``chance`` it starts at 0, without ``score_max`` it follows the data.
    """
    height = max(140, 24 * df["layer"].nunique())
    lo = chance or 0.0
    if score_max:
        hi = max(score_max, 2 * lo)
        score_scale = alt.Scale(scheme="viridis", domain=[lo, hi], clamp=True)
        ticks = [lo, *[lo + (hi - lo) * f for f in (0.25, 0.5, 0.75)], hi]
        score_legend = alt.Legend(
            title=f"retrieval score (≤ chance {lo:g}: darkest)" if chance else "retrieval score",
            values=ticks, format=".3f", labelLimit=0, titleLimit=0,
        )
    else:
        score_scale, score_legend = alt.Scale(scheme="viridis"), alt.Legend(title="retrieval score")
    d = df.assign(kind=df["layer_type"].map(kind_label), attention=df["layer_type"].isin(ATTENTION))
    y = alt.Y("layer:O", title="layer", sort="ascending")
    lanes = d.drop_duplicates("layer")
    lane = (
        alt.Chart(lanes)
        .mark_rect()
        .encode(
            y=y,
            x=alt.value(0),
            x2=alt.value(14),
            color=alt.Color("kind:N", scale=kind_scale(), legend=None),
            tooltip=["layer", "kind"],
        )
        .properties(width=16, height=height)
    )
    lane_text = alt.Chart(lanes).mark_text(align="left", dx=2).encode(y=y, x=alt.value(18), text="kind:N")
    pick = alt.selection_point(name="pick", fields=["layer", "head"], on="click", clear=False, empty=False)
    base = alt.Chart(d).encode(x=alt.X("head:O", title="head"), y=y)
    attn = (
        base.transform_filter("datum.attention")
        .mark_rect()
        .encode(
            color=alt.Color("score:Q", scale=score_scale, legend=score_legend),
            tooltip=["layer", "head", "kind", alt.Tooltip("score:Q", format=".3f")],
            stroke=alt.condition(pick, alt.value("#D55E00"), alt.value(None)),
            strokeWidth=alt.condition(pick, alt.value(2), alt.value(0)),
        )
        .add_params(pick)
    )
    other = (
        base.transform_filter("!datum.attention")
        .mark_rect(color=NO_DATA, opacity=0.5)
        .encode(
            tooltip=["layer", "kind", alt.Tooltip("head:O", title="head")],
        )
    )
    label = (
        alt.Chart(d[~d["attention"]].drop_duplicates("layer"))
        .mark_text(align="left", dx=4, fontStyle="italic")
        .encode(
            y=y,
            x=alt.value(4),
            text=alt.Text("note:N"),
        )
        .transform_calculate(note="datum.kind + ' · no attention'")
    )
    layers = [other, attn, label]
    if selected is not None:
        sel = d[(d["layer"] == selected[0]) & (d["head"] == selected[1])]
        layers.append(
            alt.Chart(sel).mark_rect(fill=None, stroke="#D55E00", strokeWidth=3).encode(x="head:O", y=y)
        )
    heat = alt.layer(*layers).properties(height=height, width=max(160, 32 * d["head"].nunique()))
    return alt.hconcat(lane + lane_text, heat, title=title).resolve_scale(color="independent")
