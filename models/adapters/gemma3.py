"""Gemma 3 (text-only, ``Gemma3ForCausalLM``, model_type ``gemma3_text``) adapter.

Layers alternate ``sliding_attention`` (window ``config.sliding_window``, local RoPE base) and
``full_attention`` (global RoPE base); each layer type gets its own (cos, sin), which the NoPE
hook replaces per attention module. The attention scale is ``query_pre_attn_scalar ** -0.5``
(passed to our attention as ``scaling``). Bidirectional attention and attention-logit softcapping
cannot be reproduced by the causal kernel and are refused.
"""

from __future__ import annotations

from models.adapters.base import register
from models.adapters.hf import HFAdapter


@register
class Gemma3TextAdapter(HFAdapter):
    model_types = ("gemma3_text",)
    family = "Gemma3"

    def check_supported(self) -> None:
        if getattr(self.config, "use_bidirectional_attention", False):
            raise ValueError("config.use_bidirectional_attention: the Gemma3 adapter supports only False")
        if getattr(self.config, "attn_logit_softcapping", None) is not None:
            raise ValueError("config.attn_logit_softcapping: the Gemma3 adapter supports only None")
