"""The paper's key experiment (restrict the full-attention layers vs the efficient ones) on real hybrid
families: a tiny checkpoint of each under a model root, the sweep probe through the Runner, and which
layers / branches each series restricted."""

from __future__ import annotations

import pytest

from backend import loading
from backend.runner import Runner
from backend.spec import RunSpec
from models.ablation import Ablation
from models.adapters import adapter_class_for
from models.plan import HYBRID
from tests import hf_tiny
from tests.backend.test_longppl import write_docs
from tests.hf_hybrids import build

CASES = {  # family -> (restrict_full label, restrict_efficient label)
    "qwen3_next": ("rf[1]=8", "rf[0,2-3]=8"),
    "nemotron_h": ("rf[2]=8", "rf[0,4]=8"),  # the mlp / moe blocks (1, 3) are in neither group
    "falcon_h1": ("rf[full]=8", "rf[linear]=8"),  # every layer is hybrid: one branch per series
    "jamba": ("rf[1,3]=8", "rf[0,2]=8"),
    "bamba": ("rf[1]=8", "rf[0,2-3]=8"),
}


def _restricted(plan) -> set[str]:
    out = {"attention"} if plan.is_attention and plan.window is not None else set()
    rec = plan.recurrent_field if plan.kind == HYBRID else (None if plan.is_attention else plan.receptive_field)
    return out | ({"recurrent"} if rec is not None else set())


@pytest.mark.parametrize("name", sorted(CASES))
def test_sweep_restricts_full_vs_efficient_layers_of_hybrid_families(name, tmp_path, monkeypatch):
    model = build(name, vocab_size=320)
    root = tmp_path / "roots"
    hf_tiny.save_checkpoint(model, root / name)
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(root))
    loading.clear_cache()
    data = write_docs(tmp_path, n_docs=1, n_words=60)
    params = {"n_docs": 1, "max_tokens": 200, "trunc_len": 32, "stride": 16, "ks": [8]}
    runner = Runner(tmp_path / "store", read_only_roots=[])
    try:
        result = runner.run(RunSpec.build(model=name, probe="sweep", data=data, params=params))
    finally:
        loading.clear_cache()
    rows = result.tables["sweep"]
    labels = dict(zip(rows["name"], rows["label"], strict=False))
    full, efficient = CASES[name]
    assert labels == {"baseline": "unrestricted", "restrict_full": full, "restrict_efficient": efficient}
    assert all(y > 0 for y in rows["y"])
    info = adapter_class_for(model.config).info_for(model.config)
    for series, want in (("restrict_full", "attention"), ("restrict_efficient", "recurrent")):
        plans = Ablation.from_text(labels[series]).resolve(info)
        hit = {i: _restricted(p) for i, p in enumerate(plans) if _restricted(p)}
        assert all(branches == {want} for branches in hit.values()), (series, hit)
        kinds = info.layer_types
        assert set(hit) == {i for i, k in enumerate(kinds) if (k == HYBRID or (k == "full_attention") ==
                                                                (want == "attention")) and k not in ("mlp", "moe")}
