"""Tiny native hybrids for tests and demos (seconds on CPU, fp32)."""

from __future__ import annotations

from typing import Any

import torch

from models.config import HybridConfig
from models.modeling import HybridForCausalLM

TINY_DEFAULTS: dict[str, Any] = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    sliding_window=8,
    linear_num_heads=4,
    linear_head_dim=16,
    linear_key_dim=16,
    mamba_state_size=16,
    mamba_n_groups=1,
    conv_kernel=4,
    chunk_size=16,
    max_position_embeddings=1024,
)


def tiny_config(pattern: str = "SSSF", **overrides: Any) -> HybridConfig:
    """A small :class:`HybridConfig` with one layer per letter of ``pattern`` (F/S/M/G); ``overrides`` win."""
    return HybridConfig.from_pattern(pattern, **{**TINY_DEFAULTS, **overrides})


def tiny_model(pattern: str = "SSSF", seed: int = 0, **overrides: Any) -> HybridForCausalLM:
    """A randomly initialised tiny model in eval mode; same ``seed`` and config -> same weights.

    The global torch RNG state is left as it was.
    """
    config = tiny_config(pattern, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HybridForCausalLM(config)
    return model.eval()
