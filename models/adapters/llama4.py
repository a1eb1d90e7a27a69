"""Llama 4 (text): chunked attention layers plus natively NoPE layers (``no_rope_layers``).

On a NoPE layer its ``use_rope`` flag also turns off the qk L2-norm and turns on attention-temperature
tuning, so flipping it would not be "the same layer with RoPE": RoPE is not switched on there (NoPE on
RoPE layers works through the generic position-embedding hook, with complex ``freqs_cis``).
"""

from __future__ import annotations

from models.adapters.base import register
from models.adapters.hf import HFAdapter


@register
class Llama4TextAdapter(HFAdapter):
    model_types = ("llama4_text", "llama4")
    family = "Llama4"
    flag_enables_rope = False
