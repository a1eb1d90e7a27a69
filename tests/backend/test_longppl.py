"""LongPPL: the maths on hand-made inputs, the batched short-context path against slice-by-slice
evaluation, and an end-to-end run whose stored numbers are recomputed from its own token table."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backend.probes.longppl_math import (
    corpus_longppl,
    corpus_longppl_reference,
    corpus_ppl,
    key_mask,
    longppl_value,
    short_logprobs,
    short_logprobs_naive,
    spans_mask,
    windows,
)
from backend.runner import Runner
from backend.spec import RunSpec, SpecError
from models.tiny import tiny_model

WORDS = ("the of and a to in is you that it he was for on are as with his they at be this have from "
         "or one had by word but not what all were we when your can said there use an each which").split()


def write_docs(tmp_path, n_docs: int = 2, n_words: int = 80) -> str:
    """A folder of ``n_docs`` seeded random-word .txt files; returns the data ref."""
    d = tmp_path / "docs"
    d.mkdir(exist_ok=True)
    for i in range(n_docs):
        rng = random.Random(i)
        (d / f"doc{i}.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(n_words)))
    return f"file:{d}"


# ---------------------------------------------------------------------------------- windows()
@pytest.mark.parametrize("n, trunc, stride, expected", [
    # every target t >= trunc is scored exactly once, with trunc .. trunc+stride-1 tokens of context
    (20, 8, 4, [(0, 12, 8, 12), (4, 16, 12, 16), (8, 20, 16, 20)]),
    (15, 8, 3, [(0, 11, 8, 11), (3, 14, 11, 14), (6, 15, 14, 15)]),  # last window is partial
    (10, 8, 7, [(0, 10, 8, 10)]),
    (9, 8, 1, [(0, 9, 8, 9)]),
    (8, 8, 4, []),  # nothing beyond trunc_len: no short-context target at all
    (3, 8, 4, []),
])
def test_windows_layout_by_hand(n, trunc, stride, expected):
    assert windows(n, trunc, stride) == expected


@pytest.mark.parametrize("n, trunc, stride", [(100, 16, 5), (64, 16, 16 - 1), (57, 9, 2), (200, 32, 32 // 3)])
def test_windows_cover_every_long_target_once_with_short_context(n, trunc, stride):
    covered = []
    for s, e, t0, t1 in windows(n, trunc, stride):
        assert e - s <= trunc + stride and s < t0 <= t1 <= e
        for t in range(t0, t1):
            assert trunc <= t - s <= trunc + stride - 1  # context of target t: tokens s..t-1
        covered += range(t0, t1)
    assert covered == list(range(trunc, n))


@pytest.mark.parametrize("stride", [0, 8, 9])
def test_windows_reject_bad_stride(stride):
    with pytest.raises(ValueError, match="params.stride"):
        windows(20, 8, stride)


def test_stride_not_below_trunc_len_is_refused_at_spec_time():
    with pytest.raises(SpecError, match="stride"):
        RunSpec.build(model="tiny/SF", probe="longppl", params={"trunc_len": 64, "stride": 64})


# ------------------------------------------------------------------------- key / span / value maths
def test_key_mask_by_hand():
    long = np.array([-1.0, -0.5, -3.0, -1.0, -1.9, -2.0, -0.25])
    short = np.array([np.nan, -3.0, -6.0, -2.9, -4.0, -5.0, -2.25])
    # LSD:            nan    2.5   3.0   1.9   2.1   3.0   2.0
    got = key_mask(long, short, alpha=2.0, beta=-2.0)
    assert got.tolist() == [False, True, False, False, True, False, False]  # strict > on both
    got = key_mask(long, short, alpha=1.8, beta=-2.5)
    assert got.tolist() == [False, True, False, True, True, True, True]


def test_spans_mask_by_hand():
    offsets = [(0, 3), (3, 5), (5, 5), (5, 9), (9, 12), (12, 13)]
    spans = [(12, 13), (0, 5), (5, 9)]  # unsorted; (0,5) and (5,9) are adjacent -> merged (0,9)
    # (0,3), (3,5) and (5,9) lie inside (0,9); (5,5) is empty; (9,12) is in no span; (12,13) is
    assert spans_mask(offsets, spans).tolist() == [True, True, False, True, False, True]
    # containment, not overlap: (3,7) straddles two spans that are not adjacent
    assert spans_mask([(3, 7), (2, 4)], [(2, 5), (6, 8)]).tolist() == [False, True]
    assert spans_mask([(3, 7)], [(2, 5), (5, 8)]).tolist() == [True]  # adjacent spans merge
    assert not spans_mask(offsets, []).any()


def test_longppl_value_and_corpus_by_hand():
    nll = np.array([1.0, 2.0, 3.0, 4.0])
    assert longppl_value(nll, np.array([False, True, False, True])) == pytest.approx(math.exp(3.0))
    assert longppl_value(nll, np.zeros(4, bool)) is None
    # docs weighted by their number of key tokens; a doc without key tokens is left out
    expected = math.exp((2 * 1 + 3 * 2) / 5)
    assert corpus_longppl([2, 0, 3], [math.e, None, math.e**2]) == pytest.approx(expected)
    assert corpus_longppl([0, 0], [None, None]) is None
    # the reference's corpus value: the key-token-weighted arithmetic mean of the per-document LongPPL
    got = corpus_longppl_reference([2, 0, 3], [math.e, None, math.e**2])
    assert got == pytest.approx((2 * math.e + 3 * math.e**2) / 5)
    assert corpus_longppl_reference([0], [None]) is None
    assert corpus_ppl([1, 3], [2.0, 4.0], "reference") == pytest.approx(3.5)
    assert corpus_ppl([1, 3], [2.0, 4.0], "pooled") == pytest.approx(math.exp((math.log(2) + 3 * math.log(4)) / 4))
    # the two definitions can reorder variants: A has the lower pooled value, B the lower reference value
    a, b = ([10, 10], [2.0, 50.0]), ([10, 10], [12.0, 13.0])
    assert corpus_longppl(*a) < corpus_longppl(*b) and corpus_longppl_reference(*a) > corpus_longppl_reference(*b)


# ------------------------------------------------------------------- short context: fast vs naive
@pytest.mark.parametrize("pattern", ["SMGF", "FF"])
def test_short_logprobs_batched_equals_slice_by_slice(pattern):
    model = tiny_model(pattern, seed=1)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (1, 151), generator=g)
    trunc, stride = 32, 10  # 12 windows, the last one partial; batch=5 -> groups 5, 5, 1 and the partial
    fast = short_logprobs(model, ids, trunc, stride, batch=5)
    naive = short_logprobs_naive(model, ids, trunc, stride)
    assert np.isnan(fast[: trunc - 1]).all() and np.isnan(naive[: trunc - 1]).all()
    assert not np.isnan(fast[trunc - 1:]).any()
    np.testing.assert_allclose(fast[trunc - 1:], naive[trunc - 1:], rtol=0, atol=2e-5)
    # hand reference for a few targets: one forward over exactly the context tokens s..t-1
    for s, _, t0, t1 in windows(151, trunc, stride)[::4]:
        for t in (t0, t1 - 1):
            with torch.inference_mode():
                lp = F.log_softmax(model(input_ids=ids[:, s:t]).logits[0, -1].float(), -1)[ids[0, t]]
            assert naive[t - 1] == pytest.approx(float(lp), abs=2e-5)
    with torch.inference_mode():
        long = F.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    long = long.gather(-1, ids[0, 1:, None])[:, 0].numpy().astype(np.float64)
    for alpha, beta in ((0.0, -100.0), (0.003, -5.6)):  # random weights: |LSD| < 0.3
        k_fast, k_naive = key_mask(long, fast, alpha, beta), key_mask(long, naive, alpha, beta)
        assert k_fast.any() and (k_fast == k_naive).all()


# ------------------------------------------------------------------------------------ end to end
def test_longppl_run_matches_its_token_table_and_reuses_key_tokens(tmp_path):
    data = write_docs(tmp_path, n_docs=2, n_words=70)
    params = {"n_docs": 2, "max_tokens": 300, "trunc_len": 64, "stride": 16, "alpha": 0.0, "beta": -100.0}
    runner = Runner(tmp_path / "store", read_only_roots=[])
    plain = runner.run(RunSpec.build(model="tiny/SMGF", probe="longppl", data=data, params=params))
    ablated = runner.run(RunSpec.build(model="tiny/SMGF", probe="longppl", data=data, params=params,
                                       ablation="rf[full]=16;rf[linear]=8"))
    key_run = plain.manifest["meta"]["key_run"]
    assert ablated.manifest["meta"]["key_run"] == key_run  # one key-token run serves every ablation
    assert runner.computed == [key_run, plain.run_id, ablated.run_id]  # computed once, first

    keys = runner.store.read_table(key_run, "key_tokens").to_pydict()
    for res in (plain, ablated):
        tl = res.tables["token_loss"]
        lp = res.tables["longppl"]
        doc, nll, is_key = (np.array(tl[c]) for c in ("doc", "nll", "is_key"))
        pos = np.array(tl["pos"])
        assert 0 < is_key.sum() < len(is_key)
        for d in (0, 1):
            sel = doc == d
            # char codec: key spans map back to exactly the key token positions
            assert sorted(pos[sel & is_key]) == sorted(p for k, p in zip(keys["doc"], keys["pos"]) if k == d)
            assert pos[sel & is_key].min() >= params["trunc_len"]
            row = lp["doc"].index(d)
            assert lp["n_key"][row] == int((sel & is_key).sum())
            assert lp["longppl"][row] == pytest.approx(math.exp(nll[sel & is_key].mean()), rel=1e-6)
            assert lp["ppl"][row] == pytest.approx(math.exp(nll[sel].mean()), rel=1e-6)
        assert -1 not in lp["doc"]  # the corpus values are their own table, named by definition
        c = res.tables["longppl_corpus"]
        assert c["definition"] == ["reference", "pooled"] and c["n_key"] == [int(is_key.sum())] * 2
        pooled, ref = c["longppl"][1], c["longppl"][0]
        assert pooled == pytest.approx(math.exp(nll[is_key].mean()), rel=1e-6)  # exp of the mean over all keys
        assert ref == pytest.approx(np.dot(lp["n_key"], lp["longppl"]) / sum(lp["n_key"]), rel=1e-12)
        assert c["ppl"][1] == pytest.approx(math.exp(nll.mean()), rel=1e-6)
        assert c["ppl"][0] == pytest.approx(np.dot(lp["n_tokens"], lp["ppl"]) / sum(lp["n_tokens"]), rel=1e-12)
        meta = res.manifest["meta"]
        assert (meta["longppl"], meta["longppl_pooled"], meta["ppl"]) == (ref, pooled, c["ppl"][0])
    assert plain.tables["longppl"]["longppl"] != ablated.tables["longppl"]["longppl"]


def test_key_tokens_recomputed_by_hand(tmp_path):
    """The stored key set equals key_mask(log p_long, naive short log p) computed here."""
    data = write_docs(tmp_path, n_docs=1, n_words=60)
    params = {"n_docs": 1, "max_tokens": 200, "trunc_len": 48, "stride": 12, "alpha": 0.005, "beta": -5.6}
    runner = Runner(tmp_path / "store", read_only_roots=[])
    res = runner.run(RunSpec.build(model="tiny/SFGF", probe="key_tokens", data=data, params=params))
    text = (tmp_path / "docs" / "doc0.txt").read_text()[:200]
    ids = torch.tensor([[ord(c) for c in text]])
    model = tiny_model("SFGF", seed=0)
    with torch.inference_mode():
        long = F.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    long = long.gather(-1, ids[0, 1:, None])[:, 0].numpy().astype(np.float64)
    short = short_logprobs_naive(model, ids, 48, 12)
    expected = (np.nonzero(key_mask(long, short, 0.005, -5.6))[0] + 1).tolist()
    table = res.tables["key_tokens"]
    assert 0 < len(expected) < 200 - 48 and table["pos"] == expected
    assert table["char_start"] == expected and table["char_end"] == [p + 1 for p in expected]
    assert res.manifest["meta"]["doc_chars"] == [200] and res.manifest["meta"]["n_key"] == [len(expected)]


def test_sweep_collects_longppl_and_ppl_of_its_cached_points(tmp_path):
    data = write_docs(tmp_path, n_docs=2, n_words=70)
    lp = {"n_docs": 2, "max_tokens": 300, "trunc_len": 64, "stride": 16, "alpha": 0.0, "beta": -100.0}
    runner = Runner(tmp_path / "store", read_only_roots=[])
    sweep = runner.run(RunSpec.build(model="tiny/SMGF", probe="sweep", data=data, params={**lp, "ks": [8, 32]}))
    rows = sweep.tables["sweep"]
    got = {(n, m, x): y for n, m, x, y in zip(rows["name"], rows["metric"], rows["x"], rows["y"], strict=True)}
    # tiny/SMGF: layer 3 is full attention, layers 0-2 efficient (SWA, Mamba-2, GDN)
    for name, ablation in [("baseline", ""), ("restrict_full", "rf[3]=8"), ("restrict_efficient", "rf[0,1,2]=32")]:
        point = runner.run(RunSpec.build(model="tiny/SMGF", probe="longppl", data=data, params=lp, ablation=ablation))
        assert point.cached  # every point is the cached longppl run of that ablation
        x = 300.0 if name == "baseline" else float(ablation.rsplit("=", 1)[1])
        assert got[(name, "longppl", x)] == point.manifest["meta"]["longppl"]
        assert got[(name, "ppl", x)] == point.manifest["meta"]["ppl"]
        assert got[(name, "longppl_pooled", x)] == point.manifest["meta"]["longppl_pooled"]
        assert got[(name, "ppl_pooled", x)] == point.manifest["meta"]["ppl_pooled"]
    # (baseline + 2 groups x 2 ks) x (LongPPL, PPL) x (reference, pooled)
    assert len(rows["name"]) == 4 * (1 + 2 * 2)
