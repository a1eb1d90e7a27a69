"""Attention probabilities for chosen query rows only, without an L x L matrix.

``attention_probs_rows`` returns rows of softmax(cap(q k^T * scale) + mask) for a few queries at long
context, in O(nq * L) memory: pass 1 finds each row's max over key chunks, pass 2 writes
exp(score - max) chunk by chunk while summing, then the rows are divided by their sums. The mask
(window, chunk, sinks) and the logit features (softcap, per-head sink logits in the denominator) are
those of ``kernels.attention``.
Helpers summarise rows: ``mass_on`` (attention mass on given keys), ``topk_keys``, ``entropy``.
All results are float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kernels.attention import check_logit_mods
from kernels.masks import allowed, check_chunk, check_window_sinks


def _check_rows(q_rows: torch.Tensor, k: torch.Tensor, query_positions: torch.Tensor, key_chunk: int) -> None:
    if q_rows.dim() != 4 or k.dim() != 4:
        raise ValueError("q_rows must be [B, Hq, nq, D] and k [B, Hkv, L, D] (4-d tensors)")
    b, hq, nq, d = q_rows.shape
    if k.shape[0] != b or k.shape[3] != d:
        raise ValueError(f"k batch/dim must match q_rows: q_rows {tuple(q_rows.shape)}, k {tuple(k.shape)}")
    if k.shape[1] < 1 or hq % k.shape[1] != 0:
        raise ValueError(f"q_rows heads ({hq}) must be a multiple of k heads ({k.shape[1]})")
    if query_positions.dim() != 1 or query_positions.shape[0] != nq:
        raise ValueError(f"query_positions must be a 1-d integer tensor of length nq={nq}")
    if query_positions.is_floating_point() or query_positions.dtype == torch.bool:
        raise ValueError(f"query_positions must hold integers, got {query_positions.dtype}")
    length = k.shape[2]
    if nq and (int(query_positions.min()) < 0 or int(query_positions.max()) >= length):
        raise ValueError(f"query_positions must lie in [0, {length - 1}] (key length {length})")
    if isinstance(key_chunk, bool) or not isinstance(key_chunk, int) or key_chunk < 1:
        raise ValueError(f"key_chunk must be an int >= 1, got {key_chunk!r}")


def attention_probs_rows(
    q_rows: torch.Tensor,
    k: torch.Tensor,
    query_positions: torch.Tensor | Sequence[int],
    window: int | None = None,
    sinks: int = 0,
    scale: float | None = None,
    key_chunk: int = 8192,
    chunk: int | None = None,
    softcap: float | None = None,
    sink_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Float32 [B, Hq, nq, L]: the rows at ``query_positions`` of softmax(cap(q k^T * scale) + mask).

    q_rows [B, Hq, nq, D] are the queries at absolute positions ``query_positions`` ([nq] ints);
    k [B, Hkv, L, D] (GQA: query head h uses key head h // (Hq // Hkv)). The mask is the causal
    window/chunk/sinks rule of kernels/masks.py; ``softcap`` c turns a scaled score s into
    c * tanh(s / c); ``sink_logits`` [Hq] join each row's denominator (its weights then sum to < 1).
    ``key_chunk`` is the keys per scratch slice. Memory O(nq * L) plus O(nq * key_chunk) scratch.
    """
    query_positions = torch.as_tensor(query_positions, device=q_rows.device)
    _check_rows(q_rows, k, query_positions, key_chunk)
    window, sinks = check_window_sinks(window, sinks)
    chunk = check_chunk(chunk)
    softcap, sink_logits = check_logit_mods(softcap, sink_logits, q_rows.shape[1])
    b, hq, nq, d = q_rows.shape
    hkv, length = k.shape[1], k.shape[2]
    group = hq // hkv
    scale = d**-0.5 if scale is None else scale
    q5 = q_rows.float().reshape(b, hkv, group, nq, d)  # head h = kv * group + g
    qpos = query_positions.long().to(q_rows.device, non_blocking=True)[:, None]

    def chunk_scores(start: int) -> torch.Tensor:
        stop = min(start + key_chunk, length)
        kc = k[:, :, start:stop].float().unsqueeze(2)  # [B, Hkv, 1, c, D]
        s = torch.matmul(q5, kc.transpose(-1, -2)).reshape(b, hq, nq, stop - start) * scale
        if softcap is not None:
            s = torch.tanh(s / softcap) * softcap
        kpos = torch.arange(start, stop, device=q_rows.device)[None, :]
        return s.masked_fill(~allowed(qpos, kpos, window, sinks, chunk), float("-inf"))

    starts = range(0, length, key_chunk)
    row_max = torch.full((b, hq, nq, 1), float("-inf"), device=q_rows.device)
    sink = None
    if sink_logits is not None:  # the sink logit joins the max and the sum
        sink = sink_logits.float().to(q_rows.device).reshape(1, hq, 1, 1)
        row_max = sink.expand(b, hq, nq, 1).clone()
    for start in starts:  # pass 1: max over keys (finite: every query sees itself)
        row_max = torch.maximum(row_max, chunk_scores(start).amax(-1, keepdim=True))
    out = torch.empty((b, hq, nq, length), dtype=torch.float32, device=q_rows.device)
    row_sum = torch.zeros((b, hq, nq, 1), device=q_rows.device) if sink is None else torch.exp(sink - row_max)
    for start in starts:  # pass 2: exp(score - max), summed
        e = torch.exp(chunk_scores(start) - row_max)
        out[..., start : start + e.shape[-1]] = e
        row_sum += e.sum(-1, keepdim=True)
    return out.div_(row_sum)


def mass_on(
    probs: torch.Tensor, positions: torch.Tensor | Sequence[int] | Sequence[Sequence[int]]
) -> torch.Tensor:
    """Float32 [B, H, nq]: total probability each row puts on the given key positions.

    ``positions`` is either one set of key indices shared by every query (1-d ints), or one set
    per query row (a sequence of nq sequences, or a 2-d [nq, m] tensor). Repeated indices count once.
    """
    if probs.dim() != 4:
        raise ValueError(f"probs must be [B, H, nq, L], got shape {tuple(probs.shape)}")
    nq, length = probs.shape[2], probs.shape[3]
    if isinstance(positions, torch.Tensor):
        per_query = positions.dim() == 2
    else:
        per_query = any(isinstance(p, (Sequence, torch.Tensor)) for p in positions)
    lists = list(positions) if per_query else [positions]
    if per_query and len(lists) != nq:
        raise ValueError(f"positions: per-query lists must number nq={nq}, got {len(lists)}")
    select = torch.zeros((len(lists), length), dtype=torch.float32, device=probs.device)
    for row, idx in enumerate(lists):
        idx = torch.as_tensor(idx, dtype=torch.long, device=probs.device).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= length):
            raise ValueError(f"positions must lie in [0, {length - 1}] (key length {length})")
        select[row, idx] = 1.0
    return (probs.float() * select).sum(-1)


def topk_keys(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights float32, indices int64), each [..., min(k, L)], largest probability first."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    weights, indices = torch.topk(probs.float(), min(k, probs.shape[-1]), dim=-1, largest=True, sorted=True)
    return weights, indices


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Float32 [...] (e.g. [B, H, nq]): Shannon entropy of each row in nats, with 0 log 0 = 0."""
    p = probs.float()
    return -torch.special.xlogy(p, p).sum(-1)
