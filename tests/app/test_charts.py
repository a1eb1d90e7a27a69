"""Chart colours are consistent and colour-blind safe; chart and table downloads produce real files."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow.parquet as pq

from app import charts


def test_model_colours_do_not_depend_on_which_models_a_chart_shows():
    everything = ["zoo/c", "zoo/a", "zoo/b"]
    scale = charts.model_scale(everything).to_dict()
    assert scale["domain"] == ["zoo/a", "zoo/b", "zoo/c"]
    assert scale["range"] == charts.OKABE_ITO[:3]
    many = charts.model_scale([f"m{i:02d}" for i in range(10)]).to_dict()
    assert many["range"][8] == many["range"][0]  # the 8 Okabe-Ito colours cycle


def test_layer_type_colours_and_labels():
    scale = charts.kind_scale().to_dict()
    assert scale["domain"] == ["full", "SWA", "Mamba-2", "GDN"]
    assert len(set(scale["range"])) == 4 and set(scale["range"]) <= set(charts.OKABE_ITO)
    assert charts.kind_label("gated_deltanet") == "GDN" and charts.kind_label("weird") == "weird"


def test_svg_and_png_downloads_render_the_chart():
    df = pd.DataFrame(
        {
            "model": ["zoo/a"] * 4,
            "name": ["restrict_full"] * 3 + ["baseline"],
            "x": [16.0, 64.0, 256.0, 4096.0],
            "y": [40.0, 20.0, 10.0, 9.0],
            "label": ["a", "b", "c", "unrestricted"],
        }
    )
    spec = charts.rf_sweep_panels(df).to_dict()
    svg = charts._svg(spec).decode()
    assert svg.startswith("<svg") and charts.RF_SERIES["restrict_full"] in svg and "unrestricted 9.0" in svg
    assert charts._png(spec)[:8] == b"\x89PNG\r\n\x1a\n"


def test_head_heatmap_keeps_null_scores_for_non_attention_layers():
    df = pd.DataFrame(
        {
            "layer": [0, 0, 1, 1],
            "head": [0, 1, 0, 1],
            "layer_type": ["mamba2", "mamba2", "full_attention", "full_attention"],
            "score": [None, None, 0.2, 0.7],
        }
    )
    spec = charts.head_heatmap(df, "t", selected=(1, 1)).to_dict()
    rows = next(iter(spec["datasets"].values()))
    mamba = [r for r in rows if r["layer_type"] == "mamba2"]
    assert all(r["score"] is None and r["kind"] == "Mamba-2" and r["attention"] is False for r in mamba)
    svg = charts._svg(spec).decode()
    assert "Mamba-2 · no attention" in svg


def test_parquet_download_round_trips():
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "<y>"]})
    back = pq.read_table(io.BytesIO(charts._parquet(df))).to_pandas()
    pd.testing.assert_frame_equal(back, df)


def test_sweep_rows_split_by_metric_and_the_metrics_match_the_probe():
    from app import data
    from backend.probes.sweep import METRICS

    known = {**data.SWEEP_METRICS, **data.POOLED_SWEEP_METRICS}
    assert set(known.values()) == {metric for metric, _ in METRICS}
    df = pd.DataFrame(
        {
            "model": ["m"] * 5,
            "name": ["baseline", "restrict_full", "restrict_full", "baseline", "formation:m"],
            "metric": ["longppl", "longppl", "ppl", "ppl", data.FORMATION_METRIC],
            "x": [4096.0, 16.0, 16.0, 4096.0, 10.0],
            "y": [9.0, 20.0, 12.0, 7.0, 0.1],
            "label": ["a", "b", "c", "d", "e"],
        }
    )
    out = data.receptive_field_sweeps(df)
    assert list(out) == ["LongPPL", "PPL"]
    assert out["LongPPL"]["name"].tolist() == ["baseline", "restrict_full"]
    assert out["PPL"][["name", "y"]].values.tolist() == [["restrict_full", 12.0], ["baseline", 7.0]]
    only_ppl = data.receptive_field_sweeps(df[df["metric"] == "ppl"])
    assert list(only_ppl) == ["PPL"]  # undefined LongPPL: no empty chart
    assert data.formation_series(df)[["name", "y"]].values.tolist() == [["formation:m", 0.1]]


def test_longppl_summary_prefers_the_run_over_most_documents():
    from app import data

    df = pd.DataFrame(
        {
            "model": ["a", "a", "a", "b"],
            "ablation": ["", "", "rf[3]=64", ""],
            "created_at": [1.0, 2.0, 3.0, 1.0],
            "n_docs": [14, 3, 3, 3],
            "longppl": [8.0, 7.0, 90.0, 5.0],
        }
    )
    out = data.most_complete(df, ["model", "ablation"])
    want = [["a", "", 8.0], ["a", "rf[3]=64", 90.0], ["b", "", 5.0]]
    assert out[["model", "ablation", "longppl"]].values.tolist() == want
    newer = pd.concat([df, df.iloc[[0]].assign(created_at=5.0, longppl=9.0)])  # same size, newer: wins
    assert data.most_complete(newer, ["model", "ablation"]).iloc[0]["longppl"] == 9.0
