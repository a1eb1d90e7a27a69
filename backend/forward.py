"""Model forwards the probes share: hidden states and per-token NLL without full-vocab logits for all
positions at once. Every model is reached through its adapter (decoder + loss head)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.adapters import adapter_for


@torch.inference_mode()
def hidden_states(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Final-norm hidden states [B, L, H] (the input of the LM head)."""
    return adapter_for(model).decoder()(input_ids=ids).last_hidden_state


@torch.inference_mode()
def nll_from_hidden(
    model: torch.nn.Module, hidden: torch.Tensor, ids: torch.Tensor, chunk: int = 8192
) -> torch.Tensor:
    """NLL (nats, float32) of token t+1 given tokens <= t, for t = 0..L-2: shape [B, L-1].

    The LM head runs on ``chunk`` positions at a time, so memory stays O(chunk x vocab).
    """
    adapter = adapter_for(model)
    out = torch.empty(ids.shape[0], ids.shape[1] - 1, dtype=torch.float32, device=ids.device)
    for s in range(0, ids.shape[1] - 1, chunk):
        e = min(s + chunk, ids.shape[1] - 1)
        logits = adapter.logits(hidden[:, s:e]).float()  # [B, n, vocab], flattened: softmax on the last dim
        nll = F.cross_entropy(logits.flatten(0, 1), ids[:, s + 1 : e + 1].flatten(), reduction="none")
        out[:, s:e] = nll.view(ids.shape[0], e - s)
    return out


def token_nll(model: torch.nn.Module, ids: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Per-token NLL [B, L-1] of a batch of unpadded sequences."""
    return nll_from_hidden(model, hidden_states(model, ids), ids, chunk)
