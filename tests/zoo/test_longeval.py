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
