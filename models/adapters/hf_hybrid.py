"""The HF adapter for recurrent and hybrid decoders: HF layer types -> HybridScope's specific kinds.

:class:`HybridHFAdapter` extends the generic :class:`~models.adapters.hf.HFAdapter` (which keeps the
attention layers: kernel switch, NoPE, skips, head masks) with the recurrent layers. A family file
says only what differs: which HF layer types are which mixer (``kinds``), where the mixer sits in a
decoder layer, its conv width and head count, all from the config (support is known before weights
load). Per recurrent layer, inside ``apply()``:

* ``receptive_field`` (or a hybrid layer's ``recurrent_field``) = k: the mixer's forward is replaced by
  its handler (:mod:`models.adapters.recurrent`), the same weights through HybridScope's windowed
  kernels, exactly the native definition (nothing older than k tokens, the conv's K-1 reach counted).
  Unrestricted layers run HF's own forward untouched (``force_kernel=True`` routes them through the
  handlers unrestricted, which the parity tests hold to HF's forward).
* ``skip``: the mixer output is zeroed (a forward hook); a hybrid layer's both branches (their sum);
  a layer without a token mixer (Nemotron-H ``mlp`` / ``moe``) has its block output zeroed.
* ``masked_heads``: that head's slice of the output projection's input is zeroed (a pre-hook), i.e.
  exactly zeroed projection columns; on a hybrid layer heads are its attention heads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import ClassVar

from torch import nn

from models.adapters.base import UnsupportedModel, register
from models.adapters.hf import HFAdapter
from models.adapters.hf_attention import head_mask_pre_hook, skip_hook
from models.adapters.recurrent import head_dim, restrict
from models.plan import (
    ATTENTION,
    ATTENTION_KINDS,
    CHUNKED,
    FULL,
    GDN,
    HYBRID,
    LIGHTNING,
    LINEAR_KINDS,
    MAMBA,
    MAMBA2,
    RECURRENT,
    SHORT_CONV,
    SWA,
    LayerPlan,
    ModelInfo,
    branches,
    recurrence_window,
)


class HybridHFAdapter(HFAdapter):
    """HF decoders mixing attention with recurrent mixers (see the module docstring)."""

    family = "HF hybrid"
    kinds: ClassVar[dict[str, str]] = {}  # HF layer type -> HybridScope kind (others keep HF's name)
    no_mixer: ClassVar[tuple[str, ...]] = ()  # HF layer types without a token mixer (skip zeroes the block)
    recurrent_name = "mamba"  # attribute of a decoder layer holding its recurrent mixer
    block_name = "mixer"  # attribute of a layer without a token mixer holding its block (mlp / moe)
    hybrid_branch = MAMBA2  # the recurrent branch's kind in hybrid layers

    # ---- family hooks (config-only)
    @classmethod
    def conv_width(cls, cfg) -> int:
        """Width K of the recurrent layers' short convolution."""
        return cfg.mamba_d_conv

    @classmethod
    def recurrent_heads(cls, cfg) -> int:
        """Heads of a recurrent layer (0: the mixer has none, e.g. Mamba-1, short convolutions)."""
        return cfg.mamba_n_heads

    @classmethod
    def layer_kinds(cls, cfg) -> list[str]:
        return [cls.kinds.get(k, k) for k in super().layer_kinds(cfg)]

    @classmethod
    def info_for(cls, config) -> ModelInfo:
        cfg = cls.text_config(config)
        kinds = cls.layer_kinds(cfg)
        heads, windows, pe = [], [], []
        for i, kind in enumerate(kinds):
            if kind in ATTENTION_KINDS and kind != CHUNKED:
                if kind == SWA and not isinstance(getattr(cfg, "sliding_window", None), int):
                    raise UnsupportedModel(f"config.sliding_window: sliding layer {i} needs an int")
                windows.append(cfg.sliding_window if kind == SWA else None)
                heads.append(cfg.num_attention_heads)
                pe.append(cls.layer_pe(cfg, i, kind))
            elif kind in cls.no_mixer or (kind in LINEAR_KINDS and kind in cls.kinds.values()):
                windows.append(None)
                heads.append(0 if kind in cls.no_mixer else cls.recurrent_heads(cfg))
                pe.append(None)
            else:
                known = sorted({*cls.kinds, *cls.no_mixer, FULL})
                raise UnsupportedModel(
                    f"config.layer_types[{i}]: {kind!r} layers are not supported by the {cls.family} adapter; "
                    f"supported layer types: {', '.join(known)}"
                )
        return ModelInfo(layer_types=tuple(kinds), num_heads=tuple(heads), windows=tuple(windows), pe=tuple(pe),
                         conv_kernel=cls.conv_width(cfg))

    @classmethod
    def toggles_for(cls, config, info: ModelInfo) -> list[str]:
        attention = any(ATTENTION in branches(k) for k in info.layer_types)
        kernel = attention and not cls.kernel_gaps(config)
        recurrent_layers = any(RECURRENT in branches(k) for k in info.layer_types)
        rope = any(p == "rope" for p in info.pe)
        out = ["window"] if kernel else []
        out += ["pe"] if rope else []
        out += ["receptive_field"] if kernel or recurrent_layers else []
        out += ["sinks"] if kernel else []
        out += ["skip_layers"]
        return out + (["mask_heads"] if any(info.num_heads) else [])

    # ---- structure
    def kind(self, i: int) -> str:
        return self.info().layer_types[i]

    def attention_module(self, i: int) -> nn.Module:
        if self.kind(i) not in ATTENTION_KINDS:
            raise ValueError(f"layer: {i} is {self.kind(i)}, not an attention layer")
        return super().attention_module(i)

    def recurrent_module(self, i: int) -> nn.Module:
        """The recurrent mixer of layer ``i`` (a recurrent layer, or a hybrid layer's recurrent branch)."""
        return getattr(self.layers()[i], self.recurrent_name)

    def branch_scales(self, i: int) -> tuple[float, float]:
        """(recurrent, attention) factors with which a hybrid layer sums its branches."""
        return 1.0, 1.0

    def mixer_outputs(self, i: int) -> list[tuple[nn.Module, float]]:
        kind = self.kind(i)
        if kind == HYBRID:
            rec, att = self.branch_scales(i)
            return [(self.recurrent_module(i), rec), (self.attention_module(i), att)]
        if kind in ATTENTION_KINDS:
            return super().mixer_outputs(i)
        if kind in self.no_mixer:
            return [(getattr(self.layers()[i], self.block_name), 1.0)]
        return [(self.recurrent_module(i), 1.0)]

    # ---- application
    def _apply(
        self, plans: Sequence[LayerPlan], info: ModelInfo, stack: contextlib.ExitStack, force_kernel: bool = False
    ) -> None:
        """Attention layers as the generic adapter; then the recurrent layers (see the module docstring)."""
        super()._apply(plans, info, stack, force_kernel=force_kernel)
        for i, plan in enumerate(plans):
            if plan.kind in self.no_mixer:
                if plan.skip:
                    stack.callback(getattr(self.layers()[i], self.block_name).register_forward_hook(skip_hook).remove)
                continue
            if RECURRENT not in branches(plan.kind):
                continue
            module = self.recurrent_module(i)
            kind = self.hybrid_branch if plan.kind == HYBRID else plan.kind
            field = plan.recurrent_field if plan.kind == HYBRID else plan.receptive_field
            if field is not None or force_kernel:
                restrict(module, kind, i, recurrence_window(field, info.conv_kernel), stack)
            if plan.skip:  # a hybrid layer's attention branch: the generic hooks above
                stack.callback(module.register_forward_hook(skip_hook).remove)
            if plan.masked_heads and plan.kind != HYBRID:
                hook = head_mask_pre_hook(sorted(set(plan.masked_heads)), head_dim(kind, module))
                stack.callback(module.out_proj.register_forward_pre_hook(hook).remove)


@register
class Qwen3NextAdapter(HybridHFAdapter):
    """Qwen3-Next: Gated DeltaNet (``linear_attn``) and gated full attention."""

    model_types = ("qwen3_next",)
    family = "Qwen3-Next"
    kinds = {"linear_attention": GDN}
    recurrent_name = "linear_attn"

    @classmethod
    def conv_width(cls, cfg) -> int:
        return cfg.linear_conv_kernel_dim

    @classmethod
    def recurrent_heads(cls, cfg) -> int:
        return cfg.linear_num_value_heads


@register
class BambaAdapter(HybridHFAdapter):
    """Bamba and GraniteMoeHybrid: Mamba-2 (``mamba``) and full attention (RoPE where configured)."""

    model_types = ("bamba", "granitemoehybrid")
    family = "Bamba"
    kinds = {"linear_attention": MAMBA2}

    @classmethod
    def layer_pe(cls, cfg, i: int, kind: str) -> str:
        if cfg.model_type == "granitemoehybrid" and cfg.position_embedding_type != "rope":
            return "nope"
        return super().layer_pe(cfg, i, kind)


@register
class NemotronHAdapter(HybridHFAdapter):
    """Nemotron-H: one ``mixer`` per block, Mamba-2, NoPE attention, or an MLP / MoE (no token mixer)."""

    model_types = ("nemotron_h",)
    family = "Nemotron-H"
    kinds = {"linear_attention": MAMBA2}
    no_mixer = ("mlp", "moe")
    mixer_name = recurrent_name = "mixer"

    @classmethod
    def conv_width(cls, cfg) -> int:
        return cfg.conv_kernel

    @classmethod
    def recurrent_heads(cls, cfg) -> int:
        return cfg.mamba_num_heads

    @classmethod
    def layer_pe(cls, cfg, i: int, kind: str) -> str:
        return "nope"


@register
class FalconH1Adapter(HybridHFAdapter):
    """Falcon-H1: every layer runs attention and Mamba-2 in parallel and sums them, each scaled by its
    multiplier (``ssm_out_multiplier``, ``attention_out_multiplier``)."""

    model_types = ("falcon_h1",)
    family = "Falcon-H1"
    kinds = {"hybrid": HYBRID}

    def branch_scales(self, i: int) -> tuple[float, float]:
        layer = self.layers()[i]
        return float(layer.ssm_out_multiplier), float(layer.attn_out_multiplier)


@register
class JambaAdapter(HybridHFAdapter):
    """Jamba: Mamba-1 (no heads) and NoPE full attention."""

    model_types = ("jamba",)
    family = "Jamba"
    kinds = {"linear_attention": MAMBA}

    @classmethod
    def recurrent_heads(cls, cfg) -> int:
        return 0

    @classmethod
    def layer_pe(cls, cfg, i: int, kind: str) -> str:
        return "nope"


@register
class Lfm2Adapter(HybridHFAdapter):
    """LFM2: gated short convolutions (``conv``, width ``conv_L_cache``, no heads) and full attention."""

    model_types = ("lfm2",)
    family = "LFM2"
    kinds = {"conv": SHORT_CONV}
    recurrent_name = "conv"
    out_proj_name = "out_proj"

    @classmethod
    def conv_width(cls, cfg) -> int:
        return cfg.conv_L_cache

    @classmethod
    def recurrent_heads(cls, cfg) -> int:
        return 0


@register
class MiniMaxAdapter(HybridHFAdapter):
    """MiniMax: lightning attention (``self_attn`` of its linear layers, no convolution) and softmax
    attention, sliding when the config sets ``sliding_window``."""

    model_types = ("minimax",)
    family = "MiniMax"
    kinds = {"linear_attention": LIGHTNING}
    recurrent_name = "self_attn"

    @classmethod
    def layer_kinds(cls, cfg) -> list[str]:
        sliding = isinstance(getattr(cfg, "sliding_window", None), int)
        return [SWA if sliding and k == FULL else k for k in super().layer_kinds(cfg)]

    @classmethod
    def conv_width(cls, cfg) -> int:
        return 1

    @classmethod
    def recurrent_heads(cls, cfg) -> int:
        return cfg.num_attention_heads


@register
class Zamba2Adapter(HybridHFAdapter):
    """Zamba2: Mamba-2 in every layer; a ``hybrid`` layer first runs a shared transformer block (attention
    + MLP, weights tied across layers, per-layer LoRA adapters) whose output, through the layer's
    ``linear``, is added to that layer's Mamba-2 input. Its attention branch is that block's attention
    (window / pe / heads / ``rf[full]``), its recurrent branch the Mamba-2 (``rf[linear]``); what the layer
    adds to the residual stream is the Mamba-2 output alone, so that is its mixer output (skip zeroes it,
    and the block's attention too)."""

    model_types = ("zamba2",)
    family = "Zamba2"
    kinds = {"linear_attention": MAMBA2, "mamba": MAMBA2, "hybrid": HYBRID}

    @classmethod
    def recurrent_heads(cls, cfg) -> int:
        return cfg.n_mamba_heads

    @classmethod
    def layer_pe(cls, cfg, i: int, kind: str) -> str:
        return "rope" if cfg.use_mem_rope else "nope"

    def attention_module(self, i: int) -> nn.Module:
        if self.kind(i) != HYBRID:
            raise ValueError(f"layer: {i} is {self.kind(i)}, not an attention layer")
        return self.layers()[i].shared_transformer.self_attn

    def recurrent_module(self, i: int) -> nn.Module:
        layer = self.layers()[i]
        return (layer.mamba_decoder if self.kind(i) == HYBRID else layer).mamba

    def mixer_outputs(self, i: int) -> list[tuple[nn.Module, float]]:
        return [(self.recurrent_module(i), 1.0)]

    def _indexed(self, stack: contextlib.ExitStack) -> None:
        """HF leaves the shared blocks' attention at ``layer_idx`` -1 (the index travels as a call argument);
        while HybridScope acts on the model each carries its layer's index (checks and captures key on it)."""
        for i, kind in enumerate(self.info().layer_types):
            if kind == HYBRID:
                module = self.attention_module(i)
                stack.callback(setattr, module, "layer_idx", module.layer_idx)
                module.layer_idx = i

    def _apply(self, plans, info, stack, force_kernel: bool = False) -> None:
        self._indexed(stack)
        super()._apply(plans, info, stack, force_kernel=force_kernel)

    def _capture(self, cap, stack) -> None:
        self._indexed(stack)
        super()._capture(cap, stack)
