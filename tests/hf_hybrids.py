"""Tiny random checkpoints of the recurrent / hybrid HF families, built from configs only (never
downloaded), in the style of :mod:`tests.hf_families` (hidden 64, 4 query / 2 KV heads of 16, vocab 128,
seed 0, ``initializer_range`` 0.3). Each mixes its recurrent layers with at least one attention layer.

``HYBRIDS[name]`` = (model_type, config fields on top of BASE, what the family has): ``kinds`` (the
layer kinds HybridScope reports), ``rope`` (its attention layers carry RoPE), ``mixer`` (attribute of a
recurrent layer's mixer), ``heads`` (the recurrent mixer has heads: head masks apply).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from models.plan import FULL, GDN, HYBRID, LIGHTNING, MAMBA, MAMBA2, SHORT_CONV
from tests.hf_families import BASE

LIN = "linear_attention"
M2 = dict(mamba_n_heads=4, mamba_d_head=32, mamba_n_groups=2, mamba_d_state=16, mamba_chunk_size=8)


@dataclass(frozen=True)
class Hybrid:
    model_type: str
    kinds: tuple[str, ...]
    config: dict = field(default_factory=dict)
    mixer: str = "mamba"
    rope: bool = True
    heads: bool = True
    serial: bool = False  # a hybrid layer runs its branches one after the other (Zamba2), not in parallel


HYBRIDS: dict[str, Hybrid] = {
    "qwen3_next": Hybrid("qwen3_next", (GDN, FULL, GDN, GDN), dict(
        layer_types=[LIN, FULL, LIN, LIN], linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
        linear_value_head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        shared_expert_intermediate_size=32), mixer="linear_attn"),
    "bamba": Hybrid("bamba", (MAMBA2, FULL, MAMBA2, MAMBA2), dict(attn_layer_indices=[1], **M2)),
    "granitemoehybrid": Hybrid("granitemoehybrid", (MAMBA2, FULL, MAMBA2, MAMBA2), dict(
        layer_types=[LIN, FULL, LIN, LIN], num_local_experts=4, shared_intermediate_size=64,
        position_embedding_type="rope", **M2)),
    "nemotron_h": Hybrid("nemotron_h", (MAMBA2, "moe", FULL, "mlp", MAMBA2), dict(
        layers_block_type=[LIN, "moe", FULL, "mlp", LIN], num_hidden_layers=5, mamba_num_heads=4, mamba_head_dim=32,
        ssm_state_size=16, n_groups=2, chunk_size=8, n_routed_experts=4, moe_intermediate_size=32,
        moe_shared_expert_intermediate_size=32, num_experts_per_tok=2), mixer="mixer", rope=False),
    "falcon_h1": Hybrid("falcon_h1", (HYBRID,) * 4, dict(
        mamba_d_ssm=None, ssm_multipliers=[0.5, 1.5, 0.8, 1.2, 0.9], attention_in_multiplier=0.7,
        attention_out_multiplier=1.3, ssm_in_multiplier=0.9, ssm_out_multiplier=1.1, key_multiplier=0.8, **M2)),
    "falcon_h1_norm": Hybrid("falcon_h1", (HYBRID,) * 4, dict(mamba_d_ssm=None, mamba_rms_norm=True, **M2)),
    "jamba": Hybrid("jamba", (MAMBA, FULL, MAMBA, FULL), dict(
        attn_layer_period=2, attn_layer_offset=1, num_experts=2, expert_layer_period=2, expert_layer_offset=1,
        mamba_dt_rank=8, mamba_d_state=8), rope=False, heads=False),
    "lfm2": Hybrid("lfm2", (SHORT_CONV, FULL, SHORT_CONV, SHORT_CONV), dict(layer_types=["conv", FULL, "conv", "conv"]),
                   mixer="conv", heads=False),
    "minimax": Hybrid("minimax", (LIGHTNING, FULL, LIGHTNING, LIGHTNING), dict(
        layer_types=[LIN, FULL, LIN, LIN], block_size=8, num_local_experts=2), mixer="self_attn"),
    "zamba2": Hybrid("zamba2", (MAMBA2, HYBRID, MAMBA2, HYBRID), dict(
        head_dim=32, num_key_value_heads=4, layers_block_type=[LIN, "hybrid", LIN, "hybrid"], n_mamba_heads=4,
        mamba_ngroups=2, mamba_d_state=16, chunk_size=8, use_shared_attention_adapter=True, adapter_rank=8,
        use_mem_rope=True, initializer_range=0.15), serial=True),  # 0.3: chaotic enough to amplify rounding
}


def build(name: str, source: torch.nn.Module | None = None, **over) -> torch.nn.Module:
    """A tiny model of family ``name`` in eval mode (seed 0); ``source`` copies its weights."""
    fam = HYBRIDS[name]
    cfg = CONFIG_MAPPING[fam.model_type](**{**BASE, **fam.config, **over})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    if source is not None:
        model.load_state_dict(source.state_dict())
    return model


def recurrent_layers(name: str) -> list[int]:
    return [i for i, k in enumerate(HYBRIDS[name].kinds) if k not in (FULL, "mlp", "moe")]
