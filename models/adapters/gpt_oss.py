"""gpt-oss: learned per-head attention sinks (``self_attn.sinks``, passed to attention as ``s_aux``).

Nothing differs from the generic adapter: HybridScope's kernels take the sink logits (``s_aux`` in the
attention call, :meth:`HFAdapter.attention_logit_mods` for attention rows), so every toggle applies.
"""

from __future__ import annotations

from models.adapters.base import register
from models.adapters.hf import HFAdapter


@register
class GptOssAdapter(HFAdapter):
    model_types = ("gpt_oss",)
    family = "gpt-oss"
