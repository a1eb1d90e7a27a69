"""The paper's mechanism probes: gradient influence, layer-wise retrieval probing, Q/K weight distance,
Integrated Gradients, and the authors' retrieval score; fast paths against by-hand references on random
tiny models, known values, and the runner end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.checkpoints import describe, has_series, series
from backend.probes import attributions as A
from backend.probes import gradient_influence as G
from backend.probes import qk_distance as Q
from backend.probes import retrieval_probe as R
from backend.runner import Runner
from backend.spec import RunSpec, SpecError
from models.apply import apply_ablation
from models.tiny import tiny_model


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (1, n), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ gradient influence
@pytest.mark.parametrize("pattern", ["SMGF", "SSSF"])
def test_influence_fast_path_matches_full_logits_reference(pattern):
    model = tiny_model(pattern, seed=1)
    ids = _ids(96)
    fast = G.influence_scores(model, ids, last=20)
    naive = G.influence_naive(model, ids, last=20)
    np.testing.assert_allclose(fast, naive, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(G.influence_scores(model, ids, 20, checkpointing=True), fast, rtol=1e-5, atol=1e-8)


def test_influence_is_exactly_zero_beyond_the_receptive_field():
    """4 SWA layers of window 8 and a target over the last 5 positions: position i reaches the target
    only if its distance is at most 4 + 4 * 7 = 32."""
    model = tiny_model("SSSS", seed=2)
    s = G.influence_scores(model, _ids(80), last=5)
    d = np.arange(len(s))[::-1]
    assert (s[d > 32] == 0).all() and (s[d <= 32] > 0).all()
    with apply_ablation(model, "window[all]=4"):  # 4 + 4 * 3 = 16
        s = G.influence_scores(model, _ids(80), last=5)
    assert (s[d > 16] == 0).all() and (s[d <= 16] > 0).all()


def test_distance_bins_tile_every_distance_once():
    for n, k in [(1, 1), (40, 2), (4096, 4), (1000, 1)]:
        bins = G.distance_bins(n, k)
        assert bins[0][0] == 0 and bins[-1][1] == n and all(a < b for a, b in bins)
        assert all(b0 == a1 for (_, b0), (a1, _) in zip(bins, bins[1:]))
    assert G.distance_bins(10, 1) == [(0, 1), (1, 3), (3, 7), (7, 10)]
    b = G.bin_scores(np.arange(10, dtype=float), 1)  # distance d holds 9 - d
    assert b["mean"] == [9.0, 7.5, 4.5, 1.0] and b["max"] == [9.0, 8.0, 6.0, 2.0] and b["n"] == [1, 2, 4, 3]


def test_influence_params_are_checked():
    with pytest.raises(SpecError, match="last must be < max_tokens"):
        RunSpec.build(model="tiny/SF", probe="gradient_influence", params={"max_tokens": 32, "last": 32})


# -------------------------------------------------------------------------- retrieval probing
def test_layer_features_are_the_residual_stream_at_the_last_token():
    model = tiny_model("SMGF", seed=3)
    ids = _ids(40)
    f = R.features(model, ids)
    with torch.no_grad():
        hs = model.model(input_ids=ids, output_hidden_states=True).hidden_states  # emb, layers..., last normed
    assert f["hidden"].shape == (5, 64) and f["delta"].shape == (4, 64)
    for i in range(4):  # the last entry of hidden_states is after the final norm: compare up to layer 3
        np.testing.assert_allclose(f["hidden"][i], hs[i][0, -1].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(f["delta"][i], f["hidden"][i + 1] - f["hidden"][i], rtol=1e-5, atol=1e-6)


def test_probe_accuracy_separable_vs_noise():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(8), 10)
    separable = np.eye(8)[y] * 5 + rng.normal(size=(80, 8)) * 0.1
    acc, n_tr, n_te = R.probe_accuracy(separable, y, 1.0, 0)
    assert (acc, n_tr, n_te) == (1.0, 64, 16)
    noise_acc, _, _ = R.probe_accuracy(rng.normal(size=(80, 32)), y, 1.0, 0)
    assert noise_acc <= 0.5


def test_magic_number_sets():
    easy, hard = R.MAGIC["easy"], R.MAGIC["hard"]
    assert len(set(easy)) == len(set(hard)) == R.N_CLASSES and len({len(v) for v in easy + hard}) == 1
    assert len({v[0] for v in easy}) == 8 and len({v[:-1] for v in hard}) == 1  # hard: the last digit only


# -------------------------------------------------------------------------- Q/K weight distance
def _model_dir(tmp_path, **over):
    from tests.hf_tiny import save_checkpoint

    root = tmp_path / "roots"
    model = tiny_model("SFSF", seed=4, vocab_size=320, **over)
    save_checkpoint(model, root / "m")
    return root, root / "m", model


def test_qk_distance_known_values_with_explicit_head_dim_and_gqa(tmp_path, monkeypatch):
    """W(t) = W_final + (1 - t/T) * N: the distance is (1 - t/T) * ||N_h|| / ||W_h||, per head.
    head_dim 32 with hidden 64 and 4 heads (hidden / heads would be 16), 2 kv heads."""
    root, path, model = _model_dir(tmp_path, head_dim=32, num_attention_heads=4, num_key_value_heads=2)
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(root))
    noise = {}
    g = torch.Generator().manual_seed(0)
    for i in (1, 3):
        attn = model.model.layers[i].mixer
        noise[i] = tuple(torch.randn(w.shape, generator=g) for w in (attn.q_proj.weight, attn.k_proj.weight))
    final = {i: (model.model.layers[i].mixer.q_proj.weight.detach().clone(),
                 model.model.layers[i].mixer.k_proj.weight.detach().clone()) for i in (1, 3)}
    steps = (0, 50, 100)
    for t in steps:
        with torch.no_grad():
            for i in (1, 3):
                model.model.layers[i].mixer.q_proj.weight.copy_(final[i][0] + (1 - t / 100) * noise[i][0])
                model.model.layers[i].mixer.k_proj.weight.copy_(final[i][1] + (1 - t / 100) * noise[i][1])
        Q.save_qk_checkpoint(model, path, t, tokens=t * 1000)
    assert [c.step for c in series(path)] == [0, 50, 100] and series(path)[0].layers == (1, 3)
    assert has_series(path) and "3 checkpoints" in describe(path)
    res = Runner(tmp_path / "store", read_only_roots=[]).run(RunSpec.build(model="m", probe="qk_distance"))
    t = res.tables["qk_distance"]
    assert len(t["step"]) == 2 * 4 * 3
    for layer, head, kv, step, tok, dq, dk in zip(*(t[c] for c in ("layer", "head", "kv_head", "step", "tokens",
                                                                    "q_dist", "k_dist"))):
        assert kv == head // 2 and tok == step * 1000
        qf, kf = final[layer]
        nq, nk = noise[layer]
        rows_q, rows_k = slice(head * 32, head * 32 + 32), slice(kv * 32, kv * 32 + 32)
        want_q = (1 - step / 100) * float(nq[rows_q].norm() / qf[rows_q].norm())
        want_k = (1 - step / 100) * float(nk[rows_k].norm() / kf[rows_k].norm())
        assert dq == pytest.approx(want_q, rel=1e-5, abs=1e-12) and dk == pytest.approx(want_k, rel=1e-5, abs=1e-12)


def test_qk_distance_fast_matches_per_head_slices():
    g = torch.Generator().manual_seed(1)
    q, k, qf, kf = (torch.randn(s, generator=g) for s in ((6 * 8, 20), (2 * 8, 20), (6 * 8, 20), (2 * 8, 20)))
    qs, qfs, group = Q.head_slices(q, k, 6)[0], Q.head_slices(qf, kf, 6)[0], Q.head_slices(q, k, 6)[2]
    ks, kfs = Q.head_slices(q, k, 6)[1], Q.head_slices(qf, kf, 6)[1]
    dq, dk = Q.distances(qs, qfs), Q.distances(ks, kfs)
    for h, kv, nq, nk in Q.distances_naive(q, k, qf, kf, 6):
        assert kv == h // group and dq[h] == pytest.approx(nq, rel=1e-12) and dk[kv] == pytest.approx(nk, rel=1e-12)
    with pytest.raises(ValueError, match="do not split into 5 heads"):
        Q.head_slices(q, k, 5)


def test_a_model_without_a_series_is_a_clear_error(tmp_path, monkeypatch):
    root, path, _ = _model_dir(tmp_path)
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(root))
    assert not has_series(path) and "no checkpoint series" in describe(path)
    with pytest.raises(Exception, match="has no checkpoint series"):
        Runner(tmp_path / "store", read_only_roots=[]).run(RunSpec.build(model="m", probe="qk_distance"))


def test_the_series_is_the_runs_data_and_changes_no_other_run(tmp_path, monkeypatch):
    from backend import model_refs

    root, path, model = _model_dir(tmp_path)
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(root))
    runner = Runner(tmp_path / "store", read_only_roots=[])
    qk, tl = RunSpec.build(model="m", probe="qk_distance"), RunSpec.build(model="m", probe="token_loss",
                                                                           data="stdlib")
    before = model_refs.fingerprint(model_refs.resolve("m")), runner.run_id(qk), runner.run_id(tl)
    Q.save_qk_checkpoint(model, path, 5)
    after = model_refs.fingerprint(model_refs.resolve("m")), runner.run_id(qk), runner.run_id(tl)
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]


def test_the_zoo_trainers_series_is_read_as_written(tmp_path, monkeypatch):
    """zoo.qk.save_point (what the trainer calls) -> the qk_distance probe: distances by hand, bf16."""
    from zoo.qk import save_point

    root, path, model = _model_dir(tmp_path)
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(root))
    final = {i: model.model.layers[i].mixer.q_proj.weight.detach().clone() for i in (1, 3)}
    save_point(model, path / "qk", 0, tokens=0)  # out of order on purpose: step 0 written after the final one
    saved = {0: {i: final[i].to(torch.bfloat16).double() for i in (1, 3)}}
    with torch.no_grad():
        for i in (1, 3):
            model.model.layers[i].mixer.q_proj.weight.mul_(1.5)
    save_point(model, path / "qk", 120, tokens=4096 * 120)
    saved[120] = {i: (final[i] * 1.5).to(torch.bfloat16).double() for i in (1, 3)}
    assert [c.step for c in series(path)] == [0, 120] and series(path)[1].tokens == 4096 * 120
    t = Runner(tmp_path / "store", read_only_roots=[]).run(RunSpec.build(model="m", probe="qk_distance")).tables[
        "qk_distance"]
    d = 16  # head_dim of the tiny model (64 / 4)
    for layer, head, step, dq, dk in zip(*(t[c] for c in ("layer", "head", "step", "q_dist", "k_dist"))):
        w, wf = saved[step][layer][head * d:(head + 1) * d], saved[120][layer][head * d:(head + 1) * d]
        assert dq == pytest.approx(float((w - wf).norm() / wf.norm()), rel=1e-6)
        assert dk == (0.0 if step == 120 else dk) and (step == 120) == (dq == 0.0)


# -------------------------------------------------------------------------- Integrated Gradients
def test_captum_matches_the_by_hand_riemann_sum_and_completeness():
    model = tiny_model("SMGF", seed=5)
    x = A.embeddings(model, _ids(30))
    f = A.target_function(model, target=7)
    base = A.baseline_for(model, x, "mean")
    for b in (base, None):
        captum_right, _ = A.integrated_gradients(f, x, 8, method="riemann_right", batch=4, baseline=b)
        np.testing.assert_allclose(captum_right, A.integrated_gradients_naive(f, x, 8, b), rtol=1e-4, atol=1e-7)
    attr, delta = A.integrated_gradients(f, x, 32, baseline=base)  # sums to F(x) - F(b)
    with torch.no_grad():
        gap = float(f(x)[0] - f(base)[0])
    assert abs(gap) > 1e-3 and attr.sum() == pytest.approx(gap, rel=2e-2) and delta < 2e-2 * abs(gap)
    zero, _ = A.integrated_gradients(f, x, 32)  # the zero baseline crosses the norm's jump at 0
    with torch.no_grad():
        zero_gap = float(f(x)[0] - f(torch.zeros_like(x))[0])
    assert abs(zero.sum() - zero_gap) > 10 * abs(attr.sum() - gap)


# -------------------------------------------------------------------------- end to end (runner)
def test_new_probes_end_to_end_on_a_tiny_model(tmp_path):
    runner = Runner(tmp_path / "store", read_only_roots=[])
    inf = runner.run(RunSpec.build(model="tiny/SSSF", probe="gradient_influence", data="stdlib",
                                   params={"max_tokens": 256, "bins_per_octave": 1})).tables["influence"]
    assert inf["bin_start"][:3] == [0, 1, 3] and inf["bin_end"][-1] == 256 and sum(inf["n"]) == 256
    lp = runner.run(RunSpec.build(model="tiny/SMGF", probe="retrieval_probe",
                                  params={"length": 600, "per_class": 5, "sets": ["hard"]})).tables["layer_probe"]
    assert lp["layer"] == [-1, 0, 1, 2, 3, 0, 1, 2, 3] and lp["feature"] == ["hidden"] * 5 + ["delta"] * 4
    assert lp["layer_type"][:5] == ["embedding", "sliding_attention", "mamba2", "gated_deltanet", "full_attention"]
    assert all(0.0 <= a <= 1.0 for a in lp["accuracy"]) and set(lp["n_test"]) == {8} and lp["chance"][0] == 0.125
    res = runner.run(RunSpec.build(model="tiny/SF", probe="attributions", params={"length": 600, "n_steps": 4}))
    at = res.tables["attributions"]
    assert at["pos"] == list(range(len(at["pos"]))) and sum(at["is_target"]) == 1 and at["is_target"][-1]
    assert sum(at["is_needle"]) == 10  # the passkey's five digits (char codec), stated twice in its needle
    assert res.manifest["meta"]["answer"].startswith(res.manifest["meta"]["target_token"])


def test_authors_retrieval_score_is_one_prefill_row_on_matched_answer_tokens(tmp_path):
    from backend.codec import CharCodec
    from backend.probes.retrieval_heads import answer_token_positions

    codec = CharCodec()
    ids = codec.encode("key 4821 and 12").ids
    # spaces and digits outside the needle match too
    assert answer_token_positions(codec, ids, "4821") == [3, 4, 5, 6, 7, 8, 12, 13, 14]
    runner = Runner(tmp_path / "store", read_only_roots=[])
    rows = runner.run(RunSpec.build(model="tiny/SMGF", probe="retrieval_heads",
                                    params={"metric": "authors", "lengths": [600]})).tables["head_scores"]
    scores = [s for s, t in zip(rows["score"], rows["layer_type"]) if t in ("full_attention", "sliding_attention")]
    assert set(rows["metric"]) == {"authors"} and all(0.0 < s <= 1.0 for s in scores)
    assert all(s is None for s, t in zip(rows["score"], rows["layer_type"]) if t in ("mamba2", "gated_deltanet"))
