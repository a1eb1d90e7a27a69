"""What HybridScope can do with a model, from its config alone (no weights loaded).

``support(ref)`` is what ``python -m backend models`` prints per model: the adapter, whether it is
supported, its layer types and the ablation fields that apply, or one line naming what is missing.
``check_spec(spec)`` is the runner's early refusal: an ablation that the model's config already rules
out (a selector that selects nothing, an unsupported layer type, a toggle the kernel lacks) fails
before any weight is read.
"""

from __future__ import annotations

import os

from backend.model_refs import ModelRef, resolve
from models.adapters import UnsupportedModel, adapter_class_for, describe


def load_config(ref: ModelRef):
    """The model's config (tiny refs: their native config); local files only."""
    if ref.path is None:
        from models.tiny import tiny_config

        return tiny_config(ref.pattern)
    from transformers import AutoConfig

    import models.modeling  # noqa: F401  (registers the native family with AutoConfig)

    trust = os.environ.get("HYBRIDSCOPE_TRUST_REMOTE_CODE") == "1"
    return AutoConfig.from_pretrained(ref.path, local_files_only=True, trust_remote_code=trust)


def support(ref_str: str) -> dict:
    """``{"ref", "adapter", "supported", "layer_types", "toggles", "reason"}`` for one model ref."""
    try:
        config = load_config(resolve(ref_str))
    except (OSError, ValueError) as e:
        return {"ref": ref_str, "adapter": None, "supported": False, "toggles": [],
                "reason": f"config: cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__})"}
    return {"ref": ref_str, "model_type": getattr(config, "model_type", None), **describe(config)}


def check_spec(spec) -> None:
    """Refuse, before loading weights, an ablation the config already rules out (AblationError or
    UnsupportedModel, one line each). The empty ablation always passes: plain probes need no adapter."""
    if spec.ablation.is_empty:
        return
    config = load_config(resolve(spec.model))
    cls = adapter_class_for(config)
    try:
        info = cls.info_for(config)
    except UnsupportedModel as e:
        raise UnsupportedModel(f"ablation: {e}") from None
    spec.ablation.resolve(info)
