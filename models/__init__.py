"""HybridScope models: the native hybrid family, the ablation plans it obeys, HF adapters.

Importing this package is cheap on purpose: ``app/`` imports ``models.ablation`` / ``models.plan``
and must never pull in torch or transformers. The native family (``HybridConfig`` /
``HybridModel`` / ``HybridForCausalLM``, model_type "hybridscope") is registered with
``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM`` when ``models.modeling`` is imported,
which also happens on first access to ``models.HybridConfig`` (or the other two names) and on
``import models.tiny``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["HybridConfig", "HybridModel", "HybridForCausalLM"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("models.modeling"), name)  # imports = registers
    raise AttributeError(f"module 'models' has no attribute {name!r}")
