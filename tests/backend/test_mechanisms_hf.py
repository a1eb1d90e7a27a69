"""The mechanism probes on a real HF family (tiny random Qwen3: SWA, FULL, SWA, FULL, window 8) through
the runner: fast paths against references, ablation-aware results, cached reruns."""

from __future__ import annotations

import numpy as np
import pytest

from backend import loading
from backend.probes import gradient_influence as G
from backend.runner import Runner
from backend.spec import RunSpec
from models.apply import apply_ablation
from tests import hf_tiny


@pytest.fixture
def runner(tmp_path, monkeypatch):
    root = tmp_path / "roots"
    hf_tiny.save_checkpoint(hf_tiny.build("qwen3", vocab_size=320), root / "q3")
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(root))
    loading.clear_cache()
    yield Runner(tmp_path / "store", read_only_roots=[])
    loading.clear_cache()


def test_influence_on_hf_matches_the_full_logits_reference_and_follows_the_ablation():
    model = hf_tiny.build("qwen3", attn="eager")
    ids = hf_tiny.tokens(length=72)[:1]
    fast = G.influence_scores(model, ids, last=5)
    np.testing.assert_allclose(fast, G.influence_naive(model, ids, last=5), rtol=1e-4, atol=1e-8)
    d = np.arange(72)[::-1]
    assert (fast > 0).all()  # the full-attention layers reach every position
    # SWA window 8 (reach 7 per layer) twice, the full layers restricted to 4 tokens (reach 3) twice:
    # from the last 5 positions, nothing farther than 4 + 2 * 7 + 2 * 3 = 24
    with apply_ablation(model, "rf[full]=4"):
        s = G.influence_scores(model, ids, last=5)
    assert (s[d > 24] == 0).all() and (s[d <= 24] > 0).all()


def test_mechanism_probes_run_on_hf_and_see_the_ablation(runner):
    spec = dict(model="q3", probe="gradient_influence", data="stdlib", params={"max_tokens": 128, "last": 5,
                                                                               "bins_per_octave": 1})
    plain = runner.run(RunSpec.build(**spec)).tables["influence"]
    cut = runner.run(RunSpec.build(**spec, ablation="rf[full]=4")).tables["influence"]
    assert plain["bin_end"][-1] == cut["bin_end"][-1] == 128 and sum(plain["n"]) == 128
    far = [i for i, a in enumerate(cut["bin_start"]) if a > 24]
    assert far and all(cut["mean"][i] == 0.0 for i in far) and all(plain["mean"][i] > 0 for i in far)
    assert runner.run(RunSpec.build(**spec)).cached

    lp = runner.run(RunSpec.build(model="q3", probe="retrieval_probe",
                                  params={"length": 600, "per_class": 5, "sets": ["easy"]})).tables["layer_probe"]
    assert lp["layer"] == [-1, 0, 1, 2, 3, 0, 1, 2, 3]
    assert lp["layer_type"][1:5] == ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
    assert all(0.0 <= a <= 1.0 for a in lp["accuracy"])

    at = runner.run(RunSpec.build(model="q3", probe="attributions", params={"length": 600, "n_steps": 4}))
    t = at.tables["attributions"]
    assert t["is_target"][-1] and sum(t["is_target"]) == 1 and any(t["is_needle"])
    assert np.isfinite(np.asarray(t["attribution"], dtype=float)).all()
    cut_at = runner.run(RunSpec.build(model="q3", probe="attributions", ablation="rf[full]=4;window[swa]=4",
                                      params={"length": 600, "n_steps": 4})).tables["attributions"]
    # every layer sees at most 4 tokens: nothing farther than 4 * 3 = 12 positions from the target row
    # (the last position) is attributed
    n = len(cut_at["pos"])
    assert all(a == 0.0 for p, a in zip(cut_at["pos"], cut_at["attribution"]) if n - 1 - p > 12)

    rh = runner.run(RunSpec.build(model="q3", probe="retrieval_heads",
                                  params={"metric": "authors", "lengths": [600]})).tables["head_scores"]
    assert set(rh["metric"]) == {"authors"} and len(rh["score"]) == 4 * 4
    assert all(0.0 <= s <= 1.0 for s in rh["score"])
