"""transformers-side machinery of the HF adapter: the ``"hybridscope"`` attention and mask functions and
the hooks that implement NoPE, skips and head masks.

* The attention function runs ``kernels.attention.attention`` with the window / chunk / sinks of the
  plan registered for the calling attention module (:data:`ACTIVE_PLANS`, weakly keyed by the module)
  and the logit features the module passes (``softcap``: Gemma 2's attention-logit softcapping;
  ``s_aux``: gpt-oss's learned sink logits).
* Long context (:data:`LONG_CONTEXT_TOKENS`): while a plan that needs no kernel is applied, every config
  runs ``"hybridscope_long@<threshold>(<inner>)"`` (``<inner>``: the implementation it had). Its mask and attention
  functions are ``<inner>``'s, bit for bit, except for a full-sequence forward of at least
  ``LONG_CONTEXT_TOKENS`` tokens without padding, custom masks or dropout: then the mask function builds
  nothing and the attention runs the kernel with the native plan (FlexAttention on GPU, SDPA / banded /
  tiled on CPU), so no dense L x L mask is ever made.
  A mask function of the same name is registered in ``AttentionMaskInterface`` too; it builds
  nothing (our function builds its mask from positions) but it is where padded batches are refused.
  Without it transformers would either build its own mask or, for a name it does not know, silently
  pass ``None`` (i.e. plain causal: the window would be lost).
* Forward pre-hooks on attention modules replace ``position_embeddings`` by cos=1/sin=0 (NoPE),
  forward hooks zero a mixer's output (skip), and forward pre-hooks on the output projection zero
  the input slice of masked heads.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

import kernels.attention as kernel_attention
from models.adapters.hf_capture import _inner_attention, capture_mask
from models.plan import LayerPlan

ATTN_NAME = "hybridscope"
LONG_NAME = "hybridscope_long"
# Full-sequence forwards at least this long run the kernel even under the empty ablation (HF's own path
# builds dense L x L masks: 51.7 GiB for a 16-layer Qwen3 SWA model at 131,072 tokens on an H200);
# shorter ones run the model's own attention, bit for bit. The CPU run limit (8192 tokens) is below it.
LONG_CONTEXT_TOKENS = 16384

# attention module -> plan it must obey while a kernel-switching apply() is active
ACTIVE_PLANS: weakref.WeakKeyDictionary[nn.Module, LayerPlan] = weakref.WeakKeyDictionary()


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
    plan = ACTIVE_PLANS.get(module)
    if plan is None:
        raise RuntimeError(
            f"attn_implementation '{ATTN_NAME}' used outside HFAdapter.apply() "
            f"(layer {getattr(module, 'layer_idx', '?')} has no active LayerPlan)"
        )
    if attention_mask is not None:
        raise ValueError(
            f"attention_mask: '{ATTN_NAME}' attention builds its own causal/window mask; "
            "custom 4D masks are not supported"
        )
    if dropout:
        raise ValueError(f"dropout: '{ATTN_NAME}' attention is inference-only, got dropout={dropout}")
    _check_keys(plan, query.shape[2], key.shape[2], kwargs.get("position_ids"), module)
    softcap, s_aux = kwargs.get("softcap"), kwargs.get("s_aux")
    if s_aux is not None:
        s_aux = s_aux.reshape(-1)
    out = kernel_attention.attention(query, key, value, window=plan.window, sinks=plan.sinks, scale=scaling,
                                     chunk=plan.chunk, softcap=softcap, sink_logits=s_aux)
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
    oldest = first_query - plan.window + 1 if plan.window is not None else None  # oldest key a query needs
    if plan.chunk is not None:
        start = first_query - first_query % plan.chunk
        oldest = start if oldest is None else max(oldest, start)
    needs_old = oldest is None or plan.sinks > 0 or oldest < first_key
    if first_key < 0 or needs_old:
        raise NotImplementedError(
            f"layer {layer}: the KV cache holds keys from position {first_key} on, but plan window="
            f"{plan.window}, chunk={plan.chunk}, sinks={plan.sinks} needs older ones (the cache was sized for "
            "the native window); run full-sequence forwards (no KV cache) for this ablation"
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


# --------------------------------------------------------------------------- long context


def _is_long(q_len: int, k_len: int, threshold: int) -> bool:
    return q_len == k_len >= threshold


def long_attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, *args, inner: str | None, threshold: int, **kwargs,
):
    """transformers attention function: the kernel for a long full-sequence forward whose mask function
    built nothing (see :func:`long_mask`), ``inner``'s attention with the very same arguments otherwise."""
    position_ids = kwargs.get("position_ids")
    if (attention_mask is None and module in ACTIVE_PLANS and not kwargs.get("dropout")
            and _is_long(query.shape[2], key.shape[2], threshold)
            and (position_ids is None or bool((position_ids.diff(dim=-1) == 1).all()))):
        return hybridscope_attention(module, query, key, value, None, *args, **kwargs)
    return _inner_attention(module, inner)(module, query, key, value, attention_mask, *args, **kwargs)


def long_mask(*args, inner: str | None, threshold: int, **kwargs):
    """transformers mask function: nothing for a long full-sequence forward without padding or extra
    mask terms (packing, overlays: transformers then disallows the causal skip), else ``inner``'s mask."""
    attention_mask = kwargs.get("attention_mask")
    if (_is_long(kwargs.get("q_length", 0), kwargs.get("kv_length", -1), threshold)
            and not kwargs.get("q_offset") and not kwargs.get("kv_offset")
            and kwargs.get("allow_is_causal_skip", False)
            and (attention_mask is None or bool(attention_mask.all()))):
        return None
    return capture_mask(*args, inner=inner, **kwargs)


def register_long(inner: str | None, threshold: int) -> str:
    """Register the long-context implementation wrapping ``inner`` at ``threshold`` tokens; returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    name = f"{LONG_NAME}@{threshold}({inner or ''})"  # e.g. hybridscope_long@16384(sdpa)
    AttentionInterface.register(name, partial(long_attention, inner=inner, threshold=threshold))
    AttentionMaskInterface.register(name, partial(long_mask, inner=inner, threshold=threshold))
    return name


# --------------------------------------------------------------------------- hooks


def _identity_rotation(pe, module: nn.Module, scale: float):
    """The rotation by angle 0 in the form ``pe`` has, keeping the RoPE scheme's magnitude ``scale`` (YaRN's
    attention scaling; 1 for plain RoPE): (cos, sin) -> (scale, 0); complex freqs (Llama 4) -> scale."""
    if isinstance(pe, tuple | list) and len(pe) == 2:
        cos, sin = pe
        return torch.full_like(cos, scale), torch.zeros_like(sin)
    if isinstance(pe, torch.Tensor) and pe.is_complex():
        return torch.full_like(pe, scale)
    raise RuntimeError(f"{type(module).__name__}: NoPE hook does not know position_embeddings of type {type(pe)}")


def nope_pre_hook(scale: float = 1.0) -> Callable:
    """Forward pre-hook (with kwargs) replacing ``position_embeddings`` by the rotation by angle 0: RoPE
    carries no position any more (its magnitude ``scale`` stays, see :func:`_identity_rotation`)."""

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if "position_embeddings" in kwargs:
            pe = _identity_rotation(kwargs["position_embeddings"], module, scale)
            return args, {**kwargs, "position_embeddings": pe}
        if len(args) >= 2:
            return (args[0], _identity_rotation(args[1], module, scale), *args[2:]), kwargs
        raise RuntimeError(f"{type(module).__name__}: NoPE hook found no position_embeddings argument")

    return hook


def skip_hook(module: nn.Module, args: tuple, output):
    """Zero the mixer output (first element when the module returns a tuple)."""
    if isinstance(output, tuple):
        return (torch.zeros_like(output[0]), *output[1:])
    return torch.zeros_like(output)


def head_mask_pre_hook(heads: Sequence[int], head_dim: int) -> Callable:
    """Pre-hook for the output projection: zero input features of ``heads`` ([..., H*head_dim])."""

    def hook(module: nn.Module, args: tuple):
        x = args[0]
        keep = torch.ones(x.shape[-1], dtype=torch.bool, device=x.device)
        for h in heads:
            keep[h * head_dim : (h + 1) * head_dim] = False
        return (x.masked_fill(~keep, 0), *args[1:])

    return hook
