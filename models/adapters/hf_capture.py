"""Capture points of HF models: ``HFAdapter.capture`` (same names and shapes as the native family).

* ``"q"`` / ``"k"``: while a capture asks for them, every config of the model is switched to the
  attention implementation ``"hybridscope_capture(<inner>)"``, where ``<inner>`` is the implementation
  the config had (sdpa, eager, the adapter's ``"hybridscope"``, ...). Its attention function records
  the query and key tensors it is given (after qk-norm and RoPE, k with the KV heads, including cached
  keys when decoding from a KV cache) and then calls ``<inner>``'s function with the very same
  arguments; its mask function is ``<inner>``'s mask function, so transformers builds the same mask
  as without the capture: logits are bit for bit unchanged. The inner name travels in the
  implementation name itself, so no table maps configs to implementations. An attention forward that
  never calls the attention function (a checkpoint's own code computing attention itself) raises
  instead of leaving q / k unrecorded.
* ``"mixer_out"``: forward hooks on each captured layer's mixer modules (``adapter.mixer_outputs(i)``:
  its attention, its recurrent mixer, or both branches of a hybrid layer, scaled and summed as the
  layer sums them) record its output [B, L, hidden] (after head masks; after a skip when the ablation
  was entered first). q / k exist for attention layers only.

Order: enter ``apply()`` / ``apply_ablation()`` first, then ``capture()``. An ablation entered *inside*
a capture would replace the capture's implementation (or run its skip hook after the capture hook);
the next forward of a captured layer then raises instead of recording the wrong tensors. Configs and
hooks are restored on exit, also when the block raises; nested captures of other layers share the
switched configs (the last one out restores them).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial

import torch
from torch import nn

from models.adapters.base import ModelAdapter, model_state
from models.capture import Capture
from models.plan import ATTENTION_KINDS

CAPTURE_ATTN_NAME = "hybridscope_capture"

# attention module -> the Capture it records into (weakly keyed: dropped with the module)
_CAPTURES: weakref.WeakKeyDictionary[nn.Module, Capture] = weakref.WeakKeyDictionary()
# attention module -> whether its current forward called the capture attention function
_RAN: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()
_SWITCH = "hf_capture_switch"  # ModelState.extra key: [number of q/k captures, [(config, impl before)]]


def capture_name(inner: str | None) -> str:
    """The capture implementation that wraps ``inner``, e.g. ``hybridscope_capture(sdpa)``."""
    return f"{CAPTURE_ATTN_NAME}({inner or ''})"


def is_capture(impl: str | None) -> bool:
    return isinstance(impl, str) and impl.startswith(CAPTURE_ATTN_NAME + "(") and impl.endswith(")")


def inner_of(impl: str | None) -> str | None:
    """The implementation that capture implementation ``impl`` wraps (``impl`` itself if it is none)."""
    if not is_capture(impl):
        return impl
    return impl[len(CAPTURE_ATTN_NAME) + 1 : -1] or None


def _inner_attention(module: nn.Module, impl: str | None) -> Callable:
    """The attention function ``module`` would call under ``impl`` (as its modeling file looks it up)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    modeling = sys.modules.get(type(module).__module__)
    interface = getattr(modeling, "ALL_ATTENTION_FUNCTIONS", ALL_ATTENTION_FUNCTIONS)
    default = getattr(modeling, "eager_attention_forward", None)
    fn = interface.get_interface(impl, default)
    if fn is None:
        raise RuntimeError(
            f"{type(module).__name__}: no attention function for attn_implementation {impl!r} "
            "(its modeling file has no eager_attention_forward)"
        )
    return fn


def capture_attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args, inner: str | None,
    **kwargs,
):
    """transformers attention function: record q/k for ``module``'s capture, then run ``inner``."""
    cap = _CAPTURES.get(module)
    if cap is not None:
        _RAN[module] = True
        layer = getattr(module, "layer_idx", "?")
        cap.record(layer, "q", query)
        cap.record(layer, "k", key)
    return _inner_attention(module, inner)(module, query, key, value, *args, **kwargs)


def capture_mask(*args, inner: str | None, **kwargs):
    """transformers mask function: ``inner``'s mask (None where it has no mask function, as transformers does)."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    if inner not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        return None
    return ALL_MASK_ATTENTION_FUNCTIONS[inner](*args, **kwargs)


def _register(inner: str | None) -> str:
    """Register the capture implementation that wraps ``inner`` (idempotent); returns its name."""
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    name = capture_name(inner)
    AttentionInterface.register(name, partial(capture_attention, inner=inner))
    AttentionMaskInterface.register(name, partial(capture_mask, inner=inner))
    return name


def _switch_configs(adapter: ModelAdapter, stack: ExitStack) -> None:
    """Point every config of the model at the capture implementation wrapping its own (shared by
    nested q/k captures of one model: the first in switches, the last out restores)."""
    state = model_state(adapter.model)
    with state.lock:
        switch = state.extra.setdefault(_SWITCH, [0, []])
        if switch[0] == 0:
            for cfg in adapter.configs():
                impl = cfg._attn_implementation_internal
                switch[1].append((cfg, impl))
                cfg._attn_implementation_internal = _register(impl)
        switch[0] += 1

    def release() -> None:
        with state.lock:
            switch[0] -= 1
            if switch[0] == 0:
                for cfg, impl in switch[1]:
                    cfg._attn_implementation_internal = impl
                state.extra.pop(_SWITCH, None)

    stack.callback(release)


def _guard(adapter: ModelAdapter, want_qk: bool) -> Callable:
    """Forward pre-hook: refuse forwards whose ablation or attention implementation changed since
    the capture began (the capture would record the wrong tensors)."""
    state = model_state(adapter.model)
    plans_at_entry = state.plans

    def hook(module: nn.Module, args) -> None:
        layer = getattr(module, "layer_idx", "?")
        if state.plans is not plans_at_entry:
            raise RuntimeError(
                f"capture: the ablation of the model changed inside capture() (layer {layer}); "
                "enter apply()/apply_ablation() first, then capture()"
            )
        if want_qk and not is_capture(module.config._attn_implementation):
            raise RuntimeError(
                f"capture: layer {layer}'s attn_implementation was switched to "
                f"{module.config._attn_implementation!r} inside capture(); switch it before capture()"
            )
        if want_qk:
            _RAN[module] = False

    return hook


def _qk_recorded(module: nn.Module, args, output) -> None:
    """Forward hook: refuse an attention forward that never called transformers' attention function (a
    checkpoint's own code computing attention itself): its q / k were not recorded."""
    if not _RAN.get(module, True):
        raise RuntimeError(
            f"capture: layer {getattr(module, 'layer_idx', '?')}'s attention ({type(module).__name__}) does not "
            "compute attention through transformers' attention interface, so its q / k cannot be recorded; "
            "allowed on this model: probes without q / k (token_loss, longppl, niah)"
        )


def _mixer_out_hooks(cap: Capture, layer: int, parts: list[tuple[nn.Module, float]]) -> list[Callable]:
    """Forward hooks recording layer ``layer``'s mixer output: the scaled sum of ``parts``' outputs (one
    part for most layers; a hybrid layer's branches are recorded once the last of them has run)."""
    pending: list[torch.Tensor] = []

    def make(scale: float) -> Callable:
        def hook(module: nn.Module, args, output) -> None:
            out = output[0] if isinstance(output, tuple) else output
            pending.append(out if scale == 1.0 else out * scale)
            if len(pending) == len(parts):
                total = pending[0] if len(parts) == 1 else sum(pending[1:], pending[0])
                pending.clear()
                cap.record(layer, "mixer_out", total)

        return hook

    return [make(scale) for _, scale in parts]


def start_capture(adapter: ModelAdapter, cap: Capture, stack: ExitStack) -> None:
    """The HF half of :meth:`ModelAdapter.capture` (names, layers and the busy check already done). q / k
    come from the attention layers (a recurrent layer records none), mixer_out from every layer."""
    kinds = adapter.info().layer_types
    modules = {i: adapter.attention_module(i) for i in cap.layers if kinds[i] in ATTENTION_KINDS}
    want_qk = "q" in cap.names or "k" in cap.names
    if want_qk and modules:
        for m in modules.values():  # fail early (before switching) if an implementation is unknown
            _inner_attention(m, inner_of(m.config._attn_implementation))
        _switch_configs(adapter, stack)
        stale = [i for i, m in modules.items() if not is_capture(m.config._attn_implementation)]
        if stale:
            raise RuntimeError(f"capture: could not switch layers {stale} to '{CAPTURE_ATTN_NAME}'")
    guard, plain = _guard(adapter, want_qk), _guard(adapter, False)
    for m in modules.values():
        _CAPTURES[m] = cap  # record() keeps only the requested names
        stack.callback(_CAPTURES.pop, m, None)
        stack.callback(m.register_forward_pre_hook(guard).remove)
        if want_qk:
            stack.callback(m.register_forward_hook(_qk_recorded).remove)
    for i in cap.layers:
        parts = adapter.mixer_outputs(i)
        for m, _ in parts:
            if m is not modules.get(i):
                stack.callback(m.register_forward_pre_hook(plain).remove)
        if "mixer_out" in cap.names:
            for (m, _), hook in zip(parts, _mixer_out_hooks(cap, i, parts), strict=True):
                stack.callback(m.register_forward_hook(hook).remove)
