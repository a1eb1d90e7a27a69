"""Receptive-field handlers for the recurrent mixers of HF checkpoints: one module per mixer kind.

``restrict(module, kind, layer, window, stack)`` replaces an HF mixer's forward, for the duration of
``stack``, by a computation built from the same module's weights and HybridScope's kernels with the
recurrence windowed to ``window = recurrence_window(k, K)`` (:func:`models.plan.recurrence_window`:
with the short convolution's K-1 reach, nothing older than k tokens influences the output at t, exactly
as in the native family). ``window=None`` runs the same kernels unrestricted (the handler path that the
parity tests hold to HF's own forward). Adapters call it only when a receptive field is set (or with
``force_kernel``), so unrestricted and empty ablations run HF's forward untouched.

Each handler module defines ``forward(module, hidden_states, window) -> [B, L, hidden]`` and
``head_dim(module)`` (the width of one head's slice of the output projection's input; None for mixers
without heads). The replaced forward refuses what a window cannot honour: a padded batch, and a
recurrent cache that carries state from an earlier call (decoding; run full-sequence forwards).
"""

from __future__ import annotations

import contextlib
import weakref

from torch import nn

from models.adapters.recurrent import gdn, lightning, mamba1, mamba2, short_conv
from models.plan import GDN, LIGHTNING, MAMBA, MAMBA2, SHORT_CONV

HANDLERS = {MAMBA2: mamba2, GDN: gdn, MAMBA: mamba1, SHORT_CONV: short_conv, LIGHTNING: lightning}
# cache object -> layers whose restricted forward already ran with it (that state was not written)
_USED_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def head_dim(kind: str, module: nn.Module) -> int | None:
    return HANDLERS[kind].head_dim(module)


def _check_call(layer: int, kwargs: dict) -> None:
    mask = kwargs.get("attention_mask")
    if mask is not None and mask.dim() == 2 and not bool(mask.all()):
        raise ValueError(
            f"attention_mask: padded batches are not supported under a receptive-field restriction of "
            f"recurrent layer {layer}; run unpadded sequences of equal length"
        )
    cache = kwargs.get("cache_params", kwargs.get("past_key_values"))
    if cache is None:
        return
    carried = getattr(cache, "has_previous_state", None)
    used = _USED_CACHES.setdefault(cache, set())
    linear = getattr(cache, "get_linear_cache", None)
    if layer in used or (carried is not None and carried(layer)) or (linear is not None and linear(layer) is not None):
        raise NotImplementedError(
            f"layer {layer}: a receptive-field restriction of a recurrent layer holds for full-sequence "
            "forwards only, not for decoding from a recurrent cache; run full-sequence forwards (no cache)"
        )
    used.add(layer)


def restrict(module: nn.Module, kind: str, layer: int, window: int | None, stack: contextlib.ExitStack) -> None:
    """Inside ``stack``, ``module`` (layer ``layer``'s ``kind`` mixer) computes its output through the
    handler of ``kind`` with recurrence window ``window`` (None = unrestricted)."""
    handler = HANDLERS[kind]

    def forward(hidden_states=None, *args, **kwargs):
        if hidden_states is None:
            hidden_states = kwargs.pop("hidden_states")
        _check_call(layer, kwargs)
        out = handler.forward(module, hidden_states, window)
        return (out, None) if handler.TUPLE_OUTPUT else out

    previous = module.__dict__.get("forward")

    def restore() -> None:
        if previous is None:
            module.__dict__.pop("forward", None)
        else:
            module.forward = previous

    stack.callback(restore)
    module.forward = forward
