"""Greedy decoding for the native hybrid by full recompute (the model has no KV cache)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def greedy_generate(model: nn.Module, ids: torch.LongTensor, n: int) -> torch.LongTensor:
    """Append ``n`` argmax tokens to ``ids`` [B, L]; each step re-runs the whole sequence -> [B, L+n]."""
    if n < 0:
        raise ValueError(f"n: must be >= 0, got {n}")
    for _ in range(n):
        logits = model(input_ids=ids, logits_to_keep=1).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True).to(ids.dtype)], dim=1)
    return ids
