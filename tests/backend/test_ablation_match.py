"""Ablations matched by their effect on the model (backend.ablation_match) and the runner's use of it:
a run stored under one spelling is returned, never recomputed, for another spelling of the same
ablation (Runner.run, the CLI, Runner.find for sweeps); labels by meaning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backend.ablation_match import (
    effect,
    info_from_json,
    info_of_meta,
    info_to_json,
    meaning,
    native_info,
    same_effect,
)
from backend.runner import Runner
from backend.spec import RunSpec
from models.adapters.native import NativeAdapter
from models.tiny import tiny_config

REPO = Path(__file__).resolve().parents[2]
ZOO = ("full", "swa64", "swa256", "swa1024", "mamba2", "gdn", "swa64_nope")


def zoo_config(name: str) -> dict:
    """A bundled zoo config.json (from the working tree, else from git: the checkpoints may be moved out)."""
    path = REPO / "precomputed" / "zoo" / name / "config.json"
    if path.is_file():
        return json.loads(path.read_text())
    out = subprocess.run(["git", "show", f"HEAD:precomputed/zoo/{name}/config.json"], cwd=REPO,
                         capture_output=True, text=True)
    if out.returncode:
        pytest.skip(f"no config.json for zoo/{name}")
    return json.loads(out.stdout)


@pytest.mark.parametrize("name", ZOO)
def test_native_info_is_the_native_adapters(name):
    from models.config import HybridConfig

    cfg = zoo_config(name)
    assert native_info(cfg) == NativeAdapter.info_for(HybridConfig(**cfg))


@pytest.mark.parametrize("pattern", ["SSSF", "FMGS", "GGGF"])
def test_native_info_of_tiny_configs_and_json_round_trip(pattern):
    config = tiny_config(pattern, layer_windows=[None] * len(pattern))
    info = NativeAdapter.info_for(config)
    assert native_info(config.to_dict()) == info
    assert info_from_json(json.loads(json.dumps(info_to_json(info)))) == info
    assert info_of_meta(json.dumps({"model_info": info_to_json(info)})) == info
    assert info_of_meta("{}") is None and info_of_meta("not json") is None
    assert info_from_json({"layer_types": ["full_attention"], "num_heads": [], "windows": [], "pe": []}) is None
    assert native_info({"model_type": "llama"}) is None


def test_same_effect_by_what_the_ablation_does():
    info = native_info(zoo_config("swa64"))  # SSSFSSSF, window 64
    assert same_effect("rf[full]=64", "rf[3,7]=64", info)
    assert same_effect("rf[swa]=16", "rf[0-2,4-6]=16", info)
    assert same_effect("rf[all]=64", "rf[0-7]=64", info)
    assert same_effect("window[swa]=64", "", info)  # the native window: a no-op
    assert same_effect("rf[swa]=128", "", info)  # wider than the window: a no-op
    assert not same_effect("rf[full]=64", "rf[3]=64", info)
    assert not same_effect("rf[full]=64", "rf[full]=128", info)
    assert not same_effect("window[swa]=none", "", info)
    assert not same_effect("rf[linear]=64", "", info)  # selects nothing here: it does not fit
    assert effect("rf[linear]=64", info) is None
    gdn = native_info(zoo_config("gdn"))  # GGGFGGGF
    assert same_effect("rf[linear]=64", "rf[0-2,4-6]=64", gdn)
    assert not same_effect("rf[all]=64", "rf[full]=64", gdn)


def test_meaning_labels():
    swa = native_info(zoo_config("swa64"))
    full = native_info(zoo_config("full"))
    assert meaning("rf[0-2,4-6]=64", swa) == "efficient layers, k=64"
    assert meaning("rf[3,7]=256", swa) == "full-attention layers, k=256"
    assert meaning("rf[0-7]=16", full) == "all layers, k=16"
    assert meaning("rf[full]=512") == "full-attention layers, k=512"  # words need no model
    assert meaning("rf[1]=64", swa) == "layer 1, k=64"
    assert meaning("pe[full]=nope;skip=3", swa) == "full-attention layers, NoPE; skip layer 3"
    assert meaning("window[swa]=none") == "SWA layers, full causal"
    assert meaning("") == "none"


def _doc(tmp_path: Path) -> str:
    p = tmp_path / "doc.txt"
    p.write_text("".join(f"line {i}: the quick brown fox. " for i in range(8)))
    return f"file:{p}"


def test_runner_returns_the_stored_run_for_another_spelling(tmp_path):
    runner = Runner(tmp_path / "store", read_only_roots=[])
    data = _doc(tmp_path)
    kw = dict(model="tiny/SSSF", probe="token_loss", data=data, params={"n_docs": 1, "max_tokens": 64})
    first = runner.run(RunSpec.build(ablation="rf[3]=16", **kw))
    assert first.manifest["meta"]["model_info"]["layer_types"][3] == "full_attention"
    again = runner.run(RunSpec.build(ablation="rf[full]=16", **kw))
    assert again.cached and again.run_id == first.run_id and runner.computed == [first.run_id]
    assert runner.find(RunSpec.build(ablation="rf[full]=16", **kw)).run_id == first.run_id
    other = runner.run(RunSpec.build(ablation="rf[full]=8", **kw))  # another setting: computed
    assert not other.cached and len(runner.computed) == 2
    assert runner.find(RunSpec.build(ablation="rf[swa]=16", **kw)) is None


def test_cli_reports_the_stored_run_as_cached(tmp_path):
    store = tmp_path / "store"
    data = _doc(tmp_path)
    base = [sys.executable, "-m", "backend", "run", "--model", "tiny/SSSF", "--probe", "token_loss",
            "--data", data, "--param", "n_docs=1", "--param", "max_tokens=64", "--store", str(store), "--json"]
    a = subprocess.run([*base, "--ablation", "rf[3]=16"], cwd=REPO, capture_output=True, text=True)
    b = subprocess.run([*base, "--ablation", "rf[full]=16"], cwd=REPO, capture_output=True, text=True)
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    ra, rb = json.loads(a.stdout), json.loads(b.stdout)
    assert rb["run_id"] == ra["run_id"] and rb["cached"] and not ra["cached"]
