"""The HF adapter: LayerPlans on real transformers checkpoints (decoders of stacked attention layers).

Nothing here touches weights. A plan changes behaviour only inside ``with adapter.apply(plans):``,
through transformers' ``AttentionInterface`` (the ``"hybridscope"`` attention function, switched on
only when some layer's window or sinks differ from the native ones, or ``force_kernel=True``) and
hooks (:mod:`models.adapters.hf_attention`). Hook-only ablations and the empty ablation run the
model's own attention path and reproduce its logits bit for bit, except for full-sequence forwards of
at least ``long_context`` tokens (default :data:`~models.adapters.hf_attention.LONG_CONTEXT_TOKENS`,
16,384): those run HybridScope's kernel with the native plans, so no dense L x L mask is built (equal
to HF's path within float rounding; ``long_context=None`` keeps HF's path at every length). Family
files subclass :class:`HFAdapter` for real differences only (:meth:`layer_pe`, :meth:`enable_rope`,
:meth:`refusal_for`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

from models.adapters.base import ModelAdapter, UnsupportedModel
from models.adapters.hf_attention import (
    ACTIVE_PLANS,
    ATTN_NAME,
    LONG_CONTEXT_TOKENS,
    head_mask_pre_hook,
    nope_pre_hook,
    register_attention,
    register_long,
    skip_hook,
)
from models.adapters.hf_capture import start_capture
from models.capture import Capture
from models.plan import ATTENTION_KINDS, CHUNKED, FULL, HYBRID, SWA, LayerPlan, ModelInfo


class HFAdapter(ModelAdapter):
    """Inference-time LayerPlans for HF decoders of attention layers, driven by the loaded config's
    ``layer_types`` vocabulary (``full_attention`` / ``sliding_attention`` / ``chunked_attention``), its
    ``sliding_window`` / ``attention_chunk_size`` / ``no_rope_layers``, and transformers' attention
    interface. Any family built that way works without a family file."""

    family = "HF"
    mixer_name = "self_attn"  # attribute of a decoder layer holding its attention
    out_proj_name = "o_proj"  # attribute of the attention module: output projection

    # ---- family hooks (config-only: support is known before any weight is loaded)
    @classmethod
    def layer_kinds(cls, cfg) -> list[str]:
        """HF ``layer_types`` of the text config; without them, every layer is sliding when the config
        sets an int ``sliding_window`` (Mistral, Phi-3: config-time window), else full."""
        n = cfg.num_hidden_layers
        kinds = getattr(cfg, "layer_types", None)
        if kinds is not None:
            return list(kinds)[:n]
        sliding = isinstance(getattr(cfg, "sliding_window", None), int) and getattr(cfg, "use_sliding_window", True)
        return [SWA if sliding else FULL] * n

    @classmethod
    def layer_pe(cls, cfg, i: int, kind: str) -> str:
        """Native positional encoding of attention layer ``i``: ``no_rope_layers[i] == 0`` means NoPE
        (SmolLM3, Llama 4), else RoPE."""
        no_rope = getattr(cfg, "no_rope_layers", None)
        return "nope" if no_rope is not None and not no_rope[i] else "rope"

    def enable_rope(self, i: int) -> Callable[[], None]:
        """Turn RoPE on for natively NoPE layer ``i``; return a function that undoes it. Generic: flip
        the attention module's ``use_rope`` flag where its forward reads one (SmolLM3)."""
        attn = self.attention_module(i)
        if self.flag_enables_rope and hasattr(attn, "use_rope"):
            previous = attn.use_rope
            attn.use_rope = 1
            return lambda: setattr(attn, "use_rope", previous)
        raise ValueError(
            f"plans[{i}].pe: layer {i} of this {self.family} model is natively NoPE and {self.family} "
            "cannot re-enable RoPE on it without changing model code; allowed: 'nope'"
        )

    flag_enables_rope = True  # False where ``use_rope`` also switches other behaviour (Llama 4)

    @classmethod
    def refusal_for(cls, config) -> str | None:
        if getattr(cls.text_config(config), "use_bidirectional_attention", False):
            return "config.use_bidirectional_attention: only causal (False) models are supported"
        return None

    @classmethod
    def text_config(cls, config):
        return config.get_text_config() if hasattr(config, "get_text_config") else config

    @classmethod
    def info_for(cls, config) -> ModelInfo:
        cfg = cls.text_config(config)
        kinds = cls.layer_kinds(cfg)
        windows: list[int | None] = []
        chunks: list[int | None] = []
        for i, kind in enumerate(kinds):
            if kind not in ATTENTION_KINDS or kind == HYBRID:  # hybrid layers: their family's adapter
                raise UnsupportedModel(
                    f"config.layer_types[{i}]: {kind!r} layers are not supported by the {cls.family} adapter "
                    f"(model_type {getattr(config, 'model_type', '?')!r}); supported layer types: "
                    f"{', '.join(k for k in ATTENTION_KINDS if k != HYBRID)}"
                )
            if kind == SWA and not isinstance(cfg.sliding_window, int):
                raise UnsupportedModel(
                    f"config.sliding_window: sliding layer {i} needs an int, got {cfg.sliding_window!r}"
                )
            if kind == CHUNKED and not isinstance(getattr(cfg, "attention_chunk_size", None), int):
                raise UnsupportedModel(f"config.attention_chunk_size: chunked layer {i} needs an int")
            windows.append(cfg.sliding_window if kind == SWA else None)
            chunks.append(cfg.attention_chunk_size if kind == CHUNKED else None)
        return ModelInfo(
            layer_types=tuple(kinds),
            num_heads=(cfg.num_attention_heads,) * len(kinds),
            windows=tuple(windows),
            pe=tuple(cls.layer_pe(cfg, i, k) for i, k in enumerate(kinds)),
            conv_kernel=1,  # no short convolutions in attention-only families
            chunks=tuple(chunks) if any(c is not None for c in chunks) else None,
        )

    # ---- structure
    def decoder(self) -> nn.Module:
        """The text decoder (the language model of a multimodal checkpoint); ``get_decoder()``, or the base
        model where a family's ``get_decoder()`` returns the whole LM (Llama 4)."""
        dec = self.model.get_decoder()
        if dec is not self.model and hasattr(dec, "layers"):
            return dec
        return getattr(self.model, "model", None) or self.model.base_model

    def layers(self) -> nn.ModuleList:
        return self.decoder().layers

    def attention_module(self, i: int) -> nn.Module:
        return getattr(self.layers()[i], self.mixer_name)

    def mixer_outputs(self, i: int) -> list[tuple[nn.Module, float]]:
        """The modules whose outputs, scaled and summed, are layer ``i``'s mixer output (the "mixer_out"
        capture): the attention module here; recurrent / hybrid families say more."""
        return [(self.attention_module(i), 1.0)]

    def attention_logit_mods(self, i: int) -> dict:
        """What attention layer ``i`` does to its logits beyond the mask, as the kernels' keywords:
        ``softcap`` (config ``attn_logit_softcapping``, Gemma 2) and ``sink_logits`` [heads] (a learned
        ``sinks`` parameter on the attention module, gpt-oss); absent where the layer has none."""
        out = {}
        cap = getattr(self.attention_module(i), "attn_logit_softcapping", None)
        if cap is None:
            cap = getattr(self.text_config(self.config), "attn_logit_softcapping", None)
        if cap is not None:
            out["softcap"] = float(cap)
        sinks = getattr(self.attention_module(i), "sinks", None)
        if isinstance(sinks, torch.Tensor):
            out["sink_logits"] = sinks.detach().reshape(-1)
        return out

    def rope_scale(self) -> float:
        """The magnitude the model's rotary embedding gives (cos, sin): its ``attention_scaling`` (YaRN's
        mscale, e.g. gpt-oss), 1.0 for plain RoPE. NoPE keeps it, removing only the rotation."""
        scales = {float(m.attention_scaling) for m in self.decoder().modules()
                  if hasattr(m, "inv_freq") and hasattr(m, "attention_scaling")}
        if len(scales) > 1:
            raise UnsupportedModel(f"pe: this {self.family} model's rotary embeddings scale differently ({scales})")
        return scales.pop() if scales else 1.0

    def logits(self, hidden):
        """The model's own head: the LM head, then the config's logit scale (Cohere), logits scaling
        (Granite) or final-logit softcapping (Gemma 2/3/3n), as the HF forward applies them."""
        out = self.lm_head()(hidden)
        cfg = self.text_config(self.config)
        scale = getattr(cfg, "logit_scale", None)
        if scale is not None:
            out = out * scale
        divisor = getattr(cfg, "logits_scaling", None)
        if divisor is not None:
            out = out / divisor
        cap = getattr(cfg, "final_logit_softcapping", None)
        if cap is not None:
            out = torch.tanh(out / cap) * cap
        return out

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
        self, plans: Sequence[LayerPlan], info: ModelInfo, stack: contextlib.ExitStack, force_kernel: bool = False,
        long_context: int | None = LONG_CONTEXT_TOKENS,
    ) -> None:
        """``force_kernel`` routes every attention layer through the hybridscope kernel even when no
        window / chunk / sinks change needs it. Otherwise the model's own attention path is kept, except
        for full-sequence forwards of at least ``long_context`` tokens (None: never), which run the kernel."""
        needs_kernel = force_kernel or any(
            p.window != info.windows[i] or p.chunk != info.chunk_of(i) or (p.window is not None and p.sinks > 0)
            for i, p in enumerate(plans) if p.is_attention
        )
        if needs_kernel:
            self._switch_attention(plans, stack)
        elif long_context is not None:
            self._route_long(plans, stack, long_context)
        self._install_hooks(plans, info, stack)

    def _route_long(self, plans: Sequence[LayerPlan], stack: contextlib.ExitStack, threshold: int) -> None:
        """Every config runs ``hybridscope_long@<threshold>(<its implementation>)`` (see
        :mod:`models.adapters.hf_attention`); nothing is routed where the kernel lacks a feature of this
        family, or where an attention module serves more than one layer."""
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ValueError(f"long_context: expected None or an int >= 1, got {threshold!r}")
        attention = [i for i, plan in enumerate(plans) if plan.is_attention]
        modules = [self.attention_module(i) for i in attention]
        if (not attention or self.kernel_gaps(self.config) or len({id(m) for m in modules}) != len(modules)
                or any(getattr(m, "layer_idx", i) != i for i, m in zip(attention, modules))):
            return
        saved = [(c, c._attn_implementation_internal) for c in self.configs()]
        if any(impl is not None and impl.startswith("hybridscope") for _, impl in saved):
            return  # already one of ours (set by hand): leave it
        stack.callback(lambda: [setattr(c, "_attn_implementation_internal", impl) for c, impl in saved])
        for i, module in zip(attention, modules):
            ACTIVE_PLANS[module] = plans[i]
            stack.callback(ACTIVE_PLANS.pop, module, None)
        for cfg, impl in saved:
            cfg._attn_implementation_internal = register_long(impl, threshold)

    def _switch_attention(self, plans: Sequence[LayerPlan], stack: contextlib.ExitStack) -> None:
        gaps = self.kernel_gaps(self.config)
        if gaps:
            missing = ", ".join(gaps)
            raise UnsupportedModel(
                f"ablation: window / sinks / receptive-field changes on the attention layers of this "
                f"{self.family} model need {missing}, which HybridScope's attention kernel does not have yet; "
                "allowed here: pe, skip_layers, mask_heads"
            )
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
        attention = [i for i, plan in enumerate(plans) if plan.is_attention]
        for i in attention:
            plan, module = plans[i], self.attention_module(i)
            if getattr(module, "layer_idx", i) != i:
                raise RuntimeError(f"{self.family}: layer {i}'s attention has layer_idx {module.layer_idx}")
            ACTIVE_PLANS[module] = plan
            stack.callback(ACTIVE_PLANS.pop, module, None)
        self.model.set_attn_implementation(ATTN_NAME)
        stale = [i for i in attention if self.attention_module(i).config._attn_implementation != ATTN_NAME]
        if stale:
            raise RuntimeError(
                f"{self.family}: could not switch layers {stale} to attn_implementation '{ATTN_NAME}' "
                "(model does not dispatch through transformers' AttentionInterface)"
            )

    def _install_hooks(self, plans: Sequence[LayerPlan], info: ModelInfo, stack: contextlib.ExitStack) -> None:
        for i, plan in enumerate(plans):
            if not plan.is_attention:  # recurrent layers: their family's adapter
                continue
            attn = self.attention_module(i)
            if plan.pe != info.pe[i]:
                if plan.pe == "nope":
                    handle = attn.register_forward_pre_hook(nope_pre_hook(self.rope_scale()), with_kwargs=True)
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
