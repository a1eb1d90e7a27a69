"""Capture intermediate tensors of a model during forward passes.

    with capture(model, names=("q", "k", "mixer_out"), layers=[3]) as cap:
        model(ids)
    q = cap[(3, "q")]

Capture points (recorded by the mixers themselves, detached):

* ``"q"`` / ``"k"``: attention queries / keys [B, H, L, D] after qk-norm and RoPE (k has the KV
  heads, before GQA expansion). Attention layers only.
* ``"mixer_out"``: the mixer output [B, L, hidden] that is added to the residual stream (after any
  skip / head mask of the layer's plan). All layer kinds.

Outside the context, each mixer's ``_capture`` is None and the only cost is that attribute check.
A later forward pass inside the same context overwrites earlier entries.

Native models record through their mixers; HF models with an adapter (models/adapters/) are
handled by :mod:`models.capture_hf` (same names and shapes; q/k via a wrapping attention
implementation, mixer_out via a hook on the attention module). For those, enter any ablation
before the capture.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

CAPTURE_NAMES = ("q", "k", "mixer_out")


class Capture:
    """Dict-like store ``(layer_idx, name) -> tensor`` filled by the mixers."""

    def __init__(self, names: tuple[str, ...], layers: tuple[int, ...], on_record=None) -> None:
        self.names, self.layers, self.on_record = names, layers, on_record
        self._data: dict[tuple[int, str], torch.Tensor] = {}

    def record(self, layer_idx: int, name: str, tensor: torch.Tensor) -> None:
        """Called by a mixer; keeps the tensor if ``name`` was requested (or streams it to
        ``on_record(layer_idx, name, tensor)`` without keeping it)."""
        if name in self.names:
            if self.on_record is not None:
                self.on_record(layer_idx, name, tensor.detach())
            else:
                self._data[(layer_idx, name)] = tensor.detach()

    def __getitem__(self, key: tuple[int, str]) -> torch.Tensor:
        if key not in self._data:
            raise KeyError(
                f"{key!r} was not captured; captured keys: {sorted(self._data)} "
                f"(q/k exist for attention layers only)"
            )
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def keys(self):
        return self._data.keys()

    def items(self):
        return self._data.items()


def _native_mixers(model: nn.Module) -> dict[int, nn.Module]:
    """The native mixers of ``model`` by layer index (modules with ``layer_idx``, ``plan``, ``_capture``);
    empty for other models."""
    return {
        m.layer_idx: m
        for m in model.modules()
        if hasattr(m, "layer_idx") and hasattr(m, "plan") and hasattr(m, "_capture")
    }


@contextmanager
def capture(
    model: nn.Module, names: Iterable[str] = CAPTURE_NAMES, layers: Iterable[int] | None = None,
    on_record=None,
) -> Iterator[Capture]:
    """Record ``names`` at ``layers`` (None = all) of a native or adapted HF model for forwards run
    inside the block.

    With ``on_record(layer_idx, name, tensor)`` the tensors are streamed to the callback as each
    layer produces them and not kept (probes use this to stay within a plain forward's memory)."""
    names = tuple(names)
    bad = [n for n in names if n not in CAPTURE_NAMES]
    if bad or not names:
        raise ValueError(f"names: {bad or names!r} not allowed; choose from {list(CAPTURE_NAMES)}")
    mixers = _native_mixers(model)
    if not mixers:
        from models.capture_hf import capture_hf

        with capture_hf(model, names, None if layers is None else tuple(layers), on_record) as cap:
            yield cap
        return
    layers = tuple(sorted(mixers)) if layers is None else tuple(layers)
    missing = [i for i in layers if i not in mixers]
    if missing:
        raise ValueError(f"layers: {missing} out of range; the model has layers 0..{max(mixers)}")
    busy = [i for i in layers if mixers[i]._capture is not None]
    if busy:
        raise RuntimeError(f"layers: {busy} are already being captured (nested capture on the same layers)")
    cap = Capture(names, layers, on_record)
    for i in layers:
        mixers[i]._capture = cap
    try:
        yield cap
    finally:
        for i in layers:
            mixers[i]._capture = None


def current_plans(model: nn.Module) -> list:
    """The LayerPlans the model follows right now (after any ablation in effect; for an HF model
    the plans of its active ``Adapter.apply()``, else its native plans)."""
    if hasattr(model, "current_plans"):
        return model.current_plans()
    from models.adapters import adapter_for

    return adapter_for(model).current_plans()


def attention_scale(model: nn.Module, layer: int) -> float:
    """Softmax scale of an attention layer (what multiplies q.k before the softmax)."""
    mixers = _native_mixers(model)
    if not mixers:
        from models.capture_hf import attention_scale_hf

        return attention_scale_hf(model, layer)
    m = mixers[layer]
    scale = getattr(m, "scaling", None)
    return float(scale) if scale is not None else float(m.head_dim) ** -0.5
