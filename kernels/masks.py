"""Attention masks: causal, sliding window (HF semantics) and attention sinks.

A query at absolute position q may attend to a key at position k when

    k <= q  and  (window is None  or  q - k < window  or  k < sinks)

so window w means "the query itself and the w-1 previous tokens" (HF ``sliding_window``), and
sinks n keeps key positions 0..n-1 visible (causally) to windowed queries. With ``window=None``
the mask is plain causal and ``sinks`` changes nothing.

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
    q_pos: torch.Tensor | int, k_pos: torch.Tensor | int, window: int | None, sinks: int = 0
) -> torch.Tensor:
    """Bool tensor (broadcast of q_pos and k_pos): may the query at q_pos attend to the key at k_pos."""
    window, sinks = check_window_sinks(window, sinks)
    q_pos = torch.as_tensor(q_pos)
    k_pos = torch.as_tensor(k_pos)
    causal = k_pos <= q_pos
    if window is None:
        return causal
    visible = (q_pos - k_pos) < window
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
) -> torch.Tensor:
    """Bool [q_len, k_len]: query i (absolute position q_offset + i) may see key j (position j)."""
    q_len = _as_int("q_len", q_len, 0, "an int >= 0")
    k_len = _as_int("k_len", k_len, 0, "an int >= 0")
    q_offset = _as_int("q_offset", q_offset, 0, "an int >= 0")
    q_pos = torch.arange(q_offset, q_offset + q_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    return allowed(q_pos, k_pos, window, sinks)


def flex_mask_mod(
    window: int | None, sinks: int = 0, q_offset: int = 0, device: torch.device | str | None = None
) -> Callable[[Any, Any, torch.Tensor, torch.Tensor], torch.Tensor]:
    """FlexAttention mask_mod ``(b, h, q_idx, kv_idx) -> bool`` for the rule in the module docstring.

    window, sinks and q_offset are captured as 0-d int32 tensors on ``device`` (not Python ints),
    so a compiled flex_attention does not recompile for every new (window, sinks) pair: all
    masks made here share one code object and differ only in captured tensor values.
    """
    window, sinks = check_window_sinks(window, sinks)
    q_offset = _as_int("q_offset", q_offset, 0, "an int >= 0")
    w_t = torch.tensor(_NO_WINDOW if window is None else window, dtype=torch.int32, device=device)
    s_t = torch.tensor(sinks, dtype=torch.int32, device=device)
    off_t = torch.tensor(q_offset, dtype=torch.int32, device=device)

    def mask_mod(b: Any, h: Any, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        q_abs = q_idx + off_t
        return (kv_idx <= q_abs) & ((q_abs - kv_idx < w_t) | (kv_idx < s_t))

    return mask_mod


def block_classes(
    q_len: int, k_len: int, window: int | None, sinks: int = 0, q_offset: int = 0,
    block_size: int = 128, device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(partial, full) bool [ceil(q_len/bs), ceil(k_len/bs)] block maps, computed from block corners.

    A block is "full" when every (q, k) pair in it is allowed and the block lies wholly inside
    [0, q_len) x [0, k_len) (tail blocks are never full, as in torch's create_block_mask);
    "partial" when some but not all pairs are allowed. Cost O((L/bs)^2), no L x L tensor.
    """
    window, sinks = check_window_sinks(window, sinks)
    w = _NO_WINDOW if window is None else window
    nqb = -(-q_len // block_size)
    nkb = -(-k_len // block_size)
    qb = torch.arange(nqb, device=device)[:, None]
    kb = torch.arange(nkb, device=device)[None, :]
    q0 = qb * block_size + q_offset
    q1 = torch.clamp((qb + 1) * block_size, max=q_len) - 1 + q_offset
    k0 = kb * block_size
    k1 = torch.clamp((kb + 1) * block_size, max=k_len) - 1
    # q - k takes every integer value in [q0 - k1, q1 - k0]; the band needs one in [0, w - 1].
    any_band = (q1 >= k0) & (q0 - k1 <= w - 1)
    any_sink = (k0 < sinks) & (k0 <= q1)
    some = any_band | any_sink
    # All pairs allowed: all causal, and the farthest non-sink key still inside the window.
    first_non_sink = torch.maximum(k0, torch.full_like(k0, sinks))
    all_ok = (k1 <= q0) & ((first_non_sink > k1) | (q1 - first_non_sink <= w - 1))
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
    device: torch.device | str | None = None, block_size: int = 128,
) -> Any:
    """A FlexAttention ``BlockMask`` (batch/head broadcast) for the rule, built from block_classes.

    Equivalent to ``create_block_mask(flex_mask_mod(...), None, None, q_len, k_len)`` but never
    materialises the q_len x k_len mask (create_block_mask does), so it scales to long context.
    """
    from torch.nn.attention.flex_attention import BlockMask

    partial, full = block_classes(q_len, k_len, window, sinks, q_offset, block_size, device)
    kv_num, kv_idx = _ordered(partial)
    full_num, full_idx = _ordered(full)
    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx,
        BLOCK_SIZE=block_size,
        mask_mod=flex_mask_mod(window, sinks, q_offset, device),
        seq_lengths=(q_len, k_len),
    )
