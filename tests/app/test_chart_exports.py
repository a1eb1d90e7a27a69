"""SVG exports of the findings' charts (issue 14, item 2): every legend entry is distinct and whole,
every model label on a bar axis is drawn, and the receptive-field sweep is one panel per model with
both restrictions and a labelled unrestricted reference. Charts are built from the bundled store's
rows (the same SQL the views run) and rendered with vl-convert, as the SVG download button does."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from app import charts
from backend.store_reader import StoreReader

STORE = Path(__file__).resolve().parents[2] / "precomputed" / "store"
NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def bundled():
    if not (STORE / "runs").is_dir():
        pytest.skip("no bundled store")
    return StoreReader([str(STORE)])


def svg_texts(spec: dict) -> tuple[list[str], list[str]]:
    """(legend label texts, all texts) of the SVG export of ``spec``."""
    root = ET.fromstring(charts._svg(spec).decode())
    legend, every = [], []

    def walk(node, in_legend: bool) -> None:
        cls = node.get("class", "")
        in_legend = in_legend or "role-legend" in cls
        if node.tag == NS + "text" and (node.text or "").strip():
            every.append(node.text)
            if in_legend and "role-legend-label" in _parent_classes(node, root):
                legend.append(node.text)
        for child in node:
            walk(child, in_legend)

    walk(root, False)
    return legend, every


def _parent_classes(node, root) -> str:
    parents = {c: p for p in root.iter() for c in p}
    out, cur = [], node
    while cur in parents:
        cur = parents[cur]
        out.append(cur.get("class", ""))
    return " ".join(out)


def test_rf_sweep_is_one_panel_per_model_with_labelled_lines(bundled):
    df = bundled.sql("SELECT r.model, s.name, s.metric, s.x, s.y, s.label FROM sweep s JOIN runs r USING (run_id) "
                     "WHERE s.metric = 'longppl'").to_pandas()
    legend, every = svg_texts(charts.rf_sweep_panels(df).to_dict())
    assert sorted(legend) == sorted(charts.RF_SERIES.values())  # two entries, distinct, uncut
    models = sorted(df["model"].unique())
    assert all(m in every for m in models)  # one panel title per model
    notes = [t for t in every if t.startswith("unrestricted ")]
    assert len(notes) == len(models)  # the reference line is labelled in every panel
    swa64 = df[(df["model"] == "zoo/swa64") & (df["name"] == "baseline")]["y"].iloc[0]
    assert f"unrestricted {swa64:.1f}" in notes
    assert not any("…" in t for t in every)


def test_ppl_bars_label_every_model_and_keep_the_legend_whole(bundled):
    df = bundled.sql("SELECT r.model, l.ppl, l.longppl FROM longppl l JOIN runs r USING (run_id) "
                     "WHERE coalesce(r.ablation, '') = '' AND l.doc >= 0").to_pandas()
    df = df.groupby("model", as_index=False).mean()
    long = df.melt(id_vars=["model"], value_vars=["ppl", "longppl"], var_name="metric").assign(ablation="")
    long["metric"] = long["metric"].map({"ppl": "PPL", "longppl": "LongPPL"})
    models = sorted(df["model"])
    legend, every = svg_texts(charts.ppl_bars(long, models, by="model").to_dict())
    assert sorted(legend) == models and len(set(legend)) == len(legend)
    assert all(every.count(m) >= 3 for m in models)  # legend + the x axis of both panels
    assert not any("…" in t for t in every)


def test_position_curves_legend_has_one_entry_per_ablation_label():
    rows = [(m, a, f"{m}{a}", x, 1.0 + x / 1e4) for m in ("zoo/a", "zoo/b")
            for a in ("none", "full-attention layers, k=64") for x in (0, 256, 512)]
    df = pd.DataFrame(rows, columns=["model", "ablation", "side", "bucket_start", "mean_nll"])
    legend, _ = svg_texts(charts.position_curves(df, ["zoo/a", "zoo/b"]).to_dict())
    assert sorted(legend) == sorted(["zoo/a", "zoo/b", "none", "full-attention layers, k=64"])


def test_legend_symbols_of_the_dash_legend_are_strokes():
    rows = [("zoo/a", a, a, x, 1.0) for a in ("none", "x") for x in (0, 256)]
    df = pd.DataFrame(rows, columns=["model", "ablation", "side", "bucket_start", "mean_nll"])
    svg = charts._svg(charts.position_curves(df, ["zoo/a"]).to_dict()).decode()
    dashes = set(re.findall(r'stroke-dasharray="([^"]+)"', svg))
    assert len(dashes) >= 1  # the second ablation's legend symbol is dashed, not an identical dot
