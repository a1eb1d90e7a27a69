"""Adapters: the one interface through which HybridScope reaches every model (native and HF).

``adapter_for(model)`` picks the adapter class registered for ``model.config.model_type`` (``native``
for the native family, a small file per HF family with real differences) and falls back to the
generic :class:`~models.adapters.hf.HFAdapter`, which any HF decoder of attention layers built the
usual way satisfies. ``describe(config)`` says what an adapter supports from a config alone.
"""

from __future__ import annotations

import contextlib
import inspect

import torch
from torch import nn

from models.adapters import cohere2, exaone4, gpt_oss, hf_hybrid, llama4, native  # noqa: F401  (register the families)
from models.adapters.base import REGISTRY, ModelAdapter, UnsupportedModel, model_state
from models.adapters.hf import HFAdapter
from models.adapters.hf_attention import ATTN_NAME
from models.adapters.no_cache import no_kv_cache
from models.adapters.paper import PaperAdapter, has_knobs

__all__ = [
    "ATTN_NAME", "PLAIN_ONLY", "REFUSED", "SUPPORTED", "ModelAdapter", "UnsupportedModel", "adapter_class_for",
    "adapter_for", "describe", "layer_info", "model_state", "own_logits", "supported_model_types",
]


def supported_model_types() -> list[str]:
    """The ``config.model_type`` values with an adapter of their own (others use the generic HF adapter)."""
    return sorted(REGISTRY)


def adapter_class_for(config) -> type[ModelAdapter]:
    """The adapter class for a config: its family's; else the paper checkpoints' (a config with
    ``eval_sliding_window``, :mod:`models.adapters.paper`); else the generic HF adapter."""
    cls = REGISTRY.get(getattr(config, "model_type", None))
    if cls is not None:
        return cls
    return PaperAdapter if has_knobs(config) else HFAdapter


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter for ``model``, chosen by ``model.config.model_type``."""
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"model: {type(model).__name__} has no config; HybridScope adapts transformers models")
    return adapter_class_for(config)(model)


def layer_info(model: nn.Module):
    """The adapter's :class:`~models.plan.ModelInfo` of ``model``, or None where the adapters do not know
    its layers (a layer kind or structure they lack: :class:`UnsupportedModel`). Then only the model's own
    forward serves, and its output logits are the loss head (plain probes, the empty ablation)."""
    adapter = adapter_for(model)  # a model no adapter may run at all (e.g. bidirectional) is refused here
    try:
        return adapter.info()
    except UnsupportedModel:
        return None


def own_logits(model: nn.Module, ids: torch.Tensor, last: int | None = None) -> torch.Tensor:
    """The model's own forward output logits [B, L, vocab] (whatever head it applies: logit scaling,
    softcapping, remote code's own): the loss head of a model :func:`layer_info` does not know. ``last``:
    only the last ``last`` positions (``logits_to_keep`` where the forward takes it). No KV cache
    (:func:`~models.adapters.no_cache.no_kv_cache`, where the forward takes ``use_cache``)."""
    extra = {"logits_to_keep": last} if last else {}
    params = inspect.signature(model.forward).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        extra = {k: v for k, v in extra.items() if k in params}
    with contextlib.ExitStack() as stack:
        no_kv_cache(stack, [model])
        logits = model(input_ids=ids, **extra).logits
    return logits[:, -last:] if last else logits


# what describe() says HybridScope can run on a model: every probe and toggle; only the plain probes (the
# empty ablation through the model's own forward and head: the adapters do not know its layers); nothing
SUPPORTED, PLAIN_ONLY, REFUSED = "supported", "plain_probes_only", "refused"


def describe(config) -> dict:
    """What HybridScope can do with a model of this config, without loading weights: ``status``
    (:data:`SUPPORTED`, :data:`PLAIN_ONLY` or :data:`REFUSED`), its layer types, the ablation fields that
    apply, what its attention needs that the kernel lacks (so window / sinks changes on attention layers
    are refused), and where not supported (``supported: False``) the one line naming what is missing:
    why there are no toggles (plain probes only) or why nothing runs (refused)."""
    cls = adapter_class_for(config)
    refusal = cls.refusal_for(config)
    if refusal is not None:
        return {"adapter": cls.family, "supported": False, "status": REFUSED, "reason": refusal, "toggles": [],
                "kernel_gaps": []}
    try:
        info = cls.info_for(config)
    except UnsupportedModel as e:
        return {"adapter": cls.family, "supported": False, "status": PLAIN_ONLY, "reason": str(e), "toggles": [],
                "kernel_gaps": []}
    return {"adapter": cls.family, "supported": True, "status": SUPPORTED, "layer_types": list(info.layer_types),
            "toggles": cls.toggles_for(config, info), "kernel_gaps": cls.kernel_gaps(config), "reason": None}
