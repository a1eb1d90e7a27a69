"""Model forwards the probes share: hidden states and per-token NLL without full-vocab logits for all
positions at once. Every model is reached through its adapter (decoder + loss head); a model whose layers
the adapters do not know (``models.adapters.layer_info`` is None: plain probes, the empty ablation) runs its
own forward, and its output logits are the loss head (``models.adapters.own_logits``; O(L x vocab) logits then).

``token_nll`` remembers its last few results per model: the runs of one document (token_loss, the
key_tokens long pass, the longppl pass of an unablated model) ask for the same NLL, and a repeat is
answered without a forward, with the very tensor values a forward would give. A result is reused only
for the same ids, the same plans in force (or none), the same attention implementation and the same
weights (each parameter's storage and version counter, so an in-place update or a dtype cast is a new
key), in eval mode, without autocast and with no capture active; anything else recomputes.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict

import torch
import torch.nn.functional as F

from models.adapters import adapter_for, layer_info, model_state, own_logits

NLL_CACHE_SIZE = 4  # results kept per model
_NLL_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> OrderedDict(key -> nll)


@torch.inference_mode()
def hidden_states(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Final-norm hidden states [B, L, H] (the input of the LM head)."""
    return adapter_for(model).decoder()(input_ids=ids).last_hidden_state


def plain(model: torch.nn.Module) -> bool:
    """Whether ``model`` runs through its own forward only (the adapters do not know its layers)."""
    return layer_info(model) is None


def nll_from_logits(logits: torch.Tensor, ids: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """NLL [B, L-1] (nats, float32) of token t+1 from ``logits`` [B, L, vocab] at t, ``chunk`` positions at a time."""
    out = torch.empty(ids.shape[0], ids.shape[1] - 1, dtype=torch.float32, device=ids.device)
    for s in range(0, ids.shape[1] - 1, chunk):
        e = min(s + chunk, ids.shape[1] - 1)
        nll = F.cross_entropy(logits[:, s:e].float().flatten(0, 1), ids[:, s + 1 : e + 1].flatten(), reduction="none")
        out[:, s:e] = nll.view(ids.shape[0], e - s)
    return out


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
    """Per-token NLL [B, L-1] of a batch of unpadded sequences (a repeat comes from the cache, see above)."""
    key = _nll_key(model, ids, chunk)
    cache = _NLL_CACHE.setdefault(model, OrderedDict()) if key is not None else None
    if cache is not None and key in cache:
        cache.move_to_end(key)
        return cache[key].clone()
    if plain(model):
        with torch.inference_mode():
            out = nll_from_logits(own_logits(model, ids), ids, chunk)
    else:
        out = nll_from_hidden(model, hidden_states(model, ids), ids, chunk)
    if cache is not None:
        cache[key] = out.clone()
        while len(cache) > NLL_CACHE_SIZE:
            cache.popitem(last=False)
    return out


def _nll_key(model: torch.nn.Module, ids: torch.Tensor, chunk: int) -> tuple | None:
    """Everything token_nll's result depends on, or None when it must not be cached."""
    state = model_state(model)
    if model.training or state.captured or torch.is_autocast_enabled(ids.device.type):
        return None
    weights = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in model.parameters())
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return (state.plans, attn, weights, chunk, tuple(ids.shape), ids.dtype, str(ids.device),
            ids.detach().cpu().numpy().tobytes())
