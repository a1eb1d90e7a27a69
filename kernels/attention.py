"""Causal attention with optional sliding window and sinks: a naive reference and two fast paths.

Layout BHLD: q [B, Hq, Lq, D], k/v [B, Hkv, Lk, D] with Hq a multiple of Hkv (GQA: query head h
uses kv head h // (Hq // Hkv)) and Lq <= Lk. Query i sits at absolute position Lk - Lq + i
(queries are the last Lq positions; Lq == Lk is ordinary self-attention). Mask rule: see
kernels/masks.py. Every function returns [B, Hq, Lq, D] in q's dtype.

- ``attention_reference``: explicit float32 softmax (float64 if the inputs are float64).
- ``attention_sdpa``: torch SDPA. Plain causal self-attention: ``is_causal``. A window in effect:
  the banded path (``attention_banded``). Queries shorter than keys without a window: a dense
  [Lq, Lk] mask (cheap for the few-query case it serves). CPU path.
- ``attention_banded``: windowed attention in O(L * (block + window + sinks)) time and memory, exact:
  query blocks of ``block`` rows attend, through one SDPA call, only to their key band (the
  ``block + window - 1`` keys any of their rows can see) plus the sink keys. No L x L tensor.
- ``attention_sdpa_dense``: SDPA with a dense [Lq, Lk] boolean mask (O(Lq * Lk) memory); the former
  CPU path, kept as a diagnostic baseline for benchmarks.
- ``attention_flex``: FlexAttention with cached block masks; compiled once per length bucket (lazily)
  on CUDA, eager (slow, unfused; for tests) elsewhere.
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
# Query rows per block of the banded path. Measured on CPU (4K tokens, windows 1..1024): 32 was the
# fastest or within noise of it for every window (larger blocks waste band keys, smaller ones add
# per-block overhead); benchmarks/RESULTS.md.
BAND_BLOCK = 32


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
    """torch SDPA: ``is_causal`` for plain causal self-attention, the banded path when a window is in
    effect, a dense [Lq, Lk] mask for queries shorter than keys without a window."""
    hq, hkv, lq, lk = _check_qkv(q, k, v)
    window, sinks = effective_window(window, sinks, lq, lk)
    if window is not None:
        return attention_banded(q, k, v, window, sinks, scale)
    if lq == lk:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=hq != hkv)
    return attention_sdpa_dense(q, k, v, None, 0, scale)


def attention_sdpa_dense(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None, sinks: int = 0,
    scale: float | None = None,
) -> torch.Tensor:
    """torch SDPA with a dense boolean [Lq, Lk] mask: O(Lq * Lk) memory (diagnostic baseline)."""
    hq, hkv, lq, lk = _check_qkv(q, k, v)
    window, sinks = effective_window(window, sinks, lq, lk)
    mask = dense_mask(lq, lk, window, sinks, q_offset=lk - lq, device=q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=hq != hkv)


def band_mask(
    q_len: int, k_len: int, window: int, sinks: int, block: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Bool [n_blocks, block, s + block + window - 1]: which of its keys each row of a query block sees.

    Block j holds queries at absolute positions p = k_len - q_len + j*block + r (r < block); its keys
    are the ``s = min(sinks, k_len)`` sink keys (positions 0..s-1), then the band at positions
    p0 - window + 1 + t for t < block + window - 1 (p0: the block's first query). Band key t is seen
    by row r when r <= t <= r + window - 1 (causal, inside the window) and its position is >= 0;
    sink key i when p - i >= window (nearer sinks are already in the band: none is counted twice).
    Rows past q_len (padding) see their band as computed (their output is dropped); band keys past
    k_len are only ever seen by such rows.
    """
    n_blocks = -(-q_len // block)
    band = block + window - 1
    first = (k_len - q_len) + block * torch.arange(n_blocks, device=device)[:, None, None]  # p0 per block
    r = torch.arange(block, device=device)[:, None]
    t = torch.arange(band, device=device)[None, :]
    in_window = (t >= r) & (t <= r + window - 1)  # [block, band], the same for every block
    mask = in_window & (first - (window - 1) + t >= 0)
    s = min(sinks, k_len)
    if s == 0:
        return mask
    sink = (first + r) - torch.arange(s, device=device)[None, :] >= window  # [n_blocks, block, s]
    return torch.cat([sink, mask], dim=-1)


def _key_blocks(t: torch.Tensor, q_len: int, window: int, sinks: int, block: int) -> torch.Tensor:
    """[B, Hkv, Lk, D] -> [B, Hkv, n_blocks, s + band, D]: each query block's sink keys and key band
    (zero rows where the band runs past either end), in the order of ``band_mask``'s columns."""
    b, h, lk, d = t.shape
    n_blocks = -(-q_len // block)
    band = block + window - 1
    pad_end = n_blocks * block - q_len
    padded = F.pad(t, (0, 0, window - 1, pad_end))[:, :, lk - q_len :]  # padded index = position + w - 1
    bands = padded.unfold(2, band, block).transpose(-1, -2)  # [B, H, n_blocks, band, D] (a view)
    s = min(sinks, lk)
    if s == 0:
        return bands
    return torch.cat([t[:, :, None, :s].expand(b, h, n_blocks, s, d), bands], dim=-2)


def attention_banded(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None, sinks: int = 0,
    scale: float | None = None, block: int | None = None,
) -> torch.Tensor:
    """Windowed attention through SDPA on query blocks and their key bands; exact, no L x L tensor.

    Time and memory O(Lq * (block + window + sinks)). GQA without repeating k/v: the query heads
    sharing a kv head are stacked as rows of one block. ``window=None`` (or a window covering every
    key) is plain causal attention (``attention_sdpa``). Differentiable (training uses it).
    """
    hq, hkv, lq, lk = _check_qkv(q, k, v)
    window, sinks = effective_window(window, sinks, lq, lk)
    if window is None:
        return attention_sdpa(q, k, v, None, 0, scale)
    block = min(_as_block(BAND_BLOCK if block is None else block), lq)
    b, d, group = q.shape[0], q.shape[-1], hq // hkv
    n_blocks = -(-lq // block)
    kb = _key_blocks(k, lq, window, sinks, block)
    vb = _key_blocks(v, lq, window, sinks, block)
    n_keys = kb.shape[-2]
    # queries [B, Hq, Lq, D] -> [B*Hkv, n_blocks, group*block, D] (head h = kv * group + g)
    pad = n_blocks * block - lq
    qb = (F.pad(q, (0, 0, 0, pad)) if pad else q).reshape(b, hkv, group, n_blocks, block, d)
    qb = qb.transpose(2, 3).reshape(b * hkv, n_blocks, group * block, d)
    bias = _band_bias.__wrapped__ if torch.compiler.is_compiling() else _band_bias  # traced: no cache
    mask = bias(lq, lk, window, sinks, block, group, str(q.device), q.dtype)
    out = F.scaled_dot_product_attention(
        qb, kb.reshape(b * hkv, n_blocks, n_keys, d), vb.reshape(b * hkv, n_blocks, n_keys, d),
        attn_mask=mask, scale=scale,
    )
    out = out.view(b, hkv, n_blocks, group, block, d).transpose(2, 3).reshape(b, hq, n_blocks * block, d)
    return out[:, :, :lq]


@functools.lru_cache(maxsize=8)
def _band_bias(
    q_len: int, k_len: int, window: int, sinks: int, block: int, group: int, device: str, dtype: torch.dtype
) -> torch.Tensor:
    """``band_mask`` as SDPA's attn_mask: additive (0 / -inf) in the query dtype, rows repeated for the
    ``group`` query heads of a block, [1, n_blocks, group*block, n_keys]. A 4-d float mask keeps SDPA
    on its fused CPU kernel with no bool-to-float conversion per call; cached, so the windowed layers
    of one forward share it. Built outside inference mode, so a mask first made under
    ``torch.inference_mode`` can still be saved for backward by a later training step."""
    with torch.inference_mode(False), torch.no_grad():
        mask = band_mask(q_len, k_len, window, sinks, block, device)  # [n_blocks, block, n_keys]
        n_blocks, _, n_keys = mask.shape
        mask = mask[:, None].expand(n_blocks, group, block, n_keys).reshape(1, n_blocks, group * block, n_keys)
        bias = torch.zeros(mask.shape, dtype=dtype, device=device)
        return bias.masked_fill_(~mask, float("-inf"))


def _as_block(block: int) -> int:
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be an int >= 1, got {block!r}")
    return block


@functools.lru_cache(maxsize=64)
def _cached_block_mask(q_len: int, kv_len: int, window: int | None, sinks: int, device: str) -> Any:
    """BlockMask for (q_len, kv_len, window, sinks) on ``device``; built once per key."""
    return flex_block_mask(q_len, kv_len, window, sinks, q_offset=kv_len - q_len, device=device)


@functools.cache
def _compiled_flex() -> Any:
    """torch.compile(flex_attention), built on first CUDA use.

    dynamic=False specialises on shapes/dtypes: one compile per (padded length, heads, dim, dtype).
    Lengths are padded to buckets (:func:`flex_length_bucket`), so a new document or needle position
    of about the same length reuses the compiled kernel; masks do not trigger recompiles (their
    parameters are captured tensors, see flex_mask_mod). The dynamo recompile limit (default 8) is
    raised to 64 so that a long-lived process sweeping lengths does not silently fall back to eager
    flex, which materialises the full score matrix.
    """
    from torch.nn.attention.flex_attention import flex_attention

    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), 64))
            break
    return torch.compile(flex_attention, dynamic=False)


def flex_length_bucket(length: int) -> int:
    """The key length a compiled flex call runs at: ``length`` rounded up to a multiple of
    max(128, 2**(bit_length - 4)), i.e. at most 8 buckets per doubling of the length and at most
    1/8 padding (4096 and 32768 are their own buckets)."""
    step = max(128, 1 << max(0, length.bit_length() - 4))
    return -(-length // step) * step


def flex_bucketed(
    flex: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None, sinks: int,
    scale: float | None,
) -> torch.Tensor:
    """``flex`` (a compiled flex_attention) on q/k/v padded at the end to the length bucket.

    q and k/v get the same number of zero rows, so queries keep their absolute positions (the last
    Lq of Lk). Real queries never see the padded keys (they lie after every real query: causal);
    padded queries see real and padded keys (finite scores) and their rows are dropped. Exact.
    """
    hq, hkv, lq, lk = q.shape[1], k.shape[1], q.shape[2], k.shape[2]
    pad = flex_length_bucket(lk) - lk
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    block_mask = _cached_block_mask(lq + pad, lk + pad, window, sinks, str(q.device))
    out = flex(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=hq != hkv)
    return out[:, :, :lq] if pad else out


def attention_flex(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None, sinks: int = 0,
    scale: float | None = None,
) -> torch.Tensor:
    """FlexAttention with cached block masks (compiled on CUDA, lengths padded to buckets; eager and
    unpadded elsewhere, for testing only)."""
    hq, hkv, lq, lk = _check_qkv(q, k, v)
    window, sinks = effective_window(window, sinks, lq, lk)
    if q.is_cuda:
        return flex_bucketed(_compiled_flex(), q, k, v, window, sinks, scale)
    from torch.nn.attention.flex_attention import flex_attention

    block_mask = _cached_block_mask(lq, lk, window, sinks, str(q.device))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return flex_attention(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=hq != hkv)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None, sinks: int = 0,
    scale: float | None = None, backend: str = "auto",
) -> torch.Tensor:
    """Dispatch. "auto": on CUDA flex when a window is in effect, sdpa for plain causal; sdpa on CPU
    (the banded path for windows, is_causal without).

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
