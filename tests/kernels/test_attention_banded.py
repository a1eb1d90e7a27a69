"""The banded CPU path (kernels.attention.attention_banded) against the naive reference.

Values (fp32, bf16, fp64) and gradients over lengths around block edges, windows below/at/above the
block and the length, sinks inside/outside the window and beyond the length, GQA groups, queries
shorter than keys, non-contiguous inputs; the band mask against the dense mask; memory linear in L
(no op output of L x L elements); the cached mask survives inference mode for a later backward.
"""

import random

import pytest
import torch

from kernels.attention import (
    BAND_BLOCK,
    attention,
    attention_banded,
    attention_reference,
    attention_sdpa,
    band_mask,
)
from kernels.masks import dense_mask, effective_window
from tests.kernels.test_attention_rows import _LargestTensor

HEADS = [(2, 2), (4, 2), (6, 1), (3, 3)]  # (Hq, Hkv)


def _qkv(hq, hkv, lq, lk, d=8, b=2, dtype=torch.float32, seed=0, layout="bhld"):
    """Random q/k/v (never all-zero); layout "blhd" gives the transposed views the mixers pass."""
    g = torch.Generator().manual_seed(seed)
    if layout == "blhd":
        return (torch.randn(b, n, h, d, generator=g).to(dtype).transpose(1, 2)
                for n, h in ((lq, hq), (lk, hkv), (lk, hkv)))
    return (torch.randn(b, h, n, d, generator=g).to(dtype) for n, h in ((lq, hq), (lk, hkv), (lk, hkv)))


def _cases(n: int, seed: int = 0) -> list[tuple]:
    """Structured edge cases plus a seeded random sample: (lq, lk, window, sinks, block, hq, hkv)."""
    edges = []
    for length in (1, 2, BAND_BLOCK - 1, BAND_BLOCK, BAND_BLOCK + 1, 2 * BAND_BLOCK + 3):
        for window in (1, 2, BAND_BLOCK - 1, BAND_BLOCK, BAND_BLOCK + 1, length - 1, length, length + 4):
            for sinks in (0, 1, 3):
                if window >= 1:
                    edges.append((length, length, window, sinks, None, 4, 2))
    rng = random.Random(seed)
    sample = []
    while len(sample) < n:
        lk = rng.randint(1, 300)
        lq = lk if rng.random() < 0.7 else rng.randint(1, lk)
        window = rng.choice([1, 2, 3, 5, 16, 31, 32, 33, 64, 100, lk - 1, lk, lk + 7])
        sinks = rng.choice([0, 0, 1, 2, 4, 50, lk + 3])
        block = rng.choice([None, None, 1, 3, 7, 16, 64, 500])
        hq, hkv = rng.choice(HEADS)
        if window >= 1:
            sample.append((lq, lk, window, sinks, block, hq, hkv))
    return edges + sample


@pytest.mark.parametrize("lq, lk, window, sinks, block, hq, hkv", _cases(120))
def test_values_match_reference_fp32(lq, lk, window, sinks, block, hq, hkv):
    q, k, v = _qkv(hq, hkv, lq, lk, seed=lq * 1000 + lk)
    want = attention_reference(q, k, v, window, sinks)
    got = attention_banded(q, k, v, window, sinks, block=block)
    assert got.shape == want.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("lq, lk, window, sinks, block, hq, hkv", _cases(40, seed=1)[::4])
def test_values_match_reference_bf16(lq, lk, window, sinks, block, hq, hkv):
    q, k, v = _qkv(hq, hkv, lq, lk, dtype=torch.bfloat16, seed=lk)
    want = attention_reference(q, k, v, window, sinks)  # float32 maths on the bf16 inputs, rounded once
    got = attention_banded(q, k, v, window, sinks, block=block)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("layout", ["bhld", "blhd"])
@pytest.mark.parametrize("lq, lk, window, sinks, block, hq, hkv", [
    (70, 70, 5, 0, None, 4, 2), (70, 70, 5, 3, 16, 6, 1), (65, 65, 32, 2, None, 2, 2), (33, 90, 8, 4, 7, 4, 2),
    (100, 100, 99, 1, None, 4, 1), (1, 40, 6, 2, None, 2, 1), (64, 64, 1, 5, 16, 3, 3),
])
def test_gradients_match_reference(lq, lk, window, sinks, block, hq, hkv, layout):
    q, k, v = _qkv(hq, hkv, lq, lk, dtype=torch.float64, seed=3, layout=layout)
    grad_out = torch.randn(2, hq, lq, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    grads = []
    for fn in (attention_reference, lambda *a, **kw: attention_banded(*a, **kw, block=block)):
        leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
        fn(*leaves, window=window, sinks=sinks).backward(grad_out)
        grads.append([t.grad for t in leaves])
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_gradients_fp32_training_shape():
    """A zoo-like layer (6 query / 2 kv heads of 32, window 64, 300 tokens) in float32."""
    q, k, v = _qkv(6, 2, 300, 300, d=32, b=1, seed=5, layout="blhd")
    grads = []
    for fn in (attention_reference, attention_banded):
        leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
        out = fn(*leaves, window=64, sinks=2)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append([t.grad for t in leaves])
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("lq, lk, window, sinks, block", [
    (2, 2, 1, 0, 32), (40, 40, 7, 0, 32), (40, 40, 7, 3, 16), (33, 80, 16, 5, 8), (100, 100, 1, 2, 7),
    (65, 65, 32, 40, 32), (5, 9, 3, 20, 2),
])
def test_band_mask_is_the_dense_mask_rearranged(lq, lk, window, sinks, block):
    """Scatter each block's band mask back to absolute key positions: the dense mask, each key once."""
    window, sinks = effective_window(window, sinks, lq, lk)
    mask = band_mask(lq, lk, window, sinks, block)
    s = min(sinks, lk)
    n_blocks, _, n_keys = mask.shape
    dense = torch.zeros(lq, lk, dtype=torch.int64)
    for j in range(n_blocks):
        first = lk - lq + j * block
        key_pos = list(range(s)) + list(range(first - window + 1, first + block))
        assert len(key_pos) == n_keys
        for r in range(block):
            if j * block + r >= lq:
                continue  # padding rows: output dropped
            for c, kp in enumerate(key_pos):
                if mask[j, r, c]:
                    assert 0 <= kp < lk
                    dense[j * block + r, kp] += 1
    assert dense.max() <= 1, "a key is counted twice (sink inside the band)"
    assert torch.equal(dense.bool(), dense_mask(lq, lk, window, sinks, q_offset=lk - lq))


@pytest.mark.parametrize("window, sinks", [(16, 0), (64, 4)])
def test_memory_is_linear_in_length(window, sinks):
    """No op of the banded path (forward and backward) outputs anything near L x L elements."""
    length, hq, hkv, d = 2048, 4, 2, 8
    q, k, v = (t.requires_grad_(True) for t in _qkv(hq, hkv, length, length, d=d, b=1))
    with _LargestTensor() as mode:
        attention_banded(q, k, v, window, sinks).sum().backward()
    linear = hq * length * (BAND_BLOCK + window + sinks) * max(d, 1)
    assert mode.largest <= linear < length * length * hq
    with _LargestTensor() as dense:
        attention_reference(q.detach(), k.detach(), v.detach(), window, sinks)
    assert dense.largest >= length * length  # the check would see an L x L tensor


def test_mask_built_under_inference_mode_serves_a_later_backward():
    q, k, v = _qkv(4, 2, 50, 50, seed=7)
    with torch.inference_mode():
        attention_banded(q, k, v, 9, 2)  # caches the mask for these shapes
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    attention_banded(*leaves, 9, 2).sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in leaves)


def test_dispatch_uses_the_banded_path_on_cpu_and_causal_sdpa_without_window(monkeypatch):
    import kernels.attention as mod

    q, k, v = _qkv(4, 2, 70, 70)
    assert torch.equal(attention(q, k, v, 9, 2), attention_banded(q, k, v, 9, 2))
    assert torch.equal(attention_sdpa(q, k, v, 9, 2), attention_banded(q, k, v, 9, 2))
    calls = []
    monkeypatch.setattr(mod, "attention_banded", lambda *a, **kw: calls.append(a[3]) or None)
    attention(q, k, v, None, 3)  # no window: sinks mean nothing, plain causal SDPA
    attention(q, k, v, 70, 0)  # a window covering every key is plain causal too
    assert calls == []
    attention(q, k, v, 69, 0)
    assert calls == [69]


def test_bad_block_raises():
    q, k, v = _qkv(2, 2, 10, 10)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="block must be an int >= 1"):
            attention_banded(q, k, v, 3, block=bad)
