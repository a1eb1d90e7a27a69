"""Adapters: the one interface through which HybridScope reaches every model (native and HF).

``adapter_for(model)`` picks the adapter class registered for ``model.config.model_type`` (``native``
for the native family, a small file per HF family with real differences) and falls back to the
generic :class:`~models.adapters.hf.HFAdapter`, which any HF decoder of attention layers built the
usual way satisfies. ``describe(config)`` says what an adapter supports from a config alone.
"""

from __future__ import annotations

from torch import nn

from models.adapters import cohere2, exaone4, gpt_oss, hf_hybrid, llama4, native  # noqa: F401  (register the families)
from models.adapters.base import REGISTRY, ModelAdapter, UnsupportedModel, model_state
from models.adapters.hf import HFAdapter
from models.adapters.hf_attention import ATTN_NAME
from models.adapters.paper import PaperAdapter, has_knobs

__all__ = [
    "ATTN_NAME", "ModelAdapter", "UnsupportedModel", "adapter_class_for", "adapter_for", "describe", "model_state",
    "supported_model_types",
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


def describe(config) -> dict:
    """What HybridScope can do with a model of this config, without loading weights: its layer types,
    the ablation fields that apply, what its attention needs that the kernel lacks (so window / sinks
    changes on attention layers are refused), and (``supported: False``) the one line naming what is
    missing."""
    cls = adapter_class_for(config)
    try:
        info = cls.info_for(config)
    except UnsupportedModel as e:
        return {"adapter": cls.family, "supported": False, "reason": str(e), "toggles": [], "kernel_gaps": []}
    return {"adapter": cls.family, "supported": True, "layer_types": list(info.layer_types),
            "toggles": cls.toggles_for(config, info), "kernel_gaps": cls.kernel_gaps(config), "reason": None}
