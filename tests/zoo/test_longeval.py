"""zoo.longeval: windows of the long held-out split, evaluator key tokens, PPL/LongPPL of every evaluation
checkpoint, against direct references (HF's own loss per window, the naive short-context LongPPL)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import zoo.longeval as le
from backend.probes.longppl_math import key_mask, short_logprobs_naive
from models.modeling import HybridForCausalLM
from zoo.site_corpus import LONGEVAL_DOC_ENDS_FILE, LONGEVAL_TOKENS_FILE
from zoo.variants import variant_config

SEQ, TRUNC, STRIDE = 64, 16, 8


@pytest.fixture()
def data(tmp_path):
    rng = np.random.default_rng(3)
    lens = [150, 64, 40, 200]  # windows: 2, 1, 0 (too short), 3
    toks = rng.integers(2, 200, size=sum(lens)).astype("<u2")
    np.save(tmp_path / LONGEVAL_TOKENS_FILE, toks)
    np.save(tmp_path / LONGEVAL_DOC_ENDS_FILE, np.cumsum(lens))
    return tmp_path, toks, lens


def _model(seed: int) -> HybridForCausalLM:
    torch.manual_seed(seed)
    return HybridForCausalLM(variant_config("swa128", "smoke-5m")).eval()


def test_windows_cut_each_document(data) -> None:
    d, toks, lens = data
    wins = le.windows(d, SEQ)
    starts = [0, 64, 150, 254, 318, 382]  # doc 0: 0, 64; doc 1: 150; doc 3 (starts at 254): 254, 318, 382
    assert len(wins) == 6 and all(len(w) == SEQ for w in wins)
    for w, s in zip(wins, starts, strict=True):
        assert np.array_equal(w, toks[s : s + SEQ].astype(np.int64))
    assert len(le.windows(d, SEQ, max_windows=2)) == 2
    with pytest.raises(ValueError, match="no window of 1000 tokens"):
        le.windows(d, 1000)


def _ref_nll(model, w) -> np.ndarray:
    x = torch.from_numpy(np.asarray(w)[None])
    with torch.no_grad():
        logits = model(input_ids=x).logits[0, :-1].float()
    return F.cross_entropy(logits, x[0, 1:], reduction="none").numpy().astype(np.float64)


def test_keys_and_scores_match_references(data, monkeypatch) -> None:
    d, _, _ = data
    wins = le.windows(d, SEQ)
    model = _model(0)
    monkeypatch.setattr(le, "ALPHA", -0.05)  # a random model gains little from context: loose thresholds
    monkeypatch.setattr(le, "BETA", -20.0)  # so that some tokens are keys and some are not
    keys = le.evaluator_keys(model, wins, TRUNC, STRIDE, torch.device("cpu"))
    n = 0
    for w, k in zip(wins, keys, strict=True):
        nll = _ref_nll(model, w)
        short = short_logprobs_naive(model, torch.from_numpy(np.asarray(w)[None]), TRUNC, STRIDE)
        want = np.flatnonzero(key_mask(-nll, short, -0.05, -20.0))
        assert np.array_equal(k, want)
        n += len(k)
    assert 0 < n < len(wins) * (SEQ - 1 - TRUNC)
    other = _model(1)
    s = le.score(other, wins, keys, torch.device("cpu"))
    nlls = [_ref_nll(other, w) for w in wins]
    assert s["n_key"] == n and s["n_targets"] == len(wins) * (SEQ - 1)
    assert s["ppl"] == pytest.approx(math.exp(np.concatenate(nlls).mean()), rel=1e-5)
    assert s["longppl"] == pytest.approx(math.exp(np.concatenate([x[k] for x, k in zip(nlls, keys)]).mean()),
                                         rel=1e-5)
    path = d / "keys.npz"
    le.save_keys(path, keys, {"evaluator": "x"})
    back, meta = le.load_keys(path)
    assert meta == {"evaluator": "x"} and le.keys_sha256(back) == le.keys_sha256(keys)
    assert all(np.array_equal(a, b) for a, b in zip(back, keys, strict=True))


def test_run_scores_every_checkpoint_and_reuses_keys(data, tmp_path, monkeypatch) -> None:
    d, _, _ = data
    monkeypatch.setattr(le, "ALPHA", -0.05)
    monkeypatch.setattr(le, "BETA", -20.0)
    root = tmp_path / "w"
    run = root / "runs" / "swa128"
    for step, seed in ((4, 1), (8, 2)):
        _model(seed).save_pretrained(run / "checkpoints" / f"step-{step:06d}")
    _model(3).save_pretrained(root / "zoo" / "swa128")
    (run / "formation.json").write_text(json.dumps({"records": [
        {"step": 4, "tokens": 400}, {"step": 8, "tokens": 800}, {"step": 12, "tokens": 1200}]}))
    ev = tmp_path / "ev"
    _model(0).save_pretrained(ev)
    dev = torch.device("cpu")
    out = tmp_path / "le.json"
    r = le.run(d, [root], out, ev, None, tmp_path / "k.npz", SEQ, TRUNC, STRIDE, dev, "recurrent")
    recs = r["variants"]["swa128"]
    assert [(x["step"], x["tokens"]) for x in recs] == [(4, 400), (8, 800), (12, 1200)]
    wins = le.windows(d, SEQ)
    keys, _ = le.load_keys(tmp_path / "k.npz")
    final = le.score(_model(3), wins, keys, dev)
    assert recs[-1]["longppl"] == pytest.approx(final["longppl"], rel=1e-6) and r["n_key"] == final["n_key"] > 0
    assert len({round(x["ppl"], 6) for x in recs}) == 3  # three different models
    r2 = le.run(d, [root], tmp_path / "le2.json", None, tmp_path / "k.npz", None, SEQ, TRUNC, STRIDE, dev, "recurrent")
    assert r2["keys_sha256"] == r["keys_sha256"] and r2["variants"] == r["variants"]
    with pytest.raises(ValueError, match="evaluator: name a model directory"):
        le.run(d, [root], tmp_path / "x.json", None, None, None, SEQ, TRUNC, STRIDE, dev, "recurrent")


# -- finding 2: receptive-field restriction (score_restricted / run_restricted) ---------------------------

K = 16  # < SEQ; smoke-5m windows: swa128 -> 8 (<= K), swa2048 -> 128 (> SEQ)


def _variant(name: str, seed: int = 0) -> HybridForCausalLM:
    torch.manual_seed(seed)
    return HybridForCausalLM(variant_config(name, "smoke-5m")).eval()


def _plans(model, ab):
    from models.apply import apply_ablation

    with apply_ablation(model, ab) as plans:
        return [(p.window, p.receptive_field) for p in plans]


def _token_nll(model, x, ab) -> torch.Tensor:
    from backend.forward import token_nll
    from models.apply import apply_ablation

    with le.attention_backend(model, "sdpa"), apply_ablation(model, ab):
        return token_nll(model, x)


def test_restriction_is_the_sweep_probes_layer_groups() -> None:
    swa = _variant("swa128")
    assert le.restriction_groups(swa) == {"full": ["3,7"], "efficient": ["0,1,2,4,5,6"]}
    assert _plans(swa, le.restriction(swa, "full", K)) == [(8, None)] * 3 + [(K, K)] + [(8, None)] * 3 + [(K, K)]
    # the SWA layers get window min(8, K) = 8: restricting them to K >= their window is a no-op on the mask
    assert _plans(swa, le.restriction(swa, "efficient", K)) == [(8, K)] * 3 + [(None, None)] + [(8, K)] * 3 + [
        (None, None)]
    mamba = _variant("mamba2")
    assert _plans(mamba, le.restriction(mamba, "efficient", K)) == [(None, K)] * 3 + [(None, None)] + [
        (None, K)] * 3 + [(None, None)]
    full = _variant("full")
    assert le.restriction_groups(full) == {"full": ["0,1,2,3,4,5,6,7"], "efficient": []}
    assert le.restriction(full, "efficient", K) is None
    assert _plans(full, le.restriction(full, "full", K)) == [(K, K)] * 8
    with pytest.raises(ValueError, match="no efficient layers"):
        le.score_restricted(full, [np.arange(SEQ)], [np.arange(3)], torch.device("cpu"), "efficient", K)
    with pytest.raises(ValueError, match="not a layer group"):
        le.restriction(full, "swa", K)


@pytest.mark.parametrize("variant", ["full", "swa128", "swa2048", "mamba2"])
def test_restricting_to_k_at_least_the_window_changes_nothing(data, variant) -> None:
    d, _, _ = data
    wins = le.windows(d, SEQ)
    keys = [np.arange(3 * i % 7, SEQ - 1, 5) for i in range(len(wins))]
    model, dev = _variant(variant, 1), torch.device("cpu")
    base = le.score_restricted(model, wins, keys, dev, None, None)
    assert base["ablation"] == "" and base["n_key"] == sum(len(k) for k in keys)
    assert base == {**le.score(model, wins, keys, dev), "ablation": ""}
    for group in le.GROUPS:
        if le.restriction(model, group, SEQ) is None:
            continue
        for k in (SEQ, 1000):
            r = le.score_restricted(model, wins, keys, dev, group, k)
            assert r["ablation"] == le.restriction(model, group, k).to_text() != ""
            if variant == "mamba2" and group == "efficient":
                # the recurrent layers run the windowed SSD kernel (a different, equivalent sum): equal up to
                # float32 rounding, not bitwise
                assert r["ppl"] == pytest.approx(base["ppl"], rel=1e-6)
                assert r["longppl"] == pytest.approx(base["longppl"], rel=1e-6)
            else:  # attention: a window >= the sequence is dropped, the very same kernel call
                assert (r["ppl"], r["longppl"]) == (base["ppl"], base["longppl"])
    if variant == "swa128":  # its SWA layers (window 8) restricted to K = 16 >= 8: exactly unchanged as well
        r = le.score_restricted(model, wins, keys, dev, "efficient", K)
        assert (r["ppl"], r["longppl"]) == (base["ppl"], base["longppl"])


@pytest.mark.parametrize(("variant", "group"), [("full", "full"), ("swa128", "full"), ("swa2048", "full"),
                                                ("swa2048", "efficient"), ("mamba2", "full"),
                                                ("mamba2", "efficient")])
def test_restriction_changes_only_targets_beyond_k(data, variant, group) -> None:
    """Target j (token j+1 given tokens 0..j) sees no more than k tokens back in any restricted layer only
    when j >= k: the NLL of targets j < k is unchanged, of targets j >= k changed."""
    d, _, _ = data
    wins = le.windows(d, SEQ)
    x = torch.tensor(np.stack(wins))
    model, dev = _variant(variant), torch.device("cpu")
    ab = le.restriction(model, group, K)
    base, restricted = _token_nll(model, x, None), _token_nll(model, x, ab)
    diff = (restricted - base).abs()
    if variant == "mamba2" and group == "efficient":
        # a recurrent layer restricted to k runs its recurrence over the last k - (K_conv - 1) short-conv
        # outputs (models.plan.recurrence_window): exact below that, the conv's first outputs dropped from it
        w = K - (model.config.conv_kernel - 1)
        assert diff[:, :w].max() <= 1e-5
        assert diff[:, K:].max() > 1e-4 and diff[:, K:].mean() > 10 * diff[:, :w].mean()
    else:
        assert torch.equal(restricted[:, :K], base[:, :K])  # the banded kernel: bitwise equal rows
        assert (diff[:, K:] > 0).all()
    # through score_restricted: key tokens < k keep their LongPPL, the PPL over all targets moves
    keys_early = [np.arange(0, K - 3) for _ in wins]
    keys_late = [np.arange(K, SEQ - 1) for _ in wins]
    b_early, r_early = (le.score_restricted(model, wins, keys_early, dev, g, K) for g in (None, group))
    b_late, r_late = (le.score_restricted(model, wins, keys_late, dev, g, K) for g in (None, group))
    assert r_early["longppl"] == pytest.approx(b_early["longppl"], rel=1e-6)
    assert r_late["longppl"] != pytest.approx(b_late["longppl"], rel=1e-6)
    assert r_early["ppl"] == r_late["ppl"] != pytest.approx(b_early["ppl"], rel=1e-6)
    assert r_late["longppl"] == pytest.approx(math.exp(restricted[:, K:].double().mean().item()), rel=1e-6)


def test_cli_writes_unrestricted_and_restricted_records(data, tmp_path) -> None:
    from zoo.__main__ import main

    d, _, _ = data
    wins = le.windows(d, SEQ)
    rng = np.random.default_rng(0)
    keys = [np.sort(rng.choice(SEQ - 1, size=int(rng.integers(2, 9)), replace=False)) for _ in wins]
    le.save_keys(tmp_path / "k.npz", keys, {"evaluator": "x", "seq_len": SEQ, "windows": len(wins)})
    dirs = {}
    for i, v in enumerate(("full", "swa128", "swa2048", "mamba2")):
        dirs[v] = tmp_path / "zoo" / v
        _variant(v, i).save_pretrained(dirs[v])
    out = tmp_path / "restrict.json"

    def argv(keys_file="k.npz", ks=(K, SEQ)):
        return ["longeval", "--data", str(d), "--models", *map(str, dirs.values()), "--keys", str(tmp_path / keys_file),
                *(["--restrict-ks", *map(str, ks)] if ks else []), "--max-windows", "4", "--seq-len", str(SEQ),
                "--out", str(out), "--device", "cpu", "--batch", "3"]

    assert main(argv()) == 0
    r = json.loads(out.read_text())
    assert (r["windows"], r["windows_total"], r["ks"], r["restrict"]) == (4, len(wins), [K, SEQ], ["full", "efficient"])
    assert r["n_key"] == sum(len(k) for k in keys[:4]) and r["keys_sha256_used"] == le.keys_sha256(keys[:4])
    assert list(r["models"]) == ["full", "swa128", "swa2048", "mamba2"]
    dev = torch.device("cpu")
    for v, path in dirs.items():
        rec = r["models"][v]
        assert rec["path"] == str(path) and len(rec["layer_types"]) == 8
        assert set(rec["restricted"]) == ({"full"} if v == "full" else {"full", "efficient"})
        m = le.load_model(path, dev, "chunked")
        base = le.score(m, wins[:4], keys[:4], dev)
        assert rec["unrestricted"]["longppl"] == pytest.approx(base["longppl"], rel=1e-9)
        assert rec["unrestricted"]["ppl"] == pytest.approx(base["ppl"], rel=1e-9)
        for g, by_k in rec["restricted"].items():
            assert set(by_k) == {str(K), str(SEQ)}
            want = le.score_restricted(m, wins[:4], keys[:4], dev, g, K)
            got = by_k[str(K)]
            assert got["ablation"] == want["ablation"] and got["n_key"] == r["n_key"]
            assert got["longppl"] == pytest.approx(want["longppl"], rel=1e-9)
            assert got["longppl_ratio"] == pytest.approx(got["longppl"] / rec["unrestricted"]["longppl"], rel=1e-12)
            assert got["ppl_ratio"] == pytest.approx(got["ppl"] / rec["unrestricted"]["ppl"], rel=1e-12)
            assert by_k[str(SEQ)]["ppl_ratio"] == pytest.approx(1.0, rel=1e-6)
            if (v, g) == ("swa128", "efficient"):  # window min(8, k) = 8: the unrestricted plans, not rerun
                assert got["noop"] and by_k[str(SEQ)]["noop"]
                assert (got["ppl_ratio"], got["longppl_ratio"]) == (1.0, 1.0)
                assert (got["ppl"], got["longppl"]) == (want["ppl"], want["longppl"])  # what a rerun gives
            else:
                assert not got["noop"] and got["ppl_ratio"] != 1.0  # rerun: a random mamba2 moves by ~1e-6
    # the keys must cover every window of the split; --models needs --restrict-ks
    le.save_keys(tmp_path / "short.npz", keys[:4], {"seq_len": SEQ})
    out.unlink()
    assert main(argv("short.npz")) == 2 and not out.exists()
    assert main(argv(ks=())) == 2 and not out.exists()
