"""Attention masks: causal, sliding window (HF semantics), chunked attention and attention sinks.

A query at absolute position q may attend to a key at position k when

    k <= q  and  ((q - k < window  and  q // chunk == k // chunk)  or  k < sinks)

(``window=None``: no window condition; ``chunk=None``: no chunk condition). So window w means "the
query itself and the w-1 previous tokens" (HF ``sliding_window``), chunk c means "only keys of the
query's own c-token chunk" (Llama 4 ``attention_chunk_size``: chunks start at positions 0, c, 2c, ...),
and sinks n keeps key positions 0..n-1 visible (causally) to restricted queries. With neither a window
nor a chunk the mask is plain causal and ``sinks`` changes nothing.

Three views of the same rule:
- ``allowed``: elementwise on (broadcast) position tensors,
- ``dense_mask``: a bool [q_len, k_len] matrix (CPU/SDPA path and references),
- ``flex_mask_mod`` / ``flex_block_mask``: a FlexAttention mask_mod and a BlockMask built
  block-by-block from the rule (never materialising q_len x k_len).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch

# int32 "infinite" window used inside flex mask_mods when window is None (q - k never reaches it).
_NO_WINDOW = 2**31 - 1


def _as_int(name: str, value: Any, minimum: int, allowed_text: str) -> int:
    """Return ``value`` as an int >= minimum, or raise one ValueError naming the field."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be {allowed_text}, got {value!r}")
    try:
        as_int = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be {allowed_text}, got {value!r}") from None
    if as_int < minimum:
        raise ValueError(f"{name} must be {allowed_text}, got {value!r}")
    return as_int


def check_window_sinks(window: int | None, sinks: int = 0) -> tuple[int | None, int]:
    """Validate (window, sinks): window None or an int >= 1; sinks an int >= 0."""
    if window is not None:
        window = _as_int("window", window, 1, "None or an int >= 1")
    sinks = _as_int("sinks", sinks, 0, "an int >= 0")
    return window, sinks


def check_chunk(chunk: int | None) -> int | None:
    """Validate chunk: None or an int >= 1."""
    return None if chunk is None else _as_int("chunk", chunk, 1, "None or an int >= 1")


def effective_mask(
    window: int | None, sinks: int, chunk: int | None, q_len: int, k_len: int
) -> tuple[int | None, int, int | None]:
    """Canonical (window, sinks, chunk) for queries at the last ``q_len`` of ``k_len`` positions: a
    window or chunk covering every key (>= k_len) is dropped, and sinks only matter while a window or
    a chunk restricts; all three collapse to (None, 0, None) = plain causal."""
    window, sinks = check_window_sinks(window, sinks)
    chunk = check_chunk(chunk)
    window = None if window is None or window >= k_len else window
    chunk = None if chunk is None or chunk >= k_len else chunk
    if window is None and chunk is None:
        return None, 0, None
    return window, sinks, chunk


def band_width(window: int | None, chunk: int | None) -> int | None:
    """The farthest any query reaches back, plus one: min(window, chunk) (None: unlimited). A key in the
    query's chunk is fewer than ``chunk`` positions back, so the chunk rule implies that window."""
    limits = [x for x in (window, chunk) if x is not None]
    return min(limits) if limits else None


def effective_window(window: int | None, sinks: int, q_len: int, k_len: int) -> tuple[int | None, int]:
    """Canonical (window, sinks) for queries at the last ``q_len`` of ``k_len`` positions.

    A window that covers every causal pair (window >= k_len) is the same as no window, and
    sinks only matter with a window; both collapse to (None, 0) = plain causal.
    """
    window, sinks = check_window_sinks(window, sinks)
    if window is None or window >= k_len:
        return None, 0
    return window, sinks


def allowed(
    q_pos: torch.Tensor | int, k_pos: torch.Tensor | int, window: int | None, sinks: int = 0,
    chunk: int | None = None,
) -> torch.Tensor:
    """Bool tensor (broadcast of q_pos and k_pos): may the query at q_pos attend to the key at k_pos."""
    window, sinks = check_window_sinks(window, sinks)
    chunk = check_chunk(chunk)
    q_pos = torch.as_tensor(q_pos)
    k_pos = torch.as_tensor(k_pos)
    causal = k_pos <= q_pos
    if window is None and chunk is None:
        return causal
    visible = torch.ones_like(causal)
    if window is not None:
        visible = visible & ((q_pos - k_pos) < window)
    if chunk is not None:
        visible = visible & (torch.div(q_pos, chunk, rounding_mode="floor")
                             == torch.div(k_pos, chunk, rounding_mode="floor"))
    if sinks > 0:
        visible = visible | (k_pos < sinks)
    return causal & visible


def dense_mask(
    q_len: int,
    k_len: int,
    window: int | None,
    sinks: int = 0,
    q_offset: int = 0,
    device: torch.device | str | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    """Bool [q_len, k_len]: query i (absolute position q_offset + i) may see key j (position j)."""
    q_len = _as_int("q_len", q_len, 0, "an int >= 0")
    k_len = _as_int("k_len", k_len, 0, "an int >= 0")
    q_offset = _as_int("q_offset", q_offset, 0, "an int >= 0")
    q_pos = torch.arange(q_offset, q_offset + q_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    return allowed(q_pos, k_pos, window, sinks, chunk)


def flex_mask_mod(
    window: int | None, sinks: int = 0, q_offset: int = 0, device: torch.device | str | None = None,
    chunk: int | None = None,
) -> Callable[[Any, Any, torch.Tensor, torch.Tensor], torch.Tensor]:
    """FlexAttention mask_mod ``(b, h, q_idx, kv_idx) -> bool`` for the rule in the module docstring.

    window, sinks, chunk and q_offset are captured as 0-d int32 tensors on ``device`` (not Python
    ints), so a compiled flex_attention does not recompile for every new (window, sinks, chunk): all
    masks made here share one code object and differ only in captured tensor values.
    """
    window, sinks = check_window_sinks(window, sinks)
    chunk = check_chunk(chunk)
    if window is None and chunk is None:
        sinks = 0
    q_offset = _as_int("q_offset", q_offset, 0, "an int >= 0")
    w_t = torch.tensor(_NO_WINDOW if window is None else window, dtype=torch.int32, device=device)
    c_t = torch.tensor(_NO_WINDOW if chunk is None else chunk, dtype=torch.int32, device=device)
    s_t = torch.tensor(sinks, dtype=torch.int32, device=device)
    off_t = torch.tensor(q_offset, dtype=torch.int32, device=device)

    def mask_mod(b: Any, h: Any, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        q_abs = q_idx + off_t
        near = (q_abs - kv_idx < w_t) & (q_abs // c_t == kv_idx // c_t)
        return (kv_idx <= q_abs) & (near | (kv_idx < s_t))

    return mask_mod


def block_classes(
    q_len: int, k_len: int, window: int | None, sinks: int = 0, q_offset: int = 0,
    block_size: int = 128, device: torch.device | str | None = None, chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(partial, full) bool [ceil(q_len/bs), ceil(k_len/bs)] block maps, computed from block corners.

    A block is "full" when every (q, k) pair in it is allowed and the block lies wholly inside
    [0, q_len) x [0, k_len) (tail blocks are never full, as in torch's create_block_mask);
    "partial" when some pair may be allowed (exact without a chunk; with one, a block whose rows and
    columns share a chunk counts as partial even if the window excludes it: such blocks only cost
    time, a wrongly "full" block would be wrong). Cost O((L/bs)^2), no L x L tensor.
    """
    window, sinks = check_window_sinks(window, sinks)
    chunk = check_chunk(chunk)
    if window is None and chunk is None:
        sinks = 0
    w = _NO_WINDOW if window is None else window
    c = _NO_WINDOW if chunk is None else chunk
    nqb = -(-q_len // block_size)
    nkb = -(-k_len // block_size)
    qb = torch.arange(nqb, device=device)[:, None]
    kb = torch.arange(nkb, device=device)[None, :]
    q0 = qb * block_size + q_offset
    q1 = torch.clamp((qb + 1) * block_size, max=q_len) - 1 + q_offset
    k0 = kb * block_size
    k1 = torch.clamp((kb + 1) * block_size, max=k_len) - 1
    # q - k takes every integer value in [q0 - k1, q1 - k0]; the band needs one in [0, w - 1].
    # Some pair shares a chunk when the blocks' chunk ranges overlap.
    any_band = (q1 >= k0) & (q0 - k1 <= w - 1) & (q0 // c <= k1 // c) & (k0 // c <= q1 // c)
    any_sink = (k0 < sinks) & (k0 <= q1)
    some = any_band | any_sink
    # All pairs allowed: all causal, and the farthest non-sink key still inside the window and in the
    # chunk of the last query (then every non-sink key shares every query's chunk: k <= q).
    first_non_sink = torch.maximum(k0, torch.full_like(k0, sinks))
    near = (q1 - first_non_sink <= w - 1) & (first_non_sink // c == q1 // c)
    all_ok = (k1 <= q0) & ((first_non_sink > k1) | near)
    complete = ((qb + 1) * block_size <= q_len) & ((kb + 1) * block_size <= k_len)
    full = all_ok & complete
    return some & ~full, full


def _ordered(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(num [1,1,nqb], indices [1,1,nqb,nkb]) int32, selected kv blocks first in ascending order."""
    num = blocks.sum(-1, dtype=torch.int32)
    idx = torch.argsort(blocks.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
    return num[None, None].contiguous(), idx[None, None].contiguous()


def flex_block_mask(
    q_len: int, k_len: int, window: int | None, sinks: int = 0, q_offset: int = 0,
    device: torch.device | str | None = None, block_size: int = 128, chunk: int | None = None,
) -> Any:
    """A FlexAttention ``BlockMask`` (batch/head broadcast) for the rule, built from block_classes.

    Equivalent to ``create_block_mask(flex_mask_mod(...), None, None, q_len, k_len)`` but never
    materialises the q_len x k_len mask (create_block_mask does), so it scales to long context.
    """
    from torch.nn.attention.flex_attention import BlockMask

    partial, full = block_classes(q_len, k_len, window, sinks, q_offset, block_size, device, chunk)
    kv_num, kv_idx = _ordered(partial)
    full_num, full_idx = _ordered(full)
    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx,
        BLOCK_SIZE=block_size,
        mask_mod=flex_mask_mod(window, sinks, q_offset, device, chunk),
        seq_lengths=(q_len, k_len),
    )
