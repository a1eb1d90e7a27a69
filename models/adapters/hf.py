"""The HF adapter: LayerPlans on real transformers checkpoints (decoders of stacked attention layers).

Nothing here touches weights. A plan changes behaviour only inside ``with adapter.apply(plans):``,
through transformers' ``AttentionInterface`` (the ``"hybridscope"`` attention function, switched on
only when some layer's window or sinks differ from the native ones, or ``force_kernel=True``) and
hooks (:mod:`models.adapters.hf_attention`). Hook-only ablations and the empty ablation run the
model's own attention path and reproduce its logits bit for bit. Family files subclass
:class:`HFAdapter` for real differences only (:meth:`layer_pe`, :meth:`enable_rope`,
:meth:`check_supported`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

from torch import nn

from models.adapters.base import ModelAdapter
from models.adapters.hf_attention import (
    ACTIVE_PLANS,
    ATTN_NAME,
    head_mask_pre_hook,
    nope_pre_hook,
    register_attention,
    skip_hook,
)
from models.adapters.hf_capture import start_capture
from models.capture import Capture
from models.plan import ATTENTION_KINDS, SWA, LayerPlan, ModelInfo


class HFAdapter(ModelAdapter):
    """Inference-time LayerPlans for one HF model family."""

    mixer_name = "self_attn"  # attribute of a decoder layer holding its mixer
    out_proj_name = "o_proj"  # attribute of the attention module: output projection

    # ---- family hooks
    def layer_pe(self, i: int) -> str:
        """Native positional encoding of attention layer ``i`` ("rope" unless the family says so)."""
        return "rope"

    def enable_rope(self, i: int) -> Callable[[], None]:
        """Turn RoPE on for natively NoPE layer ``i``; return a function that undoes it."""
        raise ValueError(
            f"plans[{i}].pe: layer {i} of this {self.family} model is natively NoPE and {self.family} "
            "cannot re-enable RoPE on it without changing model code; allowed: 'nope'"
        )

    # ---- structure
    def layers(self) -> nn.ModuleList:
        return self.model.base_model.layers

    def attention_module(self, i: int) -> nn.Module:
        return getattr(self.layers()[i], self.mixer_name)

    def decoder(self) -> nn.Module:
        return self.model.base_model

    def info(self) -> ModelInfo:
        cfg = self.config
        layer_types = tuple(cfg.layer_types)[: cfg.num_hidden_layers]
        windows: list[int | None] = []
        for i, kind in enumerate(layer_types):
            if kind not in ATTENTION_KINDS:
                raise ValueError(
                    f"config.layer_types[{i}]: {kind!r} is not supported by the {self.family} adapter; "
                    f"allowed: {', '.join(ATTENTION_KINDS)}"
                )
            if kind == SWA and not isinstance(cfg.sliding_window, int):
                raise ValueError(
                    f"config.sliding_window: sliding layer {i} needs an int, got {cfg.sliding_window!r}"
                )
            windows.append(cfg.sliding_window if kind == SWA else None)
        return ModelInfo(
            layer_types=layer_types,
            num_heads=(cfg.num_attention_heads,) * len(layer_types),
            windows=tuple(windows),
            pe=tuple(self.layer_pe(i) for i in range(len(layer_types))),
            conv_kernel=1,  # no short convolutions in attention-only families
        )

    def configs(self) -> list:
        """Every config object whose ``_attn_implementation`` the model may read."""
        found: list = []

        def add(cfg) -> None:
            if cfg is None or any(c is cfg for c in found) or not hasattr(cfg, "_attn_implementation_internal"):
                return
            found.append(cfg)
            for key in getattr(cfg, "sub_configs", {}) or {}:
                add(getattr(cfg, key, None))

        add(self.model.config)
        for m in self.model.modules():
            add(getattr(m, "config", None))
        return found

    # ---- application
    def _apply(
        self, plans: Sequence[LayerPlan], info: ModelInfo, stack: contextlib.ExitStack, force_kernel: bool = False
    ) -> None:
        """``force_kernel`` routes every attention layer through the hybridscope kernel even when no
        window/sinks change needs it (otherwise the model's own attention path is kept)."""
        needs_kernel = force_kernel or any(
            p.window != info.windows[i] or (p.window is not None and p.sinks > 0) for i, p in enumerate(plans)
        )
        if needs_kernel:
            self._switch_attention(plans, stack)
        self._install_hooks(plans, info, stack)

    def _switch_attention(self, plans: Sequence[LayerPlan], stack: contextlib.ExitStack) -> None:
        register_attention()
        saved = [
            (c, c._attn_implementation_internal, hasattr(c, "_attn_was_changed")) for c in self.configs()
        ]

        def restore() -> None:
            for cfg, impl, had_flag in saved:
                cfg._attn_implementation_internal = impl
                if not had_flag and hasattr(cfg, "_attn_was_changed"):
                    del cfg._attn_was_changed

        stack.callback(restore)
        for i, plan in enumerate(plans):
            module = self.attention_module(i)
            if getattr(module, "layer_idx", i) != i:
                raise RuntimeError(f"{self.family}: layer {i}'s attention has layer_idx {module.layer_idx}")
            ACTIVE_PLANS[module] = plan
            stack.callback(ACTIVE_PLANS.pop, module, None)
        self.model.set_attn_implementation(ATTN_NAME)
        stale = [
            i for i in range(len(plans)) if self.attention_module(i).config._attn_implementation != ATTN_NAME
        ]
        if stale:
            raise RuntimeError(
                f"{self.family}: could not switch layers {stale} to attn_implementation '{ATTN_NAME}' "
                "(model does not dispatch through transformers' AttentionInterface)"
            )

    def _install_hooks(self, plans: Sequence[LayerPlan], info: ModelInfo, stack: contextlib.ExitStack) -> None:
        for i, plan in enumerate(plans):
            attn = self.attention_module(i)
            if plan.pe != info.pe[i]:
                if plan.pe == "nope":
                    handle = attn.register_forward_pre_hook(nope_pre_hook, with_kwargs=True)
                    stack.callback(handle.remove)
                else:
                    stack.callback(self.enable_rope(i))
            if plan.skip:
                stack.callback(attn.register_forward_hook(skip_hook).remove)
            if plan.masked_heads:
                out_proj = getattr(attn, self.out_proj_name)
                hook = head_mask_pre_hook(sorted(set(plan.masked_heads)), attn.head_dim)
                stack.callback(out_proj.register_forward_pre_hook(hook).remove)

    # ---- capture
    def _capture(self, cap: Capture, stack: contextlib.ExitStack) -> None:
        start_capture(self, cap, stack)
