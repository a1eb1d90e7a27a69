"""Configuration of the native HybridScope model family (``model_type = "hybridscope"``).

A hybrid stacks decoder layers whose token mixer is one of four kinds, named with HF's
``layer_types`` vocabulary (constants in :mod:`models.plan`):

* ``"full_attention"``     causal softmax attention over the whole prefix,
* ``"sliding_attention"``  the same with a window (a query sees itself and ``window - 1`` earlier tokens),
* ``"mamba2"``             Mamba-2 SSD (scalar decay per head),
* ``"gated_deltanet"``     Gated DeltaNet.

Per-layer overrides: ``layer_windows[i]`` replaces ``sliding_window`` for SWA layer ``i``;
``layer_pe[i]`` ("rope"/"nope") sets the positional encoding of attention layer ``i``.
``HybridConfig.from_pattern("SSSF", ...)`` spells ``layer_types`` with one letter per layer.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig

from models.plan import ATTENTION_KINDS, FULL, GDN, LAYER_LETTERS, MAMBA2, SWA

LAYER_TYPES = (FULL, SWA, MAMBA2, GDN)
PE_TYPES = ("rope", "nope")
ATTN_BACKENDS = ("auto", "sdpa", "flex", "reference")
LINEAR_BACKENDS = ("auto", "chunked", "recurrent", "fla")
PATTERN_LETTERS = LAYER_LETTERS


def _default_layer_types(n: int) -> list[str]:
    """Three SWA layers then one full-attention layer, repeated ("SSSF" * n/4)."""
    return [FULL if (i + 1) % 4 == 0 else SWA for i in range(n)]


@strict
class HybridConfig(PretrainedConfig):
    """Config of :class:`models.modeling.HybridForCausalLM`.

    Attention layers: ``num_attention_heads`` query heads and ``num_key_value_heads`` KV heads (GQA)
    of size ``head_dim``, optional per-head RMSNorm on q and k (``qk_norm``, as in Qwen3), RoPE with
    ``rope_theta`` unless ``layer_pe[i] == "nope"``.
    Recurrent layers: ``linear_num_heads`` heads; Mamba-2 heads have ``linear_head_dim`` channels (P)
    and a state of ``mamba_state_size`` (N) shared by ``mamba_n_groups`` groups of B/C; Gated DeltaNet
    heads have key size ``linear_key_dim`` (Dk) and value size ``linear_head_dim`` (Dv). Both run a
    causal depthwise short convolution of width ``conv_kernel`` before the recurrence.
    ``attn_backend`` / ``linear_backend`` pick the kernel paths (``"auto"``: fast path for the device).
    """

    model_type = "hybridscope"
    keys_to_ignore_at_inference = ["past_key_values"]

    vocab_size: int = 32000
    hidden_size: int = 512
    intermediate_size: int = 1408
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    head_dim: int = 64
    layer_types: list[str] | None = None
    sliding_window: int = 128
    layer_windows: list[int | None] | None = None
    layer_pe: list[str | None] | None = None
    rope_theta: float | int = 10000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 8192
    tie_word_embeddings: bool = True
    qk_norm: bool = True
    linear_num_heads: int = 8
    linear_head_dim: int = 64
    linear_key_dim: int = 64
    mamba_state_size: int = 64
    mamba_n_groups: int = 1
    conv_kernel: int = 4
    attn_backend: str = "auto"
    linear_backend: str = "auto"
    chunk_size: int = 64
    initializer_range: float = 0.02
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        if self.layer_types is None:
            self.layer_types = _default_layer_types(self.num_hidden_layers)
        super().__post_init__(**kwargs)
        self.check()

    # ---------------------------------------------------------------- validation
    def check(self) -> None:
        """Raise ``ValueError`` naming the offending field (and the allowed values) if inconsistent."""
        n = self.num_hidden_layers
        types = list(self.layer_types)
        if len(types) != n:
            raise ValueError(f"layer_types: has {len(types)} entries but num_hidden_layers is {n}")
        for i, t in enumerate(types):
            if t not in LAYER_TYPES:
                raise ValueError(f"layer_types[{i}]: {t!r} is not one of {list(LAYER_TYPES)}")
        if self.sliding_window < 1:
            raise ValueError(f"sliding_window: must be a positive int, got {self.sliding_window}")
        if self.layer_windows is not None:
            if len(self.layer_windows) != n:
                raise ValueError(
                    f"layer_windows: has {len(self.layer_windows)} entries, expected {n} (or None)"
                )
            for i, w in enumerate(self.layer_windows):
                if w is None:
                    continue
                if types[i] != SWA:
                    raise ValueError(
                        f"layer_windows[{i}]: only sliding_attention layers take a window (layer {i} is "
                        f"{types[i]}); use None"
                    )
                if w < 1:
                    raise ValueError(f"layer_windows[{i}]: must be a positive int or None, got {w}")
        if self.layer_pe is not None:
            if len(self.layer_pe) != n:
                raise ValueError(f"layer_pe: has {len(self.layer_pe)} entries, expected {n} (or None)")
            for i, p in enumerate(self.layer_pe):
                if p is None:
                    continue
                if types[i] not in ATTENTION_KINDS:
                    raise ValueError(f"layer_pe[{i}]: layer {i} is {types[i]} (recurrent); use None")
                if p not in PE_TYPES:
                    raise ValueError(f"layer_pe[{i}]: {p!r} is not one of {list(PE_TYPES)} or None")
        if self.attn_backend not in ATTN_BACKENDS:
            raise ValueError(f"attn_backend: {self.attn_backend!r} is not one of {list(ATTN_BACKENDS)}")
        if self.linear_backend not in LINEAR_BACKENDS:
            raise ValueError(f"linear_backend: {self.linear_backend!r} is not one of {list(LINEAR_BACKENDS)}")
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"num_key_value_heads: must divide num_attention_heads ({self.num_attention_heads}), "
                f"got {self.num_key_value_heads}"
            )
        if self.linear_num_heads % self.mamba_n_groups != 0:
            raise ValueError(
                f"mamba_n_groups: must divide linear_num_heads ({self.linear_num_heads}), "
                f"got {self.mamba_n_groups}"
            )
        if self.conv_kernel < 1:
            raise ValueError(f"conv_kernel: must be a positive int, got {self.conv_kernel}")

    def validate_layer_type(self) -> None:
        """Strict-dataclass hook (also run by ``save_pretrained``): our own layer vocabulary."""
        self.check()

    # ---------------------------------------------------------------- per-layer views
    def window_of(self, i: int) -> int | None:
        """Native attention window of layer ``i``: SWA -> its window, full / recurrent -> None."""
        if self.layer_types[i] != SWA:
            return None
        if self.layer_windows is not None and self.layer_windows[i] is not None:
            return self.layer_windows[i]
        return self.sliding_window

    def pe_of(self, i: int) -> str | None:
        """Native positional encoding of layer ``i``: "rope"/"nope" for attention, None for recurrent."""
        if self.layer_types[i] not in ATTENTION_KINDS:
            return None
        if self.layer_pe is not None and self.layer_pe[i] is not None:
            return self.layer_pe[i]
        return "rope"

    @classmethod
    def from_pattern(cls, pattern: str, **kwargs: Any) -> HybridConfig:
        """Build a config from one letter per layer: F=full, S=SWA, M=Mamba-2, G=Gated DeltaNet.

        ``HybridConfig.from_pattern("SSSF", hidden_size=256)`` has 4 layers, the last one global.
        """
        bad = sorted({c for c in pattern if c not in PATTERN_LETTERS})
        if not pattern or bad:
            raise ValueError(
                f"pattern: {pattern!r} must be a non-empty string of letters {sorted(PATTERN_LETTERS)} "
                f"(F=full, S=SWA, M=mamba2, G=gated_deltanet)"
            )
        types = [PATTERN_LETTERS[c] for c in pattern]
        return cls(layer_types=types, num_hidden_layers=len(types), **kwargs)


__all__ = ["HybridConfig", "LAYER_TYPES", "PE_TYPES", "ATTN_BACKENDS", "LINEAR_BACKENDS", "PATTERN_LETTERS"]
