"""SmolLM3 adapter.

SmolLM3 keeps RoPE on some layers only: ``config.no_rope_layers[i]`` is 1 for a RoPE layer and
0 for a NoPE layer, copied at init into ``SmolLM3Attention.use_rope``, which its forward checks
before applying (cos, sin). NoPE on a RoPE layer uses the generic position-embedding hook;
RoPE on a natively NoPE layer flips ``use_rope`` for the duration (no code or weights change).
"""

from __future__ import annotations

from collections.abc import Callable

from models.adapters.base import register
from models.adapters.hf import HFAdapter


@register
class SmolLM3Adapter(HFAdapter):
    model_types = ("smollm3",)
    family = "SmolLM3"

    def layer_pe(self, i: int) -> str:
        return "rope" if self.config.no_rope_layers[i] else "nope"

    def enable_rope(self, i: int) -> Callable[[], None]:
        attn = self.attention_module(i)
        previous = attn.use_rope
        attn.use_rope = 1

        def restore() -> None:
            attn.use_rope = previous

        return restore
