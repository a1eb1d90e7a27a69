"""Cohere 2 (Command R7B): the full-attention layers are natively NoPE.

Its attention applies RoPE only where the layer has a sliding window (``sliding_window`` is set for
``sliding_attention`` layers only), so ``full_attention`` layers carry no positional encoding; RoPE
cannot be switched on there without changing model code (the generic refusal applies).
"""

from __future__ import annotations

from models.adapters.base import register
from models.adapters.hf import HFAdapter
from models.plan import SWA


@register
class Cohere2Adapter(HFAdapter):
    model_types = ("cohere2",)
    family = "Cohere2"

    @classmethod
    def layer_pe(cls, cfg, i: int, kind: str) -> str:
        return "rope" if kind == SWA else "nope"
