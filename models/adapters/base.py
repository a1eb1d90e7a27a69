"""Adapter base: apply :class:`~models.plan.LayerPlan` objects to real HF checkpoints.

Nothing here touches weights. An adapter changes behaviour only for the duration of
``with adapter.apply(plans):`` through

* transformers' ``AttentionInterface``: a custom attention function named ``"hybridscope"``
  that runs ``kernels.attention.attention`` with the window/sinks of each layer's plan. A mask
  function of the same name is registered in ``AttentionMaskInterface`` too; it builds nothing
  (our function builds its mask from positions) but it is where padded batches are refused.
  Without it transformers would either build its own mask or, for a name it does not know,
  silently pass ``None`` (i.e. plain causal: the window would be lost).
* forward pre-hooks on attention modules that replace ``position_embeddings`` by cos=1/sin=0
  (NoPE), forward hooks that zero a mixer's output (skip), and forward pre-hooks on the output
  projection that zero the input slice of masked heads.

The custom attention is switched on only when some layer's window or sinks differ from the
native ones (or ``force_kernel=True``): hook-only ablations and the empty ablation then run
the model's own attention path and reproduce its logits bit for bit.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from models.plan import ATTENTION_KINDS, SWA, LayerPlan, ModelInfo, native_plans

ATTN_NAME = "hybridscope"
PE_VALUES = ("rope", "nope")

# attention module -> plan it must obey while a kernel-switching apply() is active
_ACTIVE_PLANS: weakref.WeakKeyDictionary[nn.Module, LayerPlan] = weakref.WeakKeyDictionary()
# models inside an apply() (nesting is refused) -> the plans they follow there
_APPLIED_PLANS: weakref.WeakKeyDictionary[nn.Module, tuple[LayerPlan, ...]] = weakref.WeakKeyDictionary()
# model_type -> adapter class (filled by the @register decorator of each family file)
REGISTRY: dict[str, type[Adapter]] = {}


# --------------------------------------------------------------------------- attention interface


def hybridscope_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: q [B,H,Lq,D], k/v [B,Hkv,Lk,D] -> ([B,Lq,H,D], None).

    The window and sinks come from the plan registered for ``module`` (its ``layer_idx``); the
    mask transformers passes is ignored (our mask function returns ``None``; anything else is a
    caller-supplied 4D mask, which is refused).
    """
    from kernels.attention import attention  # written concurrently; imported on first use

    plan = _ACTIVE_PLANS.get(module)
    if plan is None:
        raise RuntimeError(
            f"attn_implementation '{ATTN_NAME}' used outside Adapter.apply() "
            f"(layer {getattr(module, 'layer_idx', '?')} has no active LayerPlan)"
        )
    if attention_mask is not None:
        raise ValueError(
            f"attention_mask: '{ATTN_NAME}' attention builds its own causal/window mask; "
            "custom 4D masks are not supported"
        )
    if dropout:
        raise ValueError(f"dropout: '{ATTN_NAME}' attention is inference-only, got dropout={dropout}")
    for name in ("softcap", "s_aux"):
        if kwargs.get(name) is not None:
            raise ValueError(f"{name}: not supported by '{ATTN_NAME}' attention")
    _check_keys(plan, query.shape[2], key.shape[2], kwargs.get("position_ids"), module)
    sinks = plan.sinks if plan.window is not None else 0
    out = attention(query, key, value, window=plan.window, sinks=sinks, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def _check_keys(
    plan: LayerPlan, q_len: int, k_len: int, position_ids: torch.Tensor | None, module: nn.Module
) -> None:
    """Refuse inputs whose keys the kernel would misplace.

    The kernel puts keys at positions 0..k_len-1 and the queries at the last q_len of them. That
    holds for a full forward and for decoding from a cache that kept every key. A cache that
    dropped old keys (HF sliding-window layers keep window-1) is fine only if every query's
    window still lies inside the kept keys and no sinks are needed.
    """
    layer = getattr(module, "layer_idx", "?")
    if position_ids is None or position_ids.shape[-1] < 1:
        if q_len != k_len:
            raise ValueError(f"position_ids: needed by '{ATTN_NAME}' attention when decoding (layer {layer})")
        return
    if position_ids.shape[-1] > 1 and not bool((position_ids.diff(dim=-1) == 1).all()):
        raise ValueError(
            "position_ids: packed or non-contiguous sequences are not supported by "
            f"'{ATTN_NAME}' attention (each row must be consecutive positions)"
        )
    if q_len == k_len:
        return
    last = position_ids[..., -1]
    if not bool((last == last.flatten()[0]).all()):
        raise ValueError("position_ids: all rows must end at the same position when decoding")
    first_key = int(last.flatten()[0]) + 1 - k_len  # absolute position of key 0
    first_query = first_key + k_len - q_len
    if first_key == 0:
        return
    needs_old = plan.window is None or plan.sinks > 0 or first_query - plan.window + 1 < first_key
    if first_key < 0 or needs_old:
        raise NotImplementedError(
            f"layer {layer}: the KV cache holds keys from position {first_key} on, but plan window="
            f"{plan.window}, sinks={plan.sinks} needs older ones (the cache was sized for the native "
            "window); run full-sequence forwards (no KV cache) for this ablation"
        )


def hybridscope_mask(attention_mask: torch.Tensor | None = None, **kwargs) -> None:
    """transformers mask function: refuse padding, build nothing (the attention builds its mask)."""
    if attention_mask is not None and not bool(attention_mask.all()):
        raise ValueError(
            "attention_mask: padded batches are not supported under a window/sinks ablation; "
            "run unpadded sequences of equal length (attention_mask all ones or None)"
        )
    return None


def register_attention() -> None:
    """Register ``"hybridscope"`` with transformers' attention and mask interfaces (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTN_NAME, hybridscope_attention)
    AttentionMaskInterface.register(ATTN_NAME, hybridscope_mask)


# --------------------------------------------------------------------------- hooks


def _nope_pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Replace ``position_embeddings`` (cos, sin) by (1, 0): RoPE becomes the identity."""
    if "position_embeddings" in kwargs:
        cos, sin = kwargs["position_embeddings"]
        return args, {**kwargs, "position_embeddings": (torch.ones_like(cos), torch.zeros_like(sin))}
    if len(args) >= 2:
        cos, sin = args[1]
        return (args[0], (torch.ones_like(cos), torch.zeros_like(sin)), *args[2:]), kwargs
    raise RuntimeError(f"{type(module).__name__}: NoPE hook found no position_embeddings argument")


def _skip_hook(module: nn.Module, args: tuple, output):
    """Zero the mixer output (first element when the module returns a tuple)."""
    if isinstance(output, tuple):
        return (torch.zeros_like(output[0]), *output[1:])
    return torch.zeros_like(output)


def _head_mask_pre_hook(heads: Sequence[int], head_dim: int) -> Callable:
    """Pre-hook for the output projection: zero input features of ``heads`` ([..., H*head_dim])."""

    def hook(module: nn.Module, args: tuple):
        x = args[0]
        keep = torch.ones(x.shape[-1], dtype=torch.bool, device=x.device)
        for h in heads:
            keep[h * head_dim : (h + 1) * head_dim] = False
        return (x.masked_fill(~keep, 0), *args[1:])

    return hook


# --------------------------------------------------------------------------- adapter base


def register(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: make ``cls`` the adapter for each of its ``model_types``."""
    for model_type in cls.model_types:
        REGISTRY[model_type] = cls
    return cls


class Adapter:
    """Inference-time LayerPlans for one HF model family (decoder of stacked attention layers).

    Subclasses set ``model_types`` / ``family`` and override the family hooks
    (:meth:`layer_pe`, :meth:`enable_rope`, :meth:`check_supported`) where needed.
    """

    model_types: tuple[str, ...] = ()
    family: str = "?"
    mixer_name = "self_attn"  # attribute of a decoder layer holding its mixer
    out_proj_name = "o_proj"  # attribute of the attention module: output projection

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.config = model.config
        self.check_supported()

    # ---- family hooks
    def check_supported(self) -> None:
        """Raise ValueError for configurations this adapter cannot reproduce."""

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
        """The decoder layers, in order."""
        return self.model.base_model.layers

    def attention_module(self, i: int) -> nn.Module:
        return getattr(self.layers()[i], self.mixer_name)

    def info(self) -> ModelInfo:
        """Layer types, heads, native windows and native PE of every layer, from the config."""
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

    def native_plans(self) -> list[LayerPlan]:
        return native_plans(self.info())

    def current_plans(self) -> list[LayerPlan]:
        """The plans the model follows now: those of the active apply(), else the native ones."""
        active = _APPLIED_PLANS.get(self.model)
        return list(active) if active is not None else self.native_plans()

    # ---- validation
    def validate(self, plans: Sequence[LayerPlan], info: ModelInfo) -> None:
        """Raise ValueError naming the first bad field of ``plans``."""
        if len(plans) != info.num_layers:
            raise ValueError(
                f"plans: expected {info.num_layers} LayerPlans (one per layer), got {len(plans)}"
            )
        for i, p in enumerate(plans):
            if p.kind != info.layer_types[i]:
                raise ValueError(
                    f"plans[{i}].kind: expected {info.layer_types[i]!r} (the layer's type), got {p.kind!r}"
                )
            if p.window is not None and (not isinstance(p.window, int) or p.window < 1):
                raise ValueError(f"plans[{i}].window: expected an int >= 1 or None, got {p.window!r}")
            if not isinstance(p.sinks, int) or p.sinks < 0:
                raise ValueError(f"plans[{i}].sinks: expected an int >= 0, got {p.sinks!r}")
            if p.pe not in PE_VALUES:
                raise ValueError(f"plans[{i}].pe: expected one of {', '.join(PE_VALUES)}, got {p.pe!r}")
            n = info.num_heads[i]
            for h in p.masked_heads:
                if not isinstance(h, int) or not 0 <= h < n:
                    raise ValueError(f"plans[{i}].masked_heads: head {h!r} out of range 0..{n - 1}")

    # ---- application
    @contextlib.contextmanager
    def apply(self, plans: Sequence[LayerPlan], force_kernel: bool = False) -> Iterator[None]:
        """Context manager: the model follows ``plans`` inside, and is exactly restored on exit.

        ``force_kernel`` routes every attention layer through the hybridscope kernel even when no
        window/sinks change needs it (otherwise the model's own attention path is kept).
        """
        info = self.info()
        self.validate(plans, info)
        if self.model in _APPLIED_PLANS:
            raise RuntimeError(
                "Adapter.apply: this model is already inside an apply(); nesting is not supported"
            )
        needs_kernel = force_kernel or any(
            p.window != info.windows[i] or (p.window is not None and p.sinks > 0) for i, p in enumerate(plans)
        )
        with contextlib.ExitStack() as stack:
            _APPLIED_PLANS[self.model] = tuple(plans)
            stack.callback(_APPLIED_PLANS.pop, self.model, None)
            if needs_kernel:
                self._switch_attention(plans, stack)
            self._install_hooks(plans, info, stack)
            yield

    def _configs(self) -> list:
        """Every config object whose ``_attn_implementation`` the model may read."""
        found: dict[int, object] = {}

        def add(cfg) -> None:
            if cfg is None or id(cfg) in found or not hasattr(cfg, "_attn_implementation_internal"):
                return
            found[id(cfg)] = cfg
            for key in getattr(cfg, "sub_configs", {}) or {}:
                add(getattr(cfg, key, None))

        add(self.model.config)
        for m in self.model.modules():
            add(getattr(m, "config", None))
        return list(found.values())

    def _switch_attention(self, plans: Sequence[LayerPlan], stack: contextlib.ExitStack) -> None:
        register_attention()
        saved = [
            (c, c._attn_implementation_internal, hasattr(c, "_attn_was_changed")) for c in self._configs()
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
            _ACTIVE_PLANS[module] = plan
            stack.callback(_ACTIVE_PLANS.pop, module, None)
        self.model.set_attn_implementation(ATTN_NAME)
        stale = [
            i for i in range(len(plans)) if self.attention_module(i).config._attn_implementation != ATTN_NAME
        ]
        if stale:
            raise RuntimeError(
                f"{self.family}: could not switch layers {stale} to attn_implementation '{ATTN_NAME}' "
                "(model does not dispatch through transformers' AttentionInterface)"
            )

    def _install_hooks(
        self, plans: Sequence[LayerPlan], info: ModelInfo, stack: contextlib.ExitStack
    ) -> None:
        for i, plan in enumerate(plans):
            attn = self.attention_module(i)
            if plan.pe != info.pe[i]:
                if plan.pe == "nope":
                    handle = attn.register_forward_pre_hook(_nope_pre_hook, with_kwargs=True)
                    stack.callback(handle.remove)
                else:
                    stack.callback(self.enable_rope(i))
            if plan.skip:
                stack.callback(attn.register_forward_hook(_skip_hook).remove)
            if plan.masked_heads:
                out_proj = getattr(attn, self.out_proj_name)
                hook = _head_mask_pre_hook(sorted(set(plan.masked_heads)), attn.head_dim)
                stack.callback(out_proj.register_forward_pre_hook(hook).remove)
