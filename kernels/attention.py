"""Causal attention with optional sliding window and sinks: a naive reference and two fast paths.

Layout BHLD: q [B, Hq, Lq, D], k/v [B, Hkv, Lk, D] with Hq a multiple of Hkv (GQA: query head h
uses kv head h // (Hq // Hkv)) and Lq <= Lk. Query i sits at absolute position Lk - Lq + i
(queries are the last Lq positions; Lq == Lk is ordinary self-attention). Mask rule: see
kernels/masks.py. Every function returns [B, Hq, Lq, D] in q's dtype.

- ``attention_reference``: explicit float32 softmax (float64 if the inputs are float64).
- ``attention_sdpa``: torch SDPA (is_causal fast path, else a dense boolean mask). CPU path.
- ``attention_flex``: FlexAttention with cached block masks; compiled once (lazily) on CUDA,
  eager (slow, unfused; for tests) elsewhere.
- ``attention``: dispatch.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from kernels.masks import dense_mask, effective_window, flex_block_mask

BACKENDS = ("auto", "reference", "sdpa", "flex")


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int, int, int]:
    """Validate shapes; return (Hq, Hkv, Lq, Lk)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be a 4-d tensor [batch, heads, seq, dim]")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got k {tuple(k.shape)} v {tuple(v.shape)}")
    b, hq, lq, d = q.shape
    _, hkv, lk, dk = k.shape
    if k.shape[0] != b or dk != d:
        raise ValueError(f"k/v batch and dim must match q: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if hkv < 1 or hq % hkv != 0:
        raise ValueError(f"q heads ({hq}) must be a multiple of k/v heads ({hkv})")
    if lq > lk:
        raise ValueError(f"q length ({lq}) must be <= k/v length ({lk})")
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    return hq, hkv, lq, lk


def _expand_kv(t: torch.Tensor, hq: int) -> torch.Tensor:
    """[B, Hkv, L, D] -> [B, Hq, L, D]: query head h gets kv head h // (Hq // Hkv)."""
    group = hq // t.shape[1]
    return t if group == 1 else t.repeat_interleave(group, dim=1)


def attention_probs_reference(
    q: torch.Tensor, k: torch.Tensor, window: int | None = None, sinks: int = 0,
    scale: float | None = None,
) -> torch.Tensor:
    """Naive softmax(q k^T * scale + mask) as [B, Hq, Lq, Lk], float32 (float64 for float64 inputs)."""
    _check_qkv(q, k, k)
    hq, lq, lk = q.shape[1], q.shape[2], k.shape[2]
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(q.to(cdt), _expand_kv(k, hq).to(cdt).transpose(-1, -2)) * scale
    mask = dense_mask(lq, lk, window, sinks, q_offset=lk - lq, device=q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


def attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None, sinks: int = 0,
    scale: float | None = None,
) -> torch.Tensor:
    """Naive explicit-softmax attention in float32 (float64 for float64 inputs); output in q's dtype."""
    hq, _, _, _ = _check_qkv(q, k, v)
    probs = attention_probs_reference(q, k, window, sinks, scale)
    out = torch.matmul(probs, _expand_kv(v, hq).to(probs.dtype))
    return out.to(q.dtype)


def attention_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None, sinks: int = 0,
    scale: float | None = None,
) -> torch.Tensor:
    """torch SDPA: ``is_causal`` for plain causal self-attention, else a dense boolean mask."""
    hq, hkv, lq, lk = _check_qkv(q, k, v)
    window, sinks = effective_window(window, sinks, lq, lk)
    gqa = hq != hkv
    if window is None and lq == lk:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    mask = dense_mask(lq, lk, window, sinks, q_offset=lk - lq, device=q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)


@functools.lru_cache(maxsize=64)
def _cached_block_mask(q_len: int, kv_len: int, window: int | None, sinks: int, device: str) -> Any:
    """BlockMask for (q_len, kv_len, window, sinks) on ``device``; built once per key."""
    return flex_block_mask(q_len, kv_len, window, sinks, q_offset=kv_len - q_len, device=device)


@functools.cache
def _compiled_flex() -> Any:
    """torch.compile(flex_attention), built on first CUDA use.

    dynamic=False specialises on shapes/dtypes, one compile per (shapes, dtype); masks do not
    trigger recompiles (their parameters are captured tensors, see flex_mask_mod). The dynamo
    recompile limit (default 8) is raised to 64 so that a long-lived process sweeping lengths
    does not silently fall back to eager flex, which materialises the full score matrix.
    """
    from torch.nn.attention.flex_attention import flex_attention

    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), 64))
            break
    return torch.compile(flex_attention, dynamic=False)


def attention_flex(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None, sinks: int = 0,
    scale: float | None = None,
) -> torch.Tensor:
    """FlexAttention with cached block masks (compiled on CUDA; eager elsewhere, for testing only)."""
    hq, hkv, lq, lk = _check_qkv(q, k, v)
    window, sinks = effective_window(window, sinks, lq, lk)
    block_mask = _cached_block_mask(lq, lk, window, sinks, str(q.device))
    kwargs = dict(block_mask=block_mask, scale=scale, enable_gqa=hq != hkv)
    if q.is_cuda:
        return _compiled_flex()(q, k, v, **kwargs)
    from torch.nn.attention.flex_attention import flex_attention

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return flex_attention(q, k, v, **kwargs)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None, sinks: int = 0,
    scale: float | None = None, backend: str = "auto",
) -> torch.Tensor:
    """Dispatch. "auto": on CUDA flex when a window is in effect, sdpa for plain causal; sdpa on CPU.

    "reference" / "sdpa" / "flex" force a backend. Returns [B, Hq, Lq, D] in q's dtype.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "auto":
        _, _, lq, lk = _check_qkv(q, k, v)
        eff_window, _ = effective_window(window, sinks, lq, lk)
        backend = "flex" if (q.is_cuda and eff_window is not None) else "sdpa"
    fn = {"reference": attention_reference, "sdpa": attention_sdpa, "flex": attention_flex}[backend]
    return fn(q, k, v, window=window, sinks=sinks, scale=scale)
