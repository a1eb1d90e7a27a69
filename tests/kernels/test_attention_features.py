"""Chunked attention, logit softcapping and learned sink logits: masks, reference known values, every fast
path (SDPA/banded, tiled, eager flex on CPU; compiled flex on CUDA) and the row kernel vs the reference."""

import math

import pytest
import torch

from kernels.attention import (
    attention,
    attention_banded,
    attention_flex,
    attention_probs_reference,
    attention_reference,
    attention_sdpa,
    attention_tiled,
    band_mask,
)
from kernels.attention_rows import attention_probs_rows
from kernels.masks import block_classes, dense_mask, effective_mask, flex_block_mask, flex_mask_mod
from tests.kernels.test_attention import FLEX_CPU, _qkv
from tests.kernels.test_masks import _classes_from_dense, _decode

# chunk 3 on 7 tokens: causal inside chunks [0,1,2], [3,4,5], [6]
C3 = [
    [1, 0, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0, 0],
    [0, 0, 0, 1, 0, 0, 0],
    [0, 0, 0, 1, 1, 0, 0],
    [0, 0, 0, 1, 1, 1, 0],
    [0, 0, 0, 0, 0, 0, 1],
]
# chunk 3, window 2, sinks 1: the same chunks, at most one previous key, key 0 always visible
C3_W2_S1 = [
    [1, 0, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0, 0],
    [1, 0, 0, 1, 0, 0, 0],
    [1, 0, 0, 1, 1, 0, 0],
    [1, 0, 0, 0, 1, 1, 0],
    [1, 0, 0, 0, 0, 0, 1],
]
# (window, sinks, chunk): the features alone and combined
MASKS = [(None, 0, 8), (None, 3, 8), (5, 0, 8), (5, 2, 8), (9, 1, 6), (None, 0, 1), (3, 0, None), (None, 0, None)]


def _t(rows):
    return torch.tensor(rows, dtype=torch.bool)


def test_known_chunk_masks_and_canonical_form():
    assert torch.equal(dense_mask(7, 7, None, chunk=3), _t(C3))
    assert torch.equal(dense_mask(7, 7, 2, sinks=1, chunk=3), _t(C3_W2_S1))
    assert torch.equal(dense_mask(3, 7, None, chunk=3, q_offset=4), _t(C3)[4:])  # absolute positions
    assert effective_mask(None, 4, 7, 5, 7) == (None, 0, None)  # a chunk covering every key is no chunk
    assert effective_mask(None, 4, 6, 7, 7) == (None, 4, 6)  # sinks stay with a chunk alone
    with pytest.raises(ValueError, match="^chunk must be None or an int >= 1"):
        dense_mask(4, 4, None, chunk=0)


@pytest.mark.parametrize("window, sinks, q_offset, chunk", [(None, 0, 0, 5), (3, 1, 0, 4), (None, 2, 7, 3)])
def test_flex_mask_mod_with_chunk_matches_dense(window, sinks, q_offset, chunk):
    mod = flex_mask_mod(window, sinks, q_offset, chunk=chunk)
    q_idx = torch.arange(12, dtype=torch.int32)[:, None]
    kv_idx = torch.arange(12 + q_offset, dtype=torch.int32)[None, :]
    want = dense_mask(12, 12 + q_offset, window, sinks, q_offset=q_offset, chunk=chunk)
    assert torch.equal(mod(0, 0, q_idx, kv_idx), want)


def test_block_classes_with_chunks_full_exact_partial_covering():
    g = torch.Generator().manual_seed(1)
    for _ in range(60):
        lk = int(torch.randint(1, 90, (1,), generator=g))
        lq = int(torch.randint(1, lk + 1, (1,), generator=g))
        window = [None, int(torch.randint(1, 40, (1,), generator=g))][int(torch.randint(0, 2, (1,), generator=g))]
        sinks = int(torch.randint(0, 6, (1,), generator=g))
        chunk = int(torch.randint(1, 30, (1,), generator=g))
        bs = int(torch.randint(1, 17, (1,), generator=g))
        case = (lq, lk, window, sinks, chunk, bs)
        partial, full = block_classes(lq, lk, window, sinks, q_offset=lk - lq, block_size=bs, chunk=chunk)
        want_partial, want_full = _classes_from_dense(
            dense_mask(lq, lk, window, sinks, q_offset=lk - lq, chunk=chunk), bs)
        assert torch.equal(full, want_full), case
        assert bool((partial | ~want_partial).all()), case  # every block with some allowed pair is computed
        assert not bool((partial & full).any()), case
    # chunks aligned with blocks: exact (no block of another chunk is computed)
    partial, full = block_classes(64, 64, None, 0, block_size=8, chunk=16)
    want = _classes_from_dense(dense_mask(64, 64, None, chunk=16), 8)
    assert torch.equal(partial, want[0]) and torch.equal(full, want[1])


def test_flex_block_mask_with_chunk_covers_create_block_mask():
    from torch.nn.attention.flex_attention import create_block_mask

    lq = lk = 520
    want = create_block_mask(flex_mask_mod(None, 2, 0, chunk=200), None, None, lq, lk, device="cpu")
    got = flex_block_mask(lq, lk, None, 2, chunk=200)
    nkb = -(-lk // 128)
    assert torch.equal(_decode(got.full_kv_num_blocks, got.full_kv_indices, nkb),
                       _decode(want.full_kv_num_blocks, want.full_kv_indices, nkb))
    got_partial = _decode(got.kv_num_blocks, got.kv_indices, nkb)
    assert bool((got_partial | ~_decode(want.kv_num_blocks, want.kv_indices, nkb)).all())


@pytest.mark.parametrize("lq, lk, window, sinks, chunk, block",
                         [(40, 40, None, 0, 8, 8), (40, 40, 5, 2, 8, 8), (30, 50, 9, 1, 6, 7),
                          (40, 40, None, 3, 7, 16)])
def test_band_mask_with_chunk_is_the_dense_mask_rearranged(lq, lk, window, sinks, chunk, block):
    bm = band_mask(lq, lk, window, sinks, block, chunk=chunk)
    dense = dense_mask(lq, lk, window, sinks, q_offset=lk - lq, chunk=chunk)
    width = min(x for x in (window, chunk) if x is not None)
    s = min(sinks, lk)
    rebuilt = torch.zeros(lq, lk, dtype=torch.bool)
    for i in range(lq):
        j, r = divmod(i, block)
        p = lk - lq + i
        p0 = lk - lq + j * block
        for t in range(bm.shape[-1] - s):
            pos = p0 - width + 1 + t
            if bm[j, r, s + t]:
                assert 0 <= pos <= p and not rebuilt[i, pos]
                rebuilt[i, pos] = True
        for key in range(s):
            if bm[j, r, key]:
                assert not rebuilt[i, key]  # never counted twice
                rebuilt[i, key] = True
    assert torch.equal(rebuilt, dense)


def test_reference_known_values_sink_logits_and_softcap():
    q, k, v = _qkv(2, 1, lq=5, lk=5, d=4, b=1, dtype=torch.float64)
    sink = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64)
    out = attention_reference(q, k, v, scale=0.0, sink_logits=sink)  # every score 0: weights 1 / (n + e^a)
    n = torch.arange(1, 6, dtype=torch.float64)[:, None]
    csum = v[0, 0].cumsum(0)
    torch.testing.assert_close(out[0, 0], csum / (n + 1.0))
    torch.testing.assert_close(out[0, 1], csum / (n + 3.0))
    probs = attention_probs_reference(q, k, scale=0.0, sink_logits=sink)
    torch.testing.assert_close(probs.sum(-1)[0, 1], n[:, 0] / (n[:, 0] + 3.0))
    # softcap: two keys with scores 0 and 4 under cap 2 -> logits 0 and 2 tanh(2)
    q1 = torch.ones(1, 1, 2, 1, dtype=torch.float64)
    k1 = torch.tensor([0.0, 4.0], dtype=torch.float64).reshape(1, 1, 2, 1)
    p = attention_probs_reference(q1, k1, scale=1.0, softcap=2.0)[0, 0, 1]
    e = math.exp(2 * math.tanh(2.0))
    torch.testing.assert_close(p, torch.tensor([1 / (1 + e), e / (1 + e)], dtype=torch.float64))


def _features(hq, seed, softcap, with_sinks):
    g = torch.Generator().manual_seed(seed)
    return dict(softcap=softcap, sink_logits=torch.randn(hq, generator=g) * 2 if with_sinks else None)


FEATURES = [(None, False), (3.0, False), (None, True), (2.0, True)]  # (softcap, sink logits)


@pytest.mark.parametrize("window, sinks, chunk", MASKS)
@pytest.mark.parametrize("softcap, with_sinks", FEATURES)
@pytest.mark.parametrize("hq, hkv, lq, lk", [(4, 2, 45, 45), (3, 1, 20, 50)])
def test_fast_paths_match_reference(window, sinks, chunk, softcap, with_sinks, hq, hkv, lq, lk):
    q, k, v = _qkv(hq, hkv, lq=lq, lk=lk)
    feats = _features(hq, lq, softcap, with_sinks)
    sink = feats["sink_logits"]
    want = attention_reference(q.double(), k.double(), v.double(), window, sinks, 0.3, chunk,
                               feats["softcap"], None if sink is None else sink.double())
    paths = {"sdpa": attention_sdpa, "auto": attention, "tiled": lambda *a, **kw: attention_tiled(*a, **kw, rows=7)}
    if FLEX_CPU:
        paths["flex"] = attention_flex
    if softcap is None and not with_sinks:
        paths["banded"] = lambda q, k, v, window, sinks, scale, chunk, **kw: attention_banded(
            q, k, v, window, sinks, scale, block=6, chunk=chunk)
    for name, fn in paths.items():
        out = fn(q, k, v, window=window, sinks=sinks, scale=0.3, chunk=chunk, **feats)
        assert out.dtype == q.dtype and out.shape == q.shape
        torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=3e-6, msg=name)


def test_bf16_tiled_and_sdpa_within_bf16_tolerance():
    q, k, v = _qkv(4, 2, lq=64, lk=64)
    feats = _features(4, 3, 4.0, True)
    want = attention_reference(q, k, v, 7, 2, None, 16, **feats)
    out = attention_sdpa(*(t.bfloat16() for t in (q, k, v)), 7, 2, None, 16, **feats)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), want, rtol=2e-2, atol=2e-2)


def test_tiled_gradients_match_reference():
    q, k, v = (t.double().requires_grad_() for t in _qkv(4, 2, lq=30, lk=30, b=1))
    sink = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    feats = {"softcap": 2.5, "sink_logits": sink}
    grads = []
    for fn in (attention_reference, lambda *a, **kw: attention_tiled(*a, **kw, rows=4)):
        out = fn(q, k, v, window=6, sinks=1, chunk=10, **feats)
        grads.append(torch.autograd.grad((out * torch.linspace(-1, 1, 16, dtype=torch.float64)[:8]).sum(), (q, k, v)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("window, sinks, chunk", MASKS)
@pytest.mark.parametrize("softcap, with_sinks", FEATURES)
def test_rows_match_reference_rows(window, sinks, chunk, softcap, with_sinks):
    q, k, _ = _qkv(4, 2, lq=50, lk=50)
    feats = _features(4, 5, softcap, with_sinks)
    want = attention_probs_reference(q, k, window, sinks, None, chunk, **feats)
    pos = [0, 7, 8, 23, 49]
    rows = attention_probs_rows(q[:, :, pos], k, pos, window, sinks, key_chunk=9, chunk=chunk, **feats)
    torch.testing.assert_close(rows, want[:, :, pos], rtol=1e-5, atol=1e-6)
    if with_sinks:  # the sink takes a share: rows sum to < 1
        assert float(rows.sum(-1).max()) < 1 - 1e-4


def test_bad_feature_arguments_raise_one_line():
    q, k, v = _qkv(4, 2, lq=8, lk=8)
    for backend in ("reference", "sdpa", "flex"):
        with pytest.raises(ValueError, match="^softcap must be None or a number > 0"):
            attention(q, k, v, softcap=0.0, backend=backend)
        with pytest.raises(ValueError, match=r"^sink_logits must be a 1-d tensor of 4 values"):
            attention(q, k, v, sink_logits=torch.zeros(2), backend=backend)
        with pytest.raises(ValueError, match="^chunk must be None or an int >= 1"):
            attention(q, k, v, chunk=0, backend=backend)
    with pytest.raises(ValueError, match="^softcap must be"):
        attention_probs_rows(q[:, :, :1], k, [0], softcap=-1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("window, sinks, chunk", [(None, 0, 128), (64, 4, 256), (None, 0, None)])
@pytest.mark.parametrize("softcap, with_sinks", FEATURES)
def test_flex_cuda_features_match_reference(window, sinks, chunk, softcap, with_sinks):
    q, k, v = (t.cuda() for t in _qkv(4, 2, lq=300, lk=300, d=64))
    feats = {key: (t.cuda() if isinstance(t, torch.Tensor) else t)
             for key, t in _features(4, 9, softcap, with_sinks).items()}
    want = attention_reference(q, k, v, window, sinks, None, chunk, **feats)
    torch.testing.assert_close(attention_flex(q, k, v, window, sinks, None, chunk, **feats), want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(attention(q, k, v, window, sinks, None, chunk=chunk, **feats), want,
                               rtol=1e-4, atol=1e-4)
