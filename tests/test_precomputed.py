"""The bundled embedded default (precomputed/): every zoo model loads and reproduces its bundled
token_loss trace; the bundled store opens read-only; every dashboard view renders data from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PRE = ROOT / "precomputed"
ZOO = sorted(p.name for p in (PRE / "zoo").glob("*") if (p / "config.json").is_file()) if (PRE / "zoo").is_dir() else []
pytestmark = pytest.mark.skipif(not ZOO, reason="no bundled zoo in precomputed/")


@pytest.fixture(autouse=True)
def _bundled_root(monkeypatch):
    """Point model and data refs at the repository's precomputed/, whatever earlier tests (or the
    environment at import time) set."""
    from backend import loading

    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(PRE))
    loading.clear_cache()


def _reader():
    from backend.store_reader import StoreReader

    return StoreReader([PRE / "store"])


def test_bundle_has_the_seven_variants_with_cards():
    assert set(ZOO) == {"full", "swa64", "swa256", "swa1024", "mamba2", "gdn", "swa64_nope"}
    for name in ZOO:
        card = (PRE / "zoo" / name / "README.md").read_text()
        assert "parameters" in card and "training context" in card, name


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_reproduces_its_bundled_token_loss(name):
    """Recompute the NLL of the first 256 targets of a bundled token_loss trace on CPU (fp32) and
    compare with the trace (computed on GPU in bf16): same tokens, NLL within bf16 rounding."""
    import torch

    from backend.datasets import resolve as resolve_data
    from backend.forward import token_nll
    from backend.loading import load

    reader = _reader()
    runs = reader.sql(
        "SELECT run_id, spec FROM runs WHERE model = ? AND probe IN ('token_loss', 'longppl') AND status = 'ok' "
        "AND (ablation IS NULL OR ablation = '') ORDER BY probe DESC LIMIT 1", [f"zoo/{name}"]).to_pylist()
    assert runs, f"no unablated token_loss/longppl trace for zoo/{name}"
    run_id, spec = runs[0]["run_id"], runs[0]["spec"]
    spec = json.loads(spec) if isinstance(spec, str) else spec
    rows = reader.sql("SELECT pos, token_id, nll FROM token_loss WHERE run_id = ? AND doc = 0 AND pos <= 256 "
                      "ORDER BY pos", [run_id]).to_pydict()
    n = len(rows["pos"])
    assert n == 256
    lm = load(f"zoo/{name}", device=torch.device("cpu"))
    _, docs, _ = resolve_data(spec.get("data"), 1)
    ids = lm.codec.encode(docs[0].text).ids[: n + 1]
    assert ids[1:] == rows["token_id"], "bundled trace was tokenised differently"
    nll = token_nll(lm.model.float(), torch.tensor([ids]))[0].numpy()
    diff = np.abs(nll - np.array(rows["nll"]))
    assert diff.mean() < 0.05 and diff.max() < 0.5, (diff.mean(), diff.max())


def test_bundled_store_is_complete_and_read_only():
    from backend.store import StoreError, TraceStore

    reader = _reader()
    probes = {r["probe"] for r in reader.sql("SELECT DISTINCT probe FROM runs WHERE status = 'ok'").to_pylist()}
    assert {"token_loss", "key_tokens", "longppl", "niah", "retrieval_heads", "sweep"} <= probes, probes
    with pytest.raises(StoreError):
        TraceStore(PRE / "store", read_only=True).write_error("x1", {"model": "m"}, "nope")


CHARTLESS = ("runs", "influence", "retrieval_probe", "qk_distance", "attributions")  # no bundled runs of these


@pytest.mark.parametrize("view", ["overview", "longppl", "token_loss", "retrieval_heads", "niah", "scaling",
                                  *CHARTLESS])
def test_every_view_renders_from_the_bundle(view, monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("HYBRIDSCOPE_STORE", str(tmp_path / "empty"))
    monkeypatch.delenv("HYBRIDSCOPE_PRECOMPUTED", raising=False)
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=90)
    if view != "overview":
        at.switch_page(f"views/{view}.py")  # the page path is the view
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if view not in CHARTLESS:
        assert list(at.get("vega_lite_chart")), f"{view}: no chart from the bundle"


def test_dashboard_longppl_summary_is_the_bundled_full_run(monkeypatch, tmp_path):
    """The Overview / LongPPL table shows, per model, the LongPPL run over the most documents (not the
    receptive-field sweep's 2-document baseline), with the numbers its manifest records."""
    from app import data

    monkeypatch.setenv("HYBRIDSCOPE_STORE", str(tmp_path / "empty"))
    monkeypatch.delenv("HYBRIDSCOPE_PRECOMPUTED", raising=False)
    df = data.longppl_summary()
    df = df[df["ablation"] == ""].set_index("model")
    reader = _reader()
    for name in ZOO:
        runs = reader.sql("SELECT run_id FROM runs WHERE model = ? AND probe = 'longppl' AND status = 'ok' "
                          "AND (ablation IS NULL OR ablation = '')", [f"zoo/{name}"]).to_pylist()
        metas = [reader.manifests[r["run_id"]]["meta"] for r in runs]
        docs = {r["run_id"]: len(reader.sql("SELECT DISTINCT doc FROM longppl WHERE run_id = ? AND doc >= 0",
                                             [r["run_id"]]).to_pylist()) for r in runs}
        best = max(runs, key=lambda r: docs[r["run_id"]])
        meta = reader.manifests[best["run_id"]]["meta"]
        row = df.loc[f"zoo/{name}"]
        assert row["run_id"] == best["run_id"] and row["n_docs"] == docs[best["run_id"]] and len(metas) >= 1
        assert row["ppl"] == pytest.approx(meta["ppl"], rel=1e-6)
        assert row["n_key"] == meta["n_key"]
        assert row["ppl_pooled"] == pytest.approx(meta["ppl_pooled"], rel=1e-6)
        if meta["longppl"] is not None:  # both corpus definitions, as the manifest names them
            assert row["longppl"] == pytest.approx(meta["longppl"], rel=1e-6)
            assert row["longppl_pooled"] == pytest.approx(meta["longppl_pooled"], rel=1e-6)
