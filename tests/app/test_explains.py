"""AppTest over the bundled store (issue 14: a dashboard that explains at a glance): headings state the
zoo's verdict, NIAH says when no model retrieves, retrieval-head maps share one absolute scale anchored
at chance, the Runs view opens on a useful table, and a typed ablation finds the bundled run stored
under another spelling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import findings
from tests.app.conftest import _clear_caches, run_app, texts

PRE = Path(__file__).resolve().parents[2] / "precomputed"


@pytest.fixture
def bundled(env, monkeypatch, tmp_path):
    if not (PRE / "store" / "runs").is_dir():
        pytest.skip("no bundled store")
    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(PRE))
    monkeypatch.setenv("HYBRIDSCOPE_STORE", str(tmp_path / "user-store"))
    _clear_caches()
    return env


def specs(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def test_overview_headings_are_the_claims_with_the_zoos_verdicts(bundled):
    at = run_app()
    heads = texts(at, "subheader")
    verdicts = json.loads((PRE / "findings.json").read_text())["findings"]
    assert len(heads) == 4
    for i, (h, v) in enumerate(zip(heads, verdicts, strict=True)):
        assert h.startswith(f"{i + 1}. Paper: ") and h.endswith(f"— bundled zoo: {v['verdict']}"), h
    assert heads[3] == "4. Paper: NoPE on full attention helps small-window hybrids — bundled zoo: not reproduced"
    assert any("No model retrieves a needle" in w for w in texts(at, "warning"))
    # finding 4 compares swa64_nope with swa64 instead of an all-zero NIAH chart
    spec = json.dumps(specs(at))
    assert "finding" not in spec or "NIAH accuracy" not in spec


def test_niah_says_plainly_that_no_model_retrieves(bundled):
    at = run_app("niah", model="zoo/swa64")
    assert any("retrieves no needle: accuracy is 0 in all" in w for w in texts(at, "warning"))
    assert any(i.startswith("No model in the store retrieves a needle") for i in texts(at, "info"))


def _score_scale(spec: dict) -> dict:
    found = []

    def walk(node):
        if isinstance(node, dict):
            enc = node.get("encoding", {})
            if enc.get("color", {}).get("field") == "score":
                found.append(enc["color"]["scale"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    return found[0]


def test_retrieval_maps_share_one_absolute_scale_anchored_at_chance(bundled):
    chance = findings.retrieval_chance()
    scales = []
    for model in ("zoo/full", "zoo/swa64"):
        at = run_app("retrieval_heads", model=model)
        scales.append(_score_scale(specs(at)[0]))
        assert any(f"chance level ({chance:g}" in c for c in texts(at, "caption"))
    assert scales[0] == scales[1]  # the same scale for a model at chance and for the strongest one
    lo, hi = scales[0]["domain"]
    assert lo == chance and hi > 0.1 and scales[0]["clamp"] is True  # zoo/swa64's best head: 0.112


def test_runs_view_opens_on_a_useful_table(bundled):
    at = run_app("runs")
    runs = at.dataframe[0].value
    assert list(runs.columns[:4]) == ["model", "probe", "meaning", "ablation"]
    assert (runs["status"] == "ok").all() and len(runs) > 100
    assert runs["probe"].iloc[0] == "token_loss"  # the run panel's probes first, internal ones last
    assert "efficient layers, k=64" in set(runs["meaning"]) or not (PRE / "zoo").is_dir()
    sliced = at.dataframe[1].value
    assert len(sliced) > 0  # the slice opens on a table the first run wrote


def test_a_typed_ablation_finds_the_bundled_run_of_another_spelling(bundled):
    if not (PRE / "zoo" / "swa64" / "config.json").is_file():
        pytest.skip("bundled checkpoints not in the checkout (the native config gives the layout)")
    at = run_app("longppl", model="zoo/swa64", abl="rf[full]=64", params="n_docs=2")
    assert not [t for t in texts(at, "info") if t.startswith("No longppl traces")]
    assert any("93804e6fdc2e42034abf" in c for c in texts(at, "caption"))  # stored as rf[3,7]=64
    assert bundled.exists() is False or bundled.read_text() == ""  # nothing submitted
