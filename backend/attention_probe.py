"""Attention probabilities of chosen query rows, computed during one forward pass.

Queries and keys are captured layer by layer (streaming: each layer's q/k are turned into the
requested rows of probabilities and dropped before the next layer runs), so memory is O(nq x L)
per layer on top of a plain forward, never L x L. The window / chunk / sinks of each layer's *current*
plan (after any ablation) and the layer's logit features (softcapping, learned sink logits:
``adapter.attention_logit_mods``) are applied, so the rows are exactly what the model attends with.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kernels.attention_rows import attention_probs_rows
from models.adapters import UnsupportedModel, adapter_for


@torch.inference_mode()
def row_probs(
    model: torch.nn.Module,
    ids: torch.Tensor,
    query_positions: list[int],
    layers: list[int] | None = None,
    reduce: Callable[[int, torch.Tensor], object] | None = None,
) -> dict[int, object]:
    """Forward ``ids`` [1, L]; for each attention layer return ``reduce(layer, probs)`` where
    probs is float32 [H, nq, L] (rows of softmax at ``query_positions``); default reduce = identity.

    Non-attention layers are absent from the result.
    """
    adapter = adapter_for(model)
    gaps = adapter.kernel_gaps(model.config)
    if gaps:
        raise UnsupportedModel(f"attention rows: this {adapter.family} model's attention uses {', '.join(gaps)}, "
                               "which HybridScope's row kernel does not have yet")
    logit_mods = getattr(adapter, "attention_logit_mods", lambda layer: {})
    plans = adapter.current_plans()
    attn_layers = [i for i, p in enumerate(plans) if p.is_attention]
    layers = attn_layers if layers is None else [i for i in layers if i in attn_layers]
    qpos_cpu = torch.tensor(query_positions, dtype=torch.long)  # validated on the host: no GPU sync
    qpos = qpos_cpu.to(ids.device)
    pending: dict[int, dict[str, torch.Tensor]] = {}
    out: dict[int, object] = {}

    def on_record(layer: int, name: str, t: torch.Tensor) -> None:
        slot = pending.setdefault(layer, {})
        slot[name] = t[:, :, qpos] if name == "q" else t
        if "q" in slot and "k" in slot:
            plan, q, k = plans[layer], slot["q"], slot["k"]
            del pending[layer]
            probs = attention_probs_rows(q, k, qpos_cpu, window=plan.window, sinks=plan.sinks, chunk=plan.chunk,
                                         scale=adapter.attention_scale(layer), **logit_mods(layer))[0]
            out[layer] = reduce(layer, probs) if reduce else probs

    with adapter.capture(names=("q", "k"), layers=layers, on_record=on_record):
        adapter.decoder()(input_ids=ids, use_cache=False)  # HF: no KV cache (4 GiB of k/v at 128K, bf16)
    return out
