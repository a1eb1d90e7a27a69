"""Greedy decoding by full recompute: the one generation function (probes, tests, the zoo)."""

from __future__ import annotations

import torch
from torch import nn

from models.adapters import adapter_for, layer_info, own_logits


@torch.inference_mode()
def greedy_generate(
    model: nn.Module, ids: torch.LongTensor, max_new_tokens: int, eos_id: int | None = None
) -> torch.LongTensor:
    """Append up to ``max_new_tokens`` argmax tokens to ``ids`` [B, L] -> [B, L + n].

    Each step re-runs the whole sequence (no KV cache), so the continuation is exact under any
    ablation, including receptive-field limits that a cache would not honour. With ``eos_id`` (one
    sequence only) decoding stops before an ``eos_id`` would be appended. A model whose layers the adapters
    do not know (``layer_info`` None) decodes with its own forward's logits.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: must be >= 0, got {max_new_tokens}")
    if eos_id is not None and ids.shape[0] != 1:
        raise ValueError(f"eos_id: stopping at an end token needs one sequence, got a batch of {ids.shape[0]}")
    adapter = adapter_for(model)
    own = layer_info(model) is None
    decoder = None if own else adapter.decoder()
    for _ in range(max_new_tokens):
        if own:
            logits = own_logits(model, ids, last=1)
        else:
            logits = adapter.logits(decoder(input_ids=ids).last_hidden_state[:, -1:])
        nxt = logits.float().argmax(-1).to(ids.dtype)  # [B, 1]
        if eos_id is not None and int(nxt[0, 0]) == eos_id:
            break
        ids = torch.cat([ids, nxt], dim=1)
    return ids
