"""What HybridScope can do with a model, from its config alone (no weights loaded).

``support(ref)`` is what ``python -m backend models`` prints per model: the adapter, whether it is
supported, its layer types and the ablation fields that apply, or one line naming what is missing.
``check_spec(spec)`` is the runner's early refusal: an ablation that the model's config already rules
out (a selector that selects nothing, an unsupported layer type, a toggle the kernel lacks) fails
before any weight is read.

Remote code (a checkpoint whose config.json ``auto_map`` names its own classes for a ``model_type``
transformers does not ship, e.g. the paper's released hybrids) runs only when the operator sets
``HYBRIDSCOPE_TRUST_REMOTE_CODE=1``; otherwise :func:`check_remote_code` refuses it with one line, before
any of its code or weights are read.
"""

from __future__ import annotations

import json
import os

import models.hf_optional  # noqa: F401  (before models.adapters: transformers without its scipy/sklearn imports)
from backend.model_refs import ModelRef, ModelRefError, resolve
from models.adapters import REFUSED, UnsupportedModel, adapter_class_for, describe

REMOTE_CODE_ENV = "HYBRIDSCOPE_TRUST_REMOTE_CODE"


def trust_remote_code() -> bool:
    """Whether the operator allows checkpoints' own code (``HYBRIDSCOPE_TRUST_REMOTE_CODE=1``)."""
    return os.environ.get(REMOTE_CODE_ENV) == "1"


def needs_remote_code(ref: ModelRef) -> str | None:
    """The code file a checkpoint's config.json asks transformers to run (its ``auto_map`` entry for
    AutoConfig or AutoModelForCausalLM) when transformers has no built-in class for its ``model_type``;
    None when it loads with transformers' (or the native family's) own code."""
    if ref.path is None:
        return None
    try:
        cfg = json.loads((ref.path / "config.json").read_text())
    except (OSError, ValueError):
        return None  # unreadable: AutoConfig says so
    auto = cfg.get("auto_map") if isinstance(cfg, dict) else None
    if not isinstance(auto, dict) or not auto:
        return None
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    import models.modeling  # noqa: F401  (the native family's model_type is built in)

    if cfg.get("model_type") in CONFIG_MAPPING:
        return None
    entry = auto.get("AutoModelForCausalLM") or auto.get("AutoConfig") or next(iter(auto.values()))
    return str(entry[0] if isinstance(entry, list | tuple) else entry)


def check_remote_code(ref: ModelRef) -> None:
    """Refuse (one line) a checkpoint that needs remote code unless the operator allows it."""
    entry = needs_remote_code(ref)
    if entry is not None and not trust_remote_code():
        raise ModelRefError(
            f"model: {ref.ref!r} runs its own code (config.json auto_map: {entry}); HybridScope loads remote "
            f"code only when the operator sets {REMOTE_CODE_ENV}=1"
        )


def load_config(ref: ModelRef):
    """The model's config (tiny refs: their native config); local files only, remote code only when
    allowed (:func:`check_remote_code`)."""
    if ref.path is None:
        from models.tiny import tiny_config

        return tiny_config(ref.pattern)
    check_remote_code(ref)
    from transformers import AutoConfig

    import models.modeling  # noqa: F401  (registers the native family with AutoConfig)

    return AutoConfig.from_pretrained(ref.path, local_files_only=True, trust_remote_code=trust_remote_code())


def support(ref_str: str) -> dict:
    """What ``python -m backend models`` prints for one model ref, from its config alone (no weight is
    read): ``{"ref", "model_type", "adapter", "supported", "layer_types", "toggles", "kernel_gaps",
    "remote_code", "reason", "status", "plain_probes"}``. ``status`` is ``supported`` (every probe and the
    listed toggles), ``plain_probes_only`` (the adapters do not know its layers: the empty ablation of the
    ``plain_probes`` still runs, through the model's own forward and head; ``reason`` says why there are no
    toggles) or ``refused`` (nothing runs; ``reason`` says why). ``reason`` is None when supported."""
    from backend.probes.registry import PLAIN_PROBES

    out = {"ref": ref_str, "model_type": None, "adapter": None, "supported": False, "layer_types": [],
           "toggles": [], "kernel_gaps": [], "remote_code": False, "reason": None, "status": REFUSED,
           "plain_probes": []}
    try:
        ref = resolve(ref_str)
        out["remote_code"] = needs_remote_code(ref) is not None
        check_remote_code(ref)
    except ModelRefError as e:
        return {**out, "reason": _line(e)}
    try:
        config = load_config(ref)
    except (OSError, ValueError) as e:
        return {**out, "reason": f"config: cannot be read ({_line(e)})"}
    described = describe(config)
    plain = list(PLAIN_PROBES) if described["status"] != REFUSED else []
    return {**out, "model_type": getattr(config, "model_type", None), **described, "plain_probes": plain}


def _line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def check_spec(spec) -> None:
    """Refuse, before loading weights, an ablation the config already rules out (AblationError or
    UnsupportedModel, one line each); remote code the operator did not allow is refused here too (a
    ModelRefError), and so is a model no probe can run (``refusal_for``: e.g. bidirectional attention). The
    empty ablation needs no adapter: plain probes (``PLAIN_PROBES``: token_loss, longppl, niah) run on any
    causal LM that loads, through its own forward and head; a probe that reads the model's layers
    (retrieval heads, sweeps, ...) on a model whose layers the adapters do not know is refused here, one
    line naming what is missing."""
    from backend.probes.registry import PLAIN_PROBES, PROBES

    ref = resolve(spec.model)
    check_remote_code(ref)
    plain = spec.ablation.is_empty and not PROBES[spec.probe].layers
    try:
        config = load_config(ref)
    except (OSError, ValueError):
        if plain:
            return  # loading says what is wrong with it
        raise
    cls = adapter_class_for(config)
    refusal = cls.refusal_for(config)  # nothing runs on it, not even the plain probes
    if refusal is not None:
        raise UnsupportedModel(f"model: {spec.model!r} cannot run in HybridScope: {refusal}")
    if plain:
        return
    try:
        info = cls.info_for(config)
    except UnsupportedModel as e:
        field = "ablation" if not spec.ablation.is_empty else "probe"
        what = (f"probe {spec.probe!r} reads the model's layers" if field == "probe"
                else "an ablation needs the model's layers")
        raise UnsupportedModel(f"{field}: {what}, and {e}; allowed on this model: the empty ablation with "
                               f"{', '.join(PLAIN_PROBES)}") from None
    if not spec.ablation.is_empty:
        cls.check_plans_for(config, info, spec.ablation.resolve(info))
