"""AppTest: a view finds the run of an ablation whatever form the user types (issue 14, item 1).

The store holds a run spelled ``rf[3,7]=64`` (how the bundled sweep stores it); the user types
``rf[full]=64``. The model's layout comes from the run's ``meta.model_info`` (what the runner writes)
or, for bundled runs without it, from the model's native ``config.json``; unknown models match only as
spelled. Nothing is submitted when the run exists (the fake client logs every submit)."""

from __future__ import annotations

import json

import pytest

from backend.store import TraceStore
from tests.app.conftest import run_app, texts
from tests.app.fake_client import synthetic_tables, write_synthetic

SWA64 = ["sliding_attention"] * 3 + ["full_attention"] + ["sliding_attention"] * 3 + ["full_attention"]
INFO = {"layer_types": SWA64, "num_heads": [6] * 8, "windows": [64, 64, 64, None, 64, 64, 64, None],
        "pe": ["rope"] * 8, "conv_kernel": 4, "chunks": None}
CONFIG = {"model_type": "hybridscope", "layer_types": SWA64, "sliding_window": 64, "num_attention_heads": 6,
          "linear_num_heads": 4, "conv_kernel": 4, "layer_windows": None, "layer_pe": None}


def write_run(root, spelled: str, model_info: dict | None) -> str:
    from backend.spec import RunSpec

    spec = RunSpec.build(model="zoo/swa64", probe="longppl", ablation=spelled)
    run_id = "stored-" + spelled.replace("[", "").replace("]", "").replace(",", "").replace("=", "")
    meta = {"ablation_text": spec.ablation.to_text(), "fake": True}
    if model_info:
        meta["model_info"] = model_info
    TraceStore(root).write_run(run_id, spec.canonical(), synthetic_tables("longppl", spec.model, spelled),
                               meta=meta, overwrite=True)
    return run_id


@pytest.fixture
def lookup_store(env, monkeypatch, tmp_path):
    root = tmp_path / "store"
    write_synthetic(root, "zoo/swa64", "longppl", "")
    monkeypatch.setenv("HYBRIDSCOPE_STORE", str(root))
    return root


def missing_prompts(at) -> list[str]:
    return [t for t in texts(at, "info") if t.startswith("No longppl traces")]


def submitted(log) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_the_stored_spelling_is_found_from_its_model_info(lookup_store, env):
    run_id = write_run(lookup_store, "rf[3,7]=64", INFO)
    at = run_app("longppl", model="zoo/swa64", abl="rf[full]=64")
    assert not missing_prompts(at)
    assert any(run_id in c for c in texts(at, "caption"))
    assert not [b for b in at.button if b.label.startswith("Compute longppl")]
    assert submitted(env) == []


def test_the_stored_spelling_is_found_from_the_native_config(lookup_store, env, tmp_path, monkeypatch):
    run_id = write_run(lookup_store, "rf[0-2,4-6]=64", None)
    at = run_app("longppl", model="zoo/swa64", abl="rf[swa]=64")
    assert missing_prompts(at)  # no model_info and no config: matched only as spelled
    pre = tmp_path / "precomputed"
    (pre / "zoo" / "swa64").mkdir(parents=True)
    (pre / "zoo" / "swa64" / "config.json").write_text(json.dumps(CONFIG))
    (pre / "zoo" / "swa64" / "model.safetensors").write_bytes(b"")
    from tests.app.conftest import _clear_caches

    _clear_caches()
    at = run_app("longppl", model="zoo/swa64", abl="rf[swa]=64")
    assert not missing_prompts(at)
    assert any(run_id in c for c in texts(at, "caption"))


def test_another_setting_is_not_a_match(lookup_store, env):
    write_run(lookup_store, "rf[3,7]=64", INFO)
    for abl in ("rf[full]=128", "rf[3]=64", "rf[swa]=16"):
        at = run_app("longppl", model="zoo/swa64", abl=abl)
        assert missing_prompts(at), abl
    assert submitted(env) == []


def test_a_no_op_finds_the_unablated_run(lookup_store, env):
    write_run(lookup_store, "rf[3,7]=64", INFO)  # gives the app the model's layout
    at = run_app("longppl", model="zoo/swa64", abl="rf[swa]=64")  # the SWA window is 64 already
    assert not missing_prompts(at)
    assert not any("stored-" in c for c in texts(at, "caption") if c.startswith("longppl run"))


def test_the_users_form_is_shown(lookup_store, env):
    write_run(lookup_store, "rf[3,7]=64", INFO)
    at = run_app("longppl", model="zoo/swa64", abl="rf[full]=64")
    assert at.text_input(key="w_abl").value == "rf[full]=64"
    assert "rf%5Bfull%5D%3D64" in at.sidebar.code[0].value  # the permalink keeps the user's form
    table = at.dataframe[0].value
    assert "full-attention layers, k=64" in set(table["meaning"])  # the stored rf[3,7]=64, by meaning
    assert "rf[3,7]=64" in set(table["ablation"])
