"""EXAONE 4: when the config has a sliding window, its full-attention layers are natively NoPE.

Its attention applies RoPE when ``config.sliding_window is None`` (no hybrid layout) or the layer is
a sliding one; the generic refusal applies to switching RoPE on elsewhere.
"""

from __future__ import annotations

from models.adapters.base import register
from models.adapters.hf import HFAdapter
from models.plan import SWA


@register
class Exaone4Adapter(HFAdapter):
    model_types = ("exaone4",)
    family = "EXAONE4"

    @classmethod
    def layer_pe(cls, cfg, i: int, kind: str) -> str:
        return "rope" if cfg.sliding_window is None or kind == SWA else "nope"
