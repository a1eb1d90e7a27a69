"""What a capture records: :class:`Capture`, a dict-like store ``(layer_idx, name) -> tensor``.

    with adapter_for(model).capture(names=("q", "k", "mixer_out"), layers=[3]) as cap:
        model(ids)
    q = cap[(3, "q")]

Capture points (the same names and shapes for every model; see ``models.adapters``):

* ``"q"`` / ``"k"``: attention queries / keys [B, H, L, D] after qk-norm and RoPE (k has the KV
  heads, before GQA expansion). Attention layers only.
* ``"mixer_out"``: the mixer output [B, L, hidden] that is added to the residual stream (after any
  skip / head mask of the layer's plan). All layer kinds.

A later forward pass inside the same capture overwrites earlier entries.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

CAPTURE_NAMES = ("q", "k", "mixer_out")


class Capture:
    """Dict-like store ``(layer_idx, name) -> tensor`` filled by the model while a capture is active."""

    def __init__(self, names: tuple[str, ...], layers: tuple[int, ...], on_record=None) -> None:
        self.names, self.layers, self.on_record = names, layers, on_record
        self._data: dict[tuple[int, str], torch.Tensor] = {}

    def record(self, layer_idx: int, name: str, tensor: torch.Tensor) -> None:
        """Keep the tensor if ``name`` was requested (or stream it to ``on_record(layer_idx, name,
        tensor)`` without keeping it)."""
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
