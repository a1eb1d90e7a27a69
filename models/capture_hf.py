"""Capture points for HF models that have an adapter (models/adapters/): the HF half of
:func:`models.capture.capture` (which dispatches here for non-native models).

* ``"q"`` / ``"k"``: while a capture asks for them, every config of the model is switched to the
  attention implementation ``"hybridscope_capture"``. Its attention function records the query
  and key tensors it is given (after qk-norm and RoPE, k with the KV heads, and including cached
  keys when decoding from a KV cache) and then calls the function of the implementation that was
  active before (sdpa, eager, the adapter's ``"hybridscope"``, ...), remembered per config. The
  matching mask function delegates to that implementation's mask function, so transformers
  builds the same mask as without the capture: logits are bit for bit unchanged.
* ``"mixer_out"``: a forward hook on each captured layer's attention module (``self_attn``)
  records its output [B, L, hidden] (after head masks; after a skip when the ablation was entered
  first).

Order: enter ``Adapter.apply()`` / ``apply_ablation()`` first, then ``capture()``. An ablation
entered *inside* a capture would replace the capture's attention implementation (or run its skip
hook after the capture hook); the next forward of a captured layer then raises instead of
recording the wrong tensors. Everything (configs, hooks, the two registrations) is restored on
exit, also when the block raises.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from models.capture import Capture

CAPTURE_ATTN_NAME = "hybridscope_capture"

# attention module -> the Capture it records into
_CAPTURES: weakref.WeakKeyDictionary[nn.Module, Capture] = weakref.WeakKeyDictionary()
# id(config) -> [config, implementation it had before the first capture, number of captures using it]
_SWITCHED: dict[int, list] = {}
_REGISTERED = [0]  # number of q/k captures alive; the registrations exist while it is > 0
_LOCK = threading.RLock()


# --------------------------------------------------------------------------- attention interface


def _original_impl(config, layer: object = "?") -> str | None:
    entry = _SWITCHED.get(id(config))
    if entry is None or entry[0] is not config:
        raise RuntimeError(
            f"attn_implementation '{CAPTURE_ATTN_NAME}' used outside capture() (layer {layer}: "
            "its config was not switched by a capture)"
        )
    return entry[1]


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
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args, **kwargs
):
    """transformers attention function: record q/k for ``module``'s capture, then run the
    implementation that was active before the capture, with the very same arguments."""
    layer = getattr(module, "layer_idx", "?")
    cap = _CAPTURES.get(module)
    if cap is not None:
        cap.record(layer, "q", query)
        cap.record(layer, "k", key)
    impl = _original_impl(module.config, layer)
    return _inner_attention(module, impl)(module, query, key, value, *args, **kwargs)


def capture_mask(*args, config=None, **kwargs):
    """transformers mask function: the mask of the implementation that was active before the
    capture (None where that implementation has no mask function, as transformers does)."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    if config is None:
        raise RuntimeError(f"mask function '{CAPTURE_ATTN_NAME}' needs the config keyword argument")
    impl = _original_impl(config)
    if impl not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        return None
    return ALL_MASK_ATTENTION_FUNCTIONS[impl](*args, config=config, **kwargs)


def _register(stack: ExitStack) -> None:
    """Register the capture attention/mask functions while any q/k capture is alive."""
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    def release() -> None:
        with _LOCK:
            _REGISTERED[0] -= 1
            if _REGISTERED[0] == 0:
                AttentionInterface._global_mapping.pop(CAPTURE_ATTN_NAME, None)
                AttentionMaskInterface._global_mapping.pop(CAPTURE_ATTN_NAME, None)

    with _LOCK:
        if _REGISTERED[0] == 0:
            AttentionInterface.register(CAPTURE_ATTN_NAME, capture_attention)
            AttentionMaskInterface.register(CAPTURE_ATTN_NAME, capture_mask)
        _REGISTERED[0] += 1
        stack.callback(release)


def _switch_configs(configs: list, stack: ExitStack) -> None:
    """Point every config at the capture implementation, remembering what it had (nesting-safe)."""
    for cfg in configs:
        with _LOCK:
            entry = _SWITCHED.get(id(cfg))
            if entry is None:
                entry = _SWITCHED[id(cfg)] = [cfg, cfg._attn_implementation_internal, 0]
                cfg._attn_implementation_internal = CAPTURE_ATTN_NAME
            entry[2] += 1

        def release(cfg=cfg, entry=entry) -> None:
            with _LOCK:
                entry[2] -= 1
                if entry[2] == 0:
                    cfg._attn_implementation_internal = entry[1]
                    _SWITCHED.pop(id(cfg), None)

        stack.callback(release)


# --------------------------------------------------------------------------- capture


def _guard(model: nn.Module, plans_at_entry, want_qk: bool) -> Callable:
    """Forward pre-hook: refuse forwards whose ablation or attention implementation changed
    since the capture began (the capture would record the wrong tensors)."""
    from models.adapters.base import _APPLIED_PLANS

    def hook(module: nn.Module, args) -> None:
        layer = getattr(module, "layer_idx", "?")
        if _APPLIED_PLANS.get(model) is not plans_at_entry:
            raise RuntimeError(
                f"capture: the ablation of the model changed inside capture() (layer {layer}); "
                "enter Adapter.apply()/apply_ablation() first, then capture()"
            )
        if want_qk and module.config._attn_implementation != CAPTURE_ATTN_NAME:
            raise RuntimeError(
                f"capture: layer {layer}'s attn_implementation was switched to "
                f"{module.config._attn_implementation!r} inside capture(); switch it before capture()"
            )

    return hook


@contextmanager
def capture_hf(
    model: nn.Module, names: tuple[str, ...], layers: tuple[int, ...] | None, on_record=None
) -> Iterator[Capture]:
    """:func:`models.capture.capture` for an adapted HF model (``names`` already validated)."""
    from models.adapters import adapter_for
    from models.adapters.base import _APPLIED_PLANS

    adapter = adapter_for(model)
    n = adapter.info().num_layers
    layers = tuple(range(n)) if layers is None else tuple(layers)
    missing = [i for i in layers if not isinstance(i, int) or not 0 <= i < n]
    if missing:
        raise ValueError(f"layers: {missing} out of range; the model has layers 0..{n - 1}")
    modules = {i: adapter.attention_module(i) for i in layers}
    busy = [i for i, m in modules.items() if m in _CAPTURES]
    if busy:
        raise RuntimeError(f"layers: {busy} are already being captured (nested capture on the same layers)")
    want_qk = "q" in names or "k" in names
    cap = Capture(names, layers, on_record)
    with ExitStack() as stack:
        if want_qk:
            impls = {i: m.config._attn_implementation for i, m in modules.items()}
            for i, m in modules.items():  # fail early (before switching) if an implementation is unknown
                if impls[i] != CAPTURE_ATTN_NAME:
                    _inner_attention(m, impls[i])
            _register(stack)
            _switch_configs(adapter._configs(), stack)
            stale = [i for i, m in modules.items() if m.config._attn_implementation != CAPTURE_ATTN_NAME]
            if stale:
                raise RuntimeError(f"capture: could not switch layers {stale} to '{CAPTURE_ATTN_NAME}'")
        guard = _guard(model, _APPLIED_PLANS.get(model), want_qk)
        for i, m in modules.items():
            _CAPTURES[m] = cap  # also marks the layer busy; record() keeps only the requested names
            stack.callback(_CAPTURES.pop, m, None)
            stack.callback(m.register_forward_pre_hook(guard).remove)
            if "mixer_out" in names:
                hook = _mixer_out_hook(cap, i)
                stack.callback(m.register_forward_hook(hook).remove)
        yield cap


def _mixer_out_hook(cap: Capture, layer: int) -> Callable:
    def hook(module: nn.Module, args, output) -> None:
        cap.record(layer, "mixer_out", output[0] if isinstance(output, tuple) else output)

    return hook


def attention_scale_hf(model: nn.Module, layer: int) -> float:
    """Softmax scale (the attention module's ``scaling``) of layer ``layer`` of an adapted HF model."""
    from models.adapters import adapter_for

    adapter = adapter_for(model)
    n = adapter.info().num_layers
    if not isinstance(layer, int) or not 0 <= layer < n:
        raise ValueError(f"layer: {layer!r} out of range; the model has layers 0..{n - 1}")
    module = adapter.attention_module(layer)
    scale = getattr(module, "scaling", None)
    return float(scale) if scale is not None else float(module.head_dim) ** -0.5
