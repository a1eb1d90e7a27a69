"""Causal attention with optional sliding window, chunks, sinks, logit softcapping and learned sink
logits: a naive reference and fast paths.

Layout BHLD: q [B, Hq, Lq, D], k/v [B, Hkv, Lk, D] with Hq a multiple of Hkv (GQA: query head h
uses kv head h // (Hq // Hkv)) and Lq <= Lk. Query i sits at absolute position Lk - Lq + i
(queries are the last Lq positions; Lq == Lk is ordinary self-attention). Mask rule (window, chunk,
sinks): see kernels/masks.py. Two logit features of HF families, both optional:

- ``softcap`` c (Gemma 2 ``attn_logit_softcapping``): each scaled score s becomes c * tanh(s / c)
  before the mask;
- ``sink_logits`` [Hq] (gpt-oss ``s_aux``): one extra logit per query head in the softmax
  denominator with no value, so a row's weights on the keys sum to less than 1.

Every function returns [B, Hq, Lq, D] in q's dtype.

- ``attention_reference``: explicit float32 softmax (float64 if the inputs are float64).
- ``attention_sdpa``: the CPU path. Softcap or sink logits: ``attention_tiled`` (explicit scores per
  query block over the keys it can see). Otherwise torch SDPA: ``is_causal`` for plain causal
  self-attention, the banded path (``attention_banded``) when a window or chunk is in effect, a dense
  [Lq, Lk] mask for queries shorter than keys without either (cheap for the few-query case it serves).
- ``attention_banded``: windowed / chunked attention in O(L * (block + window + sinks)) time and
  memory, exact: query blocks of ``block`` rows attend, through one SDPA call, only to their key band
  (the ``block + window - 1`` keys any of their rows can see) plus the sink keys. No L x L tensor.
- ``attention_tiled``: explicit float32 scores of ``TILE_ROWS`` query rows at a time over their key
  range (band + sinks), all features; O(TILE_ROWS * L) scratch.
- ``attention_sdpa_dense``: SDPA with a dense [Lq, Lk] boolean mask (O(Lq * Lk) memory); the former
  CPU path, kept as a diagnostic baseline for benchmarks.
- ``attention_flex``: FlexAttention with cached block masks (chunk in the block mask and mask_mod,
  softcap as a score_mod, sink logits from the log-sum-exp it returns: out * sigmoid(lse - sink));
  compiled once per length bucket (lazily) on CUDA, eager (slow, unfused; for tests) elsewhere.
- ``attention``: dispatch.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from kernels.masks import allowed, band_width, dense_mask, effective_mask, flex_block_mask

BACKENDS = ("auto", "reference", "sdpa", "flex")
# Query rows per block of the banded path. Measured on CPU (4K tokens, windows 1..1024): 32 was the
# fastest or within noise of it for every window (larger blocks waste band keys, smaller ones add
# per-block overhead); benchmarks/RESULTS.md.
BAND_BLOCK = 32
# Query rows per tile of the explicit path (softcap / sink logits on CPU): scratch TILE_ROWS x keys x heads.
TILE_ROWS = 256


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


def check_logit_mods(
    softcap: float | None, sink_logits: torch.Tensor | None, heads: int
) -> tuple[float | None, torch.Tensor | None]:
    """Validate softcap (None or a number > 0) and sink_logits (None or a 1-d tensor of ``heads`` values)."""
    if softcap is not None:
        if isinstance(softcap, bool) or not isinstance(softcap, int | float) or not softcap > 0:
            raise ValueError(f"softcap must be None or a number > 0, got {softcap!r}")
        softcap = float(softcap)
    if sink_logits is not None:
        if not isinstance(sink_logits, torch.Tensor) or sink_logits.dim() != 1 or sink_logits.shape[0] != heads:
            shape = tuple(sink_logits.shape) if isinstance(sink_logits, torch.Tensor) else type(sink_logits).__name__
            raise ValueError(f"sink_logits must be a 1-d tensor of {heads} values (one per query head), got {shape}")
    return softcap, sink_logits


def _expand_kv(t: torch.Tensor, hq: int) -> torch.Tensor:
    """[B, Hkv, L, D] -> [B, Hq, L, D]: query head h gets kv head h // (Hq // Hkv)."""
    group = hq // t.shape[1]
    return t if group == 1 else t.repeat_interleave(group, dim=1)


def _softmax_with_sinks(scores: torch.Tensor, sink_logits: torch.Tensor | None) -> torch.Tensor:
    """softmax over the last dim of scores [B, H, ..., L]; with sink logits [H] one extra logit per head
    joins the denominator (and its column is dropped)."""
    if sink_logits is None:
        return torch.softmax(scores, dim=-1)
    shape = (1, -1) + (1,) * (scores.dim() - 2)
    sink = sink_logits.to(scores.dtype).reshape(shape).expand(*scores.shape[:-1], 1)
    return torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]


def attention_probs_reference(
    q: torch.Tensor, k: torch.Tensor, window: int | None = None, sinks: int = 0,
    scale: float | None = None, chunk: int | None = None, softcap: float | None = None,
    sink_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Naive softmax(cap(q k^T * scale) + mask) as [B, Hq, Lq, Lk], float32 (float64 for float64
    inputs); with sink logits the rows sum to less than 1 (the sink's share is not a key)."""
    _check_qkv(q, k, k)
    hq, lq, lk = q.shape[1], q.shape[2], k.shape[2]
    softcap, sink_logits = check_logit_mods(softcap, sink_logits, hq)
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(q.to(cdt), _expand_kv(k, hq).to(cdt).transpose(-1, -2)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    mask = dense_mask(lq, lk, window, sinks, q_offset=lk - lq, device=q.device, chunk=chunk)
    scores = scores.masked_fill(~mask, float("-inf"))
    return _softmax_with_sinks(scores, sink_logits)


def attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None, sinks: int = 0,
    scale: float | None = None, chunk: int | None = None, softcap: float | None = None,
    sink_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Naive explicit-softmax attention in float32 (float64 for float64 inputs); output in q's dtype."""
    hq, _, _, _ = _check_qkv(q, k, v)
    probs = attention_probs_reference(q, k, window, sinks, scale, chunk, softcap, sink_logits)
    out = torch.matmul(probs, _expand_kv(v, hq).to(probs.dtype))
    return out.to(q.dtype)


def attention_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None, sinks: int = 0,
    scale: float | None = None, chunk: int | None = None, softcap: float | None = None,
    sink_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """The CPU path: ``attention_tiled`` for softcap / sink logits; else torch SDPA: ``is_causal`` for
    plain causal self-attention, the banded path when a window or chunk is in effect, a dense [Lq, Lk]
    mask for queries shorter than keys without either."""
    hq, hkv, lq, lk = _check_qkv(q, k, v)
    softcap, sink_logits = check_logit_mods(softcap, sink_logits, hq)
    window, sinks, chunk = effective_mask(window, sinks, chunk, lq, lk)
    if softcap is not None or sink_logits is not None:
        return attention_tiled(q, k, v, window, sinks, scale, chunk, softcap, sink_logits)
    if window is not None or chunk is not None:
        return attention_banded(q, k, v, window, sinks, scale, chunk=chunk)
    if lq == lk:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=hq != hkv)
    return attention_sdpa_dense(q, k, v, None, 0, scale)


def attention_sdpa_dense(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None, sinks: int = 0,
    scale: float | None = None, chunk: int | None = None,
) -> torch.Tensor:
    """torch SDPA with a dense boolean [Lq, Lk] mask: O(Lq * Lk) memory (diagnostic baseline)."""
    hq, hkv, lq, lk = _check_qkv(q, k, v)
    window, sinks, chunk = effective_mask(window, sinks, chunk, lq, lk)
    mask = dense_mask(lq, lk, window, sinks, q_offset=lk - lq, device=q.device, chunk=chunk)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=hq != hkv)


def attention_tiled(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None, sinks: int = 0,
    scale: float | None = None, chunk: int | None = None, softcap: float | None = None,
    sink_logits: torch.Tensor | None = None, rows: int | None = None,
) -> torch.Tensor:
    """Explicit attention of ``rows`` (``TILE_ROWS``) query rows at a time, each tile over only the keys
    it can see (its band of ``band_width(window, chunk)`` plus the sink keys before it), in float32
    (float64 for float64 inputs): every feature, exact, O(rows * L) scratch; differentiable."""
    hq, hkv, lq, lk = _check_qkv(q, k, v)
    softcap, sink_logits = check_logit_mods(softcap, sink_logits, hq)
    window, sinks, chunk = effective_mask(window, sinks, chunk, lq, lk)
    rows = _as_block(TILE_ROWS if rows is None else rows)
    b, d, group = q.shape[0], q.shape[-1], hq // hkv
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = d**-0.5 if scale is None else scale
    reach = band_width(window, chunk)
    offset = lk - lq
    outs = []
    for i0 in range(0, lq, rows):
        i1 = min(i0 + rows, lq)
        p0, p1 = offset + i0, offset + i1 - 1  # absolute positions of the tile's first and last query
        lo = 0 if reach is None else max(0, p0 - reach + 1)
        keys = torch.arange(lo, p1 + 1, device=q.device)
        if sinks and lo > 0:
            keys = torch.cat([torch.arange(min(sinks, lo), device=q.device), keys])
        kt, vt = k[:, :, keys].to(cdt), v[:, :, keys].to(cdt)  # [B, Hkv, n, D]
        qt = q[:, :, i0:i1].to(cdt).reshape(b, hkv, group * (i1 - i0), d)  # head h = kv * group + g
        scores = torch.matmul(qt, kt.transpose(-1, -2)).reshape(b, hq, i1 - i0, -1) * scale
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        qpos = torch.arange(p0, p1 + 1, device=q.device)[:, None]
        scores = scores.masked_fill(~allowed(qpos, keys[None, :], window, sinks, chunk), float("-inf"))
        probs = _softmax_with_sinks(scores, sink_logits).reshape(b, hkv, group * (i1 - i0), -1)
        outs.append(torch.matmul(probs, vt).reshape(b, hq, i1 - i0, d))
    return torch.cat(outs, dim=2).to(q.dtype)


def band_mask(
    q_len: int, k_len: int, window: int | None, sinks: int, block: int, device: torch.device | str | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    """Bool [n_blocks, block, s + block + w - 1]: which of its keys each row of a query block sees,
    with ``w = band_width(window, chunk)`` (a window, a chunk or both must be given).

    Block j holds queries at absolute positions p = k_len - q_len + j*block + r (r < block); its keys
    are the ``s = min(sinks, k_len)`` sink keys (positions 0..s-1), then the band at positions
    p0 - w + 1 + t for t < block + w - 1 (p0: the block's first query). Band key t is seen by row r
    when r <= t <= r + w - 1 (causal, inside the reach), its position is >= 0 and (with a chunk) it
    lies in p's chunk; sink key i when i <= p and the band does not already show it (none is counted
    twice). Rows past q_len (padding) see their band as computed (their output is dropped); band keys
    past k_len are only ever seen by such rows.
    """
    w = band_width(window, chunk)
    n_blocks = -(-q_len // block)
    band = block + w - 1
    first = (k_len - q_len) + block * torch.arange(n_blocks, device=device)[:, None, None]  # p0 per block
    r = torch.arange(block, device=device)[:, None]
    t = torch.arange(band, device=device)[None, :]
    in_window = (t >= r) & (t <= r + w - 1)  # [block, band], the same for every block
    key_pos = first - (w - 1) + t
    mask = in_window & (key_pos >= 0)
    if chunk is not None:
        mask = mask & (torch.div(key_pos, chunk, rounding_mode="floor")
                       == torch.div(first + r, chunk, rounding_mode="floor"))
    s = min(sinks, k_len)
    if s == 0:
        return mask
    q_pos, sink_pos = first + r, torch.arange(s, device=device)[None, :]
    shown = q_pos - sink_pos < w  # inside the reach: the band has this key
    if chunk is not None:
        shown = shown & (torch.div(q_pos, chunk, rounding_mode="floor") == sink_pos // chunk)
    sink = (sink_pos <= q_pos) & ~shown  # [n_blocks, block, s]
    return torch.cat([sink, mask], dim=-1)


def _key_blocks(t: torch.Tensor, q_len: int, window: int, sinks: int, block: int) -> torch.Tensor:
    """[B, Hkv, Lk, D] -> [B, Hkv, n_blocks, s + band, D]: each query block's sink keys and key band
    (zero rows where the band runs past either end), in the order of ``band_mask``'s columns;
    ``window`` is the band width."""
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
    scale: float | None = None, block: int | None = None, chunk: int | None = None,
) -> torch.Tensor:
    """Windowed / chunked attention through SDPA on query blocks and their key bands; exact, no L x L tensor.

    Time and memory O(Lq * (block + w + sinks)), w = min(window, chunk). GQA without repeating k/v: the
    query heads sharing a kv head are stacked as rows of one block. Neither a window nor a chunk in
    effect is plain causal attention (``attention_sdpa``). Differentiable (training uses it).
    """
    hq, hkv, lq, lk = _check_qkv(q, k, v)
    window, sinks, chunk = effective_mask(window, sinks, chunk, lq, lk)
    if window is None and chunk is None:
        return attention_sdpa(q, k, v, None, 0, scale)
    width = band_width(window, chunk)
    block = min(_as_block(BAND_BLOCK if block is None else block), lq)
    b, d, group = q.shape[0], q.shape[-1], hq // hkv
    n_blocks = -(-lq // block)
    kb = _key_blocks(k, lq, width, sinks, block)
    vb = _key_blocks(v, lq, width, sinks, block)
    n_keys = kb.shape[-2]
    # queries [B, Hq, Lq, D] -> [B*Hkv, n_blocks, group*block, D] (head h = kv * group + g)
    pad = n_blocks * block - lq
    qb = (F.pad(q, (0, 0, 0, pad)) if pad else q).reshape(b, hkv, group, n_blocks, block, d)
    qb = qb.transpose(2, 3).reshape(b * hkv, n_blocks, group * block, d)
    bias = _band_bias.__wrapped__ if torch.compiler.is_compiling() else _band_bias  # traced: no cache
    mask = bias(lq, lk, window, sinks, block, group, str(q.device), q.dtype, chunk)
    out = F.scaled_dot_product_attention(
        qb, kb.reshape(b * hkv, n_blocks, n_keys, d), vb.reshape(b * hkv, n_blocks, n_keys, d),
        attn_mask=mask, scale=scale,
    )
    out = out.view(b, hkv, n_blocks, group, block, d).transpose(2, 3).reshape(b, hq, n_blocks * block, d)
    return out[:, :, :lq]


@functools.lru_cache(maxsize=8)
def _band_bias(
    q_len: int, k_len: int, window: int | None, sinks: int, block: int, group: int, device: str,
    dtype: torch.dtype, chunk: int | None = None,
) -> torch.Tensor:
    """``band_mask`` as SDPA's attn_mask: additive (0 / -inf) in the query dtype, rows repeated for the
    ``group`` query heads of a block, [1, n_blocks, group*block, n_keys]. A 4-d float mask keeps SDPA
    on its fused CPU kernel with no bool-to-float conversion per call; cached, so the windowed layers
    of one forward share it. Built outside inference mode, so a mask first made under
    ``torch.inference_mode`` can still be saved for backward by a later training step."""
    with torch.inference_mode(False), torch.no_grad():
        mask = band_mask(q_len, k_len, window, sinks, block, device, chunk)  # [n_blocks, block, n_keys]
        n_blocks, _, n_keys = mask.shape
        mask = mask[:, None].expand(n_blocks, group, block, n_keys).reshape(1, n_blocks, group * block, n_keys)
        bias = torch.zeros(mask.shape, dtype=dtype, device=device)
        return bias.masked_fill_(~mask, float("-inf"))


def _as_block(block: int) -> int:
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be an int >= 1, got {block!r}")
    return block


@functools.lru_cache(maxsize=64)
def _cached_block_mask(q_len: int, kv_len: int, window: int | None, sinks: int, device: str,
                       chunk: int | None = None) -> Any:
    """BlockMask for (q_len, kv_len, window, sinks, chunk) on ``device``; built once per key."""
    return flex_block_mask(q_len, kv_len, window, sinks, q_offset=kv_len - q_len, device=device, chunk=chunk)


def _block_mask_for(q_len: int, kv_len: int, window: int | None, sinks: int, device: str, chunk: int | None) -> Any:
    """``_cached_block_mask`` under one cache key per mask (no chunk: the 5-argument key)."""
    if chunk is None:
        return _cached_block_mask(q_len, kv_len, window, sinks, device)
    return _cached_block_mask(q_len, kv_len, window, sinks, device, chunk)


@functools.lru_cache(maxsize=16)
def _softcap_mod(softcap: float, device: str) -> Any:
    """FlexAttention score_mod c * tanh(score / c) (score: the scaled logit); one function per (c, device)
    so a compiled flex_attention reuses its graph."""
    cap = torch.tensor(softcap, dtype=torch.float32, device=device)

    def score_mod(score: torch.Tensor, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> torch.Tensor:
        return torch.tanh(score / cap) * cap

    return score_mod


def _flex_call(flex: Any, q, k, v, block_mask, scale, score_mod, sink_logits, gqa: bool) -> torch.Tensor:
    """One flex_attention call; with sink logits [Hq], the log-sum-exp it returns rescales the output:
    sum_j e^s_j v_j / (sum_j e^s_j + e^a) = out * sigmoid(lse - a)."""
    if sink_logits is None:
        return flex(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale, enable_gqa=gqa)
    try:
        from torch.nn.attention.flex_attention import AuxRequest
    except ImportError:  # torch < 2.9: the older keyword
        out, lse = flex(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale, enable_gqa=gqa,
                        return_lse=True)
    else:
        out, aux = flex(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale, enable_gqa=gqa,
                        return_aux=AuxRequest(lse=True))
        lse = aux.lse
    keep = torch.sigmoid(lse.float() - sink_logits.float().to(lse.device)[None, :, None])
    return (out.float() * keep[..., None]).to(q.dtype)


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
    scale: float | None, chunk: int | None = None, softcap: float | None = None,
    sink_logits: torch.Tensor | None = None,
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
    block_mask = _block_mask_for(lq + pad, lk + pad, window, sinks, str(q.device), chunk)
    score_mod = None if softcap is None else _softcap_mod(softcap, str(q.device))
    out = _flex_call(flex, q, k, v, block_mask, scale, score_mod, sink_logits, hq != hkv)
    return out[:, :, :lq] if pad else out


def attention_flex(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None, sinks: int = 0,
    scale: float | None = None, chunk: int | None = None, softcap: float | None = None,
    sink_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """FlexAttention with cached block masks (compiled on CUDA, lengths padded to buckets; eager and
    unpadded elsewhere, for testing only)."""
    hq, hkv, lq, lk = _check_qkv(q, k, v)
    softcap, sink_logits = check_logit_mods(softcap, sink_logits, hq)
    window, sinks, chunk = effective_mask(window, sinks, chunk, lq, lk)
    if q.is_cuda:
        return flex_bucketed(_compiled_flex(), q, k, v, window, sinks, scale, chunk, softcap, sink_logits)
    from torch.nn.attention.flex_attention import flex_attention

    block_mask = _block_mask_for(lq, lk, window, sinks, str(q.device), chunk)
    score_mod = None if softcap is None else _softcap_mod(softcap, str(q.device))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return _flex_call(flex_attention, q, k, v, block_mask, scale, score_mod, sink_logits, hq != hkv)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None, sinks: int = 0,
    scale: float | None = None, backend: str = "auto", chunk: int | None = None, softcap: float | None = None,
    sink_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dispatch. "auto": on CUDA flex when a window or chunk is in effect or a softcap / sink logits are
    given, sdpa for plain causal; sdpa on CPU (banded for windows / chunks, tiled for softcap / sink
    logits, is_causal otherwise).

    "reference" / "sdpa" / "flex" force a backend. Returns [B, Hq, Lq, D] in q's dtype.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "auto":
        _, _, lq, lk = _check_qkv(q, k, v)
        eff_window, _, eff_chunk = effective_mask(window, sinks, chunk, lq, lk)
        special = eff_window is not None or eff_chunk is not None or softcap is not None or sink_logits is not None
        backend = "flex" if (q.is_cuda and special) else "sdpa"
    fn = {"reference": attention_reference, "sdpa": attention_sdpa, "flex": attention_flex}[backend]
    extra = {}
    if chunk is not None or softcap is not None or sink_logits is not None:
        extra = dict(chunk=chunk, softcap=softcap, sink_logits=sink_logits)
    return fn(q, k, v, window=window, sinks=sinks, scale=scale, **extra)
