"""Attention: reference known values, SDPA and (eager CPU) FlexAttention parity, gradients, dispatch."""

import pytest
import torch

from kernels import attention as attn_mod
from kernels.attention import attention, attention_flex, attention_reference, attention_sdpa
from kernels.masks import dense_mask

L = 40
CASES = [  # (window, sinks)
    (None, 0), (None, 3), (1, 0), (1, 2), (7, 0), (7, 2), (16, 5), (L - 1, 1), (L, 0), (L + 5, 2),
]
HEADS = [(2, 2), (4, 2), (6, 1)]  # (Hq, Hkv)


def _qkv(hq, hkv, lq=L, lk=L, d=8, b=2, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, lq, d, generator=g).to(dtype)
    k = torch.randn(b, hkv, lk, d, generator=g).to(dtype)
    v = torch.randn(b, hkv, lk, d, generator=g).to(dtype)
    return q, k, v


def test_reference_window_one_returns_own_value_with_gqa_mapping():
    q, k, v = _qkv(6, 2)
    out = attention_reference(q, k, v, window=1)
    for h in range(6):  # head h reads kv head h // 3
        torch.testing.assert_close(out[:, h], v[:, h // 3], rtol=0, atol=1e-6)


def test_reference_zero_scale_is_mean_over_visible_keys():
    q, k, v = _qkv(2, 1, lq=10, lk=10)
    out = attention_reference(q, k, v, window=3, sinks=1, scale=0.0)
    mask = dense_mask(10, 10, 3, 1).float()
    want = (mask / mask.sum(-1, keepdim=True)) @ v[:, 0]
    for h in range(2):
        torch.testing.assert_close(out[:, h], want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("hq, hkv", HEADS)
@pytest.mark.parametrize("window, sinks", CASES)
def test_sdpa_matches_reference(hq, hkv, window, sinks):
    q, k, v = _qkv(hq, hkv)
    want = attention_reference(q, k, v, window, sinks)
    got = attention_sdpa(q, k, v, window, sinks)
    assert got.shape == (2, hq, L, 8) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("window, sinks", [(None, 0), (5, 2), (30, 0)])
def test_queries_shorter_than_keys_sit_at_the_end(window, sinks):
    q, k, v = _qkv(4, 2, lq=7, lk=L)
    full_q = torch.cat([torch.randn(2, 4, L - 7, 8), q], dim=2)
    want = attention_reference(full_q, k, v, window, sinks)[:, :, -7:]
    torch.testing.assert_close(attention_reference(q, k, v, window, sinks), want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(attention_sdpa(q, k, v, window, sinks), want, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(attention_flex(q, k, v, window, sinks), want, rtol=1e-5, atol=2e-6)


def test_scale_argument_is_used():
    q, k, v = _qkv(2, 2)
    want = attention_reference(q, k, v, window=9, sinks=1, scale=0.3)
    assert not torch.allclose(want, attention_reference(q, k, v, window=9, sinks=1), atol=1e-3)
    torch.testing.assert_close(attention_sdpa(q, k, v, 9, 1, scale=0.3), want, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(attention_flex(q, k, v, 9, 1, scale=0.3), want, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("hq, hkv", [(2, 2), (4, 2)])
@pytest.mark.parametrize("window, sinks", [(None, 0), (1, 0), (6, 2), (L + 1, 1)])
def test_sdpa_gradients_match_reference(hq, hkv, window, sinks):
    q, k, v = _qkv(hq, hkv, dtype=torch.float64, seed=1)
    grad_out = torch.randn(2, hq, L, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = []
    for fn in (attention_reference, attention_sdpa):
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        fn(*leaves, window=window, sinks=sinks).backward(grad_out)
        grads.append([t.grad for t in leaves])
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def _flex_works_on_cpu() -> bool:
    try:
        q, k, v = _qkv(2, 1, lq=4, lk=4, b=1)
        attention_flex(q, k, v, window=2)
        return True
    except Exception:  # any failure means "flex unusable on this CPU build"
        return False


FLEX_CPU = _flex_works_on_cpu()


@pytest.mark.skipif(not FLEX_CPU, reason="FlexAttention does not run eagerly on CPU in this torch")
@pytest.mark.parametrize("hq, hkv", HEADS)
@pytest.mark.parametrize("window, sinks", [(None, 0), (1, 0), (7, 2), (16, 5), (L, 0)])
def test_flex_eager_cpu_matches_reference(hq, hkv, window, sinks):
    q, k, v = _qkv(hq, hkv, lq=150, lk=150)  # > one 128 block, not a multiple of it
    want = attention_reference(q, k, v, window, sinks)
    torch.testing.assert_close(attention_flex(q, k, v, window, sinks), want, rtol=1e-5, atol=2e-6)


def test_block_masks_are_cached_per_shape_window_sinks():
    attn_mod._cached_block_mask.cache_clear()
    q, k, v = _qkv(2, 2)
    a = attn_mod._cached_block_mask(L, L, 7, 2, "cpu")
    assert attn_mod._cached_block_mask(L, L, 7, 2, "cpu") is a
    assert attn_mod._cached_block_mask(L, L, 7, 1, "cpu") is not a
    if FLEX_CPU:
        before = attn_mod._cached_block_mask.cache_info().hits
        attention_flex(q, k, v, window=7, sinks=2)
        assert attn_mod._cached_block_mask.cache_info().hits == before + 1


def test_dispatch():
    q, k, v = _qkv(4, 2)
    assert torch.equal(attention(q, k, v, 7, 2), attention_sdpa(q, k, v, 7, 2))  # auto on CPU = sdpa
    assert torch.equal(attention(q, k, v, 7, 2, backend="reference"), attention_reference(q, k, v, 7, 2))
    assert torch.equal(attention(q, k, v, backend="sdpa"), attention_sdpa(q, k, v))
    with pytest.raises(ValueError, match="backend must be one of auto, reference, sdpa, flex; got 'fast'"):
        attention(q, k, v, backend="fast")


def test_output_dtype_follows_q():
    q, k, v = _qkv(4, 2, dtype=torch.bfloat16)
    for backend in ("reference", "sdpa"):
        out = attention(q, k, v, window=5, sinks=1, backend=backend)
        assert out.dtype == torch.bfloat16 and out.shape == q.shape
    ref32 = attention_reference(q.float(), k.float(), v.float(), 5, 1)
    torch.testing.assert_close(attention_reference(q, k, v, 5, 1).float(), ref32, rtol=0, atol=1e-2)


@pytest.mark.parametrize(
    "shapes, match",
    [(((2, 3, 8, 4), (2, 2, 8, 4), (2, 2, 8, 4)), "multiple of k/v heads"),
     (((2, 2, 9, 4), (2, 2, 8, 4), (2, 2, 8, 4)), "q length"),
     (((2, 2, 8, 4), (2, 2, 8, 4), (2, 2, 7, 4)), "same shape"),
     (((2, 2, 8), (2, 2, 8, 4), (2, 2, 8, 4)), "q must be a 4-d tensor")],
)
def test_bad_shapes_raise(shapes, match):
    q, k, v = (torch.ones(s) for s in shapes)
    for backend in ("reference", "sdpa", "flex", "auto"):
        with pytest.raises(ValueError, match=match):
            attention(q, k, v, window=3, backend=backend)


def test_bad_window_raises():
    q, k, v = _qkv(2, 2)
    for backend in ("reference", "sdpa", "flex"):
        with pytest.raises(ValueError, match="window must be None or an int >= 1"):
            attention(q, k, v, window=0, backend=backend)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("window, sinks", [(None, 0), (64, 0), (64, 4), (1, 0)])
def test_flex_cuda_matches_reference(window, sinks):
    q, k, v = (t.cuda() for t in _qkv(4, 2, lq=300, lk=300, d=64))
    want = attention_reference(q, k, v, window, sinks)
    torch.testing.assert_close(attention_flex(q, k, v, window, sinks), want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(attention(q, k, v, window, sinks), want, rtol=1e-4, atol=1e-4)
