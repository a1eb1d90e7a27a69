"""Qwen3 adapter.

Qwen3 marks windowed layers with ``config.layer_types == "sliding_attention"`` (when
``use_sliding_window``; the window is ``config.sliding_window``). All layers use RoPE. Its
attention applies ``q_norm``/``k_norm`` before RoPE, so replacing (cos, sin) by (1, 0) for NoPE
leaves the normalised q/k untouched.
"""

from __future__ import annotations

from models.adapters.base import register
from models.adapters.hf import HFAdapter


@register
class Qwen3Adapter(HFAdapter):
    model_types = ("qwen3",)
    family = "Qwen3"
