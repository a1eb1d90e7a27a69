"""Model forwards the probes share: hidden states, per-token NLL without full-vocab logits for all
positions at once, and greedy decoding. Work for native models and HF CausalLMs alike."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _parts(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    base = getattr(model, "model", None) or model.get_decoder()
    head = model.get_output_embeddings()
    return base, head


@torch.inference_mode()
def hidden_states(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Final-norm hidden states [B, L, H] (the input of the LM head)."""
    base, _ = _parts(model)
    return base(input_ids=ids).last_hidden_state


@torch.inference_mode()
def nll_from_hidden(
    model: torch.nn.Module, hidden: torch.Tensor, ids: torch.Tensor, chunk: int = 8192
) -> torch.Tensor:
    """NLL (nats, float32) of token t+1 given tokens <= t, for t = 0..L-2: shape [B, L-1].

    The LM head runs on ``chunk`` positions at a time, so memory stays O(chunk x vocab).
    """
    _, head = _parts(model)
    out = torch.empty(ids.shape[0], ids.shape[1] - 1, dtype=torch.float32, device=ids.device)
    for s in range(0, ids.shape[1] - 1, chunk):
        e = min(s + chunk, ids.shape[1] - 1)
        logits = head(hidden[:, s:e]).float()  # [B, n, vocab]; flattened so the softmax runs on the last dim
        nll = F.cross_entropy(logits.flatten(0, 1), ids[:, s + 1 : e + 1].flatten(), reduction="none")
        out[:, s:e] = nll.view(ids.shape[0], e - s)
    return out


def token_nll(model: torch.nn.Module, ids: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Per-token NLL [B, L-1] of a batch of unpadded sequences."""
    return nll_from_hidden(model, hidden_states(model, ids), ids, chunk)


@torch.inference_mode()
def greedy_generate(
    model: torch.nn.Module, ids: torch.Tensor, max_new_tokens: int, eos_id: int | None = None
) -> list[int]:
    """Greedy continuation of one sequence [1, L] by full recomputation (no cache: exact under any
    ablation, including receptive-field limits that a KV cache would not honour)."""
    _, head = _parts(model)
    out: list[int] = []
    cur = ids
    for _ in range(max_new_tokens):
        h = hidden_states(model, cur)[:, -1:]
        nxt = int(head(h).float().argmax(-1)[0, 0])
        if eos_id is not None and nxt == eos_id:
            break
        out.append(nxt)
        cur = torch.cat([cur, torch.tensor([[nxt]], device=cur.device, dtype=cur.dtype)], dim=1)
    return out
