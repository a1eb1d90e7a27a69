"""gpt-oss: learned per-head attention sinks (``self_attn.sinks``, passed to attention as ``s_aux``).

Hook-only toggles (NoPE, skip, head masks) run its own attention path; window / sinks / receptive-field
changes need the sink logits in HybridScope's kernel (refused with that reason until then).
"""

from __future__ import annotations

from models.adapters.base import register
from models.adapters.hf import HFAdapter


@register
class GptOssAdapter(HFAdapter):
    model_types = ("gpt_oss",)
    family = "gpt-oss"

    @classmethod
    def kernel_gaps(cls, config) -> list[str]:
        return [*super().kernel_gaps(config), "learned attention-sink logits (s_aux)"]
