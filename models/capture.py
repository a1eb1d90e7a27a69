"""Capture intermediate tensors of a native hybrid model during forward passes.

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
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

CAPTURE_NAMES = ("q", "k", "mixer_out")


class Capture:
    """Dict-like store ``(layer_idx, name) -> tensor`` filled by the mixers."""

    def __init__(self, names: tuple[str, ...], layers: tuple[int, ...]) -> None:
        self.names, self.layers = names, layers
        self._data: dict[tuple[int, str], torch.Tensor] = {}

    def record(self, layer_idx: int, name: str, tensor: torch.Tensor) -> None:
        """Called by a mixer; keeps the tensor if ``name`` was requested."""
        if name in self.names:
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


def _mixers(model: nn.Module) -> dict[int, nn.Module]:
    """The native mixers of ``model`` by layer index (modules with ``layer_idx``, ``plan``, ``_capture``)."""
    found = {
        m.layer_idx: m
        for m in model.modules()
        if hasattr(m, "layer_idx") and hasattr(m, "plan") and hasattr(m, "_capture")
    }
    if not found:
        raise TypeError(f"model: {type(model).__name__} has no native HybridScope mixers to capture from")
    return found


@contextmanager
def capture(
    model: nn.Module, names: Iterable[str] = CAPTURE_NAMES, layers: Iterable[int] | None = None
) -> Iterator[Capture]:
    """Record ``names`` at ``layers`` (None = all) of a native model for forwards run inside the block."""
    names = tuple(names)
    bad = [n for n in names if n not in CAPTURE_NAMES]
    if bad or not names:
        raise ValueError(f"names: {bad or names!r} not allowed; choose from {list(CAPTURE_NAMES)}")
    mixers = _mixers(model)
    layers = tuple(sorted(mixers)) if layers is None else tuple(layers)
    missing = [i for i in layers if i not in mixers]
    if missing:
        raise ValueError(f"layers: {missing} out of range; the model has layers 0..{max(mixers)}")
    busy = [i for i in layers if mixers[i]._capture is not None]
    if busy:
        raise RuntimeError(f"layers: {busy} are already being captured (nested capture on the same layers)")
    cap = Capture(names, layers)
    for i in layers:
        mixers[i]._capture = cap
    try:
        yield cap
    finally:
        for i in layers:
            mixers[i]._capture = None
