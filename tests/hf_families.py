"""Tiny random checkpoints of the HF families HybridScope adapts, built from configs only (never
downloaded): 4 layers, hidden 64, 4 query / 2 KV heads of 16, vocab 128, seed 0, ``initializer_range``
0.3 (peaked attention: ablations move logits by O(1), far above the tests' tolerances).

``FAMILIES[name]`` = (model_type, config fields on top of BASE, what the family has): ``window`` (a
sliding window the config sets, so a window override can be checked against the natively configured
window), ``kernel`` (window / sinks / receptive-field changes run through HybridScope's kernel; False
where the kernel lacks a feature the family's attention uses), ``attn`` (the attention implementation the
tests build it with when it is not the default: Gemma 2 uses eager, because transformers' SDPA path
silently drops its attention-logit softcapping, while its eager path and HybridScope's kernel apply it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from models.plan import CHUNKED, FULL, SWA

BASE = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, initializer_range=0.3)
ALTERNATING = [SWA, FULL, SWA, FULL]


@dataclass(frozen=True)
class Family:
    model_type: str
    config: dict = field(default_factory=dict)
    window: str | None = "sliding_window"  # config field of the native window (None: no sliding layers)
    kernel: bool = True
    attn: str | None = None  # attention implementation to build with (None: the family's default)


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", window=None),
    "qwen2": Family("qwen2", dict(sliding_window=8, use_sliding_window=True, max_window_layers=2)),
    "mistral": Family("mistral", dict(sliding_window=8)),
    "phi3": Family("phi3", dict(sliding_window=8, pad_token_id=0)),
    "qwen3": Family("qwen3", dict(sliding_window=8, use_sliding_window=True, max_window_layers=0,
                                  layer_types=ALTERNATING)),
    "smollm3": Family("smollm3", dict(sliding_window=8, use_sliding_window=True, no_rope_layers=[1, 1, 1, 0],
                                      layer_types=ALTERNATING, pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    "gemma2": Family("gemma2", dict(sliding_window=8, layer_types=ALTERNATING), attn="eager"),
    "gemma2_nocap": Family("gemma2", dict(sliding_window=8, layer_types=ALTERNATING, attn_logit_softcapping=None)),
    "gemma3_text": Family("gemma3_text", dict(sliding_window=8, layer_types=ALTERNATING, query_pre_attn_scalar=9)),
    # Gemma 3n text tower: KV sharing (layers 2-3 read layers 0-1's keys), AltUp, LAuReL, per-layer inputs
    "gemma3n_text": Family("gemma3n_text", dict(sliding_window=8, layer_types=ALTERNATING, num_kv_shared_layers=2,
                                                laurel_rank=8, altup_num_inputs=4, hidden_size_per_layer_input=16,
                                                vocab_size_per_layer_input=128, intermediate_size=[128] * 4,
                                                activation_sparsity_pattern=[0.95, 0.0, 0.0, 0.0])),
    "cohere2": Family("cohere2", dict(sliding_window=8, layer_types=ALTERNATING, bos_token_id=1, eos_token_id=2,
                                      pad_token_id=0)),
    "cohere": Family("cohere", dict(logit_scale=0.5), window=None),
    "gpt_oss": Family("gpt_oss", dict(sliding_window=8, layer_types=ALTERNATING, num_local_experts=4,
                                      num_experts_per_tok=2)),
    "olmo3": Family("olmo3", dict(sliding_window=8, layer_types=ALTERNATING, eos_token_id=2, pad_token_id=0)),
    "exaone4": Family("exaone4", dict(sliding_window=8, layer_types=ALTERNATING)),
    "granite": Family("granite", dict(logits_scaling=4.0, attention_multiplier=0.2), window=None),
    "llama4_text": Family("llama4_text", dict(attention_chunk_size=8, no_rope_layers=[1, 1, 1, 0],
                                              layer_types=[CHUNKED] * 3 + [FULL], num_local_experts=2,
                                              interleave_moe_layer_step=2, intermediate_size_mlp=128),
                          window=None),
}


def build(name: str, attn: str | None = None, source: torch.nn.Module | None = None, **over) -> torch.nn.Module:
    """A tiny model of family ``name`` in eval mode (seed 0); ``source`` copies its weights; ``over`` edits
    the config; ``attn`` other than the family's default is set after construction."""
    fam = FAMILIES[name]
    attn = attn or fam.attn
    cfg = CONFIG_MAPPING[fam.model_type](**{**BASE, **fam.config, **over})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    if source is not None:
        model.load_state_dict(source.state_dict())
    if attn and model.config._attn_implementation != attn:
        model.set_attn_implementation(attn)
    return model


def tokens(seed: int = 0, batch: int = 2, length: int = 24) -> torch.Tensor:
    """Seeded random ids in [3, 128) (above the special ids 0..2), shape [batch, length]."""
    return torch.randint(3, 128, (batch, length), generator=torch.Generator().manual_seed(seed))


def zero_rotation(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every rotary ``inv_freq`` buffer zeroed (rotation by angle 0: NoPE's reference)."""
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("inv_freq"):
                buf.zero_()
    return model
