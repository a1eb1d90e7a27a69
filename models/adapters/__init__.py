"""Adapters: the one interface through which HybridScope reaches every model (native and HF).

``adapter_for(model)`` picks the adapter of ``model.config.model_type``; one file per family
registers itself in ``base.REGISTRY`` (``native`` for the native family, ``hf`` for the generic
HF decoder of attention layers, plus a small file per HF family with real differences).
"""

from __future__ import annotations

from torch import nn

from models.adapters import gemma3, native, qwen3, smollm3  # noqa: F401  (register the families)
from models.adapters.base import REGISTRY, ModelAdapter, model_state
from models.adapters.hf_attention import ATTN_NAME

__all__ = ["ATTN_NAME", "ModelAdapter", "adapter_for", "model_state", "supported_model_types"]


def supported_model_types() -> list[str]:
    """The ``config.model_type`` values that have an adapter."""
    return sorted(REGISTRY)


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter for ``model``, chosen by ``model.config.model_type``."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    cls = REGISTRY.get(model_type)
    if cls is None:
        raise ValueError(
            f"model.config.model_type: no HybridScope adapter for {model_type!r}; "
            f"supported: {', '.join(supported_model_types())}"
        )
    return cls(model)
