"""The seven zoo variants: equal size and data, differing only in their token mixers.

Every variant has 8 layers in the paper's efficient:full = 3:1 layout (layers 3 and 7 are full
attention, except in ``full``), the same embedding / MLP / norm sizes, the same attention shape on
its attention layers (6 query heads and 2 KV heads of 32, qk-norm, RoPE), vocab 8192 tied
embeddings, and a training context of 4096 tokens:

=============  ==========  ============================================================
name           pattern     efficient layers
=============  ==========  ============================================================
full           FFFFFFFF    none (full attention everywhere)
swa64          SSSFSSSF    sliding window 64
swa256         SSSFSSSF    sliding window 256
swa1024        SSSFSSSF    sliding window 1024
mamba2         MMMFMMMF    Mamba-2 (4 heads x 32 channels, state 64)
gdn            GGGFGGGF    Gated DeltaNet (3 heads, key/value 32)
swa64_nope     SSSFSSSF    window 64, and NoPE (no RoPE) on the two full-attention layers
=============  ==========  ============================================================

The attention-only variants have identical parameter counts (a window or NoPE adds no weights);
the Mamba-2 and GDN mixer sizes were chosen so their totals are within 1% of those (see
``param_count``). ``size="smoke"`` gives tiny versions (CPU tests, the ``--smoke`` pipeline):
same layouts, hidden 32, windows scaled down to 8/16/32, context 256.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from models.config import HybridConfig

CONTEXT = 4096
SMOKE_CONTEXT = 256
EOS_ID, PAD_ID = 0, 1  # the zoo tokenizer's <|endoftext|> and <|pad|>

BASE: dict[str, Any] = dict(
    vocab_size=8192,
    hidden_size=192,
    intermediate_size=320,
    num_attention_heads=6,
    num_key_value_heads=2,
    head_dim=32,
    qk_norm=True,
    rope_theta=10000.0,
    max_position_embeddings=2 * CONTEXT,
    tie_word_embeddings=True,
    linear_num_heads=4,
    linear_head_dim=32,
    linear_key_dim=32,
    mamba_state_size=64,
    mamba_n_groups=1,
    conv_kernel=4,
    chunk_size=64,
    attn_backend="auto",
    linear_backend="auto",
    eos_token_id=EOS_ID,
    pad_token_id=PAD_ID,
)
SMOKE: dict[str, Any] = dict(
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    linear_num_heads=2,
    linear_head_dim=16,
    linear_key_dim=16,
    mamba_state_size=16,
    chunk_size=16,
    max_position_embeddings=2 * SMOKE_CONTEXT,
)
SIZES = ("zoo", "smoke")


@dataclass(frozen=True)
class Variant:
    """One zoo member: layer pattern, SWA window (None when it has no SWA layer), full-layer PE,
    and mixer-size overrides (only for the recurrent mixers)."""

    name: str
    pattern: str
    window: int | None = None
    full_pe: str = "rope"
    mixer: dict[str, Any] | None = None
    description: str = ""

    @property
    def ratio(self) -> str:
        """efficient:full layer ratio in lowest terms, e.g. "3:1" ("0:1" for the all-full model)."""
        full = self.pattern.count("F")
        g = math.gcd(len(self.pattern) - full, full)
        return f"{(len(self.pattern) - full) // g}:{full // g}"


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("full", "FFFFFFFF", description="full attention in every layer"),
        Variant("swa64", "SSSFSSSF", 64, description="SWA hybrid, window 64"),
        Variant("swa256", "SSSFSSSF", 256, description="SWA hybrid, window 256"),
        Variant("swa1024", "SSSFSSSF", 1024, description="SWA hybrid, window 1024"),
        Variant("mamba2", "MMMFMMMF", description="Mamba-2 hybrid"),
        Variant("gdn", "GGGFGGGF", mixer={"linear_num_heads": 3}, description="Gated DeltaNet hybrid"),
        Variant(
            "swa64_nope",
            "SSSFSSSF",
            64,
            full_pe="nope",
            description="SWA hybrid, window 64, NoPE on the full-attention layers",
        ),
    )
}
NAMES = tuple(VARIANTS)
SMOKE_WINDOWS = {64: 8, 256: 16, 1024: 32}


def get_variant(name: str) -> Variant:
    """The variant called ``name``; ValueError naming the allowed names otherwise."""
    if name not in VARIANTS:
        raise ValueError(f"variant: {name!r} is not one of {list(VARIANTS)}")
    return VARIANTS[name]


def context_of(size: str = "zoo") -> int:
    """Training context (tokens per row) for a size."""
    if size not in SIZES:
        raise ValueError(f"size: {size!r} is not one of {list(SIZES)}")
    return CONTEXT if size == "zoo" else SMOKE_CONTEXT


def variant_config(name: str, size: str = "zoo", **overrides: Any) -> HybridConfig:
    """The :class:`HybridConfig` of variant ``name`` at ``size`` ("zoo" or "smoke"); ``overrides`` win."""
    v = get_variant(name)
    context_of(size)  # validates size
    kw: dict[str, Any] = dict(BASE)
    if size == "smoke":
        kw.update(SMOKE)
    if v.mixer:
        kw.update(
            {
                k: (max(1, val // 2) if size == "smoke" and k == "linear_num_heads" else val)
                for k, val in v.mixer.items()
            }
        )
    window = v.window if size == "zoo" or v.window is None else SMOKE_WINDOWS[v.window]
    if window is not None:
        kw["sliding_window"] = window
    if v.full_pe != "rope":
        kw["layer_pe"] = [v.full_pe if c == "F" else None for c in v.pattern]
    kw.update(overrides)
    return HybridConfig.from_pattern(v.pattern, **kw)


def param_count(config: HybridConfig) -> int:
    """Number of parameters of a model with this config (tied embeddings counted once)."""
    import torch

    from models.modeling import HybridForCausalLM

    with torch.device("meta"):
        model = HybridForCausalLM(config)
    return sum(p.numel() for p in model.parameters())


def describe(size: str = "zoo") -> list[dict[str, Any]]:
    """One row per variant: name, pattern, ratio, window, full-layer PE, parameter count."""
    rows = []
    for name, v in VARIANTS.items():
        cfg = variant_config(name, size)
        rows.append(
            {
                "name": name,
                "pattern": v.pattern,
                "ratio": v.ratio,
                "window": cfg.sliding_window if v.window else None,
                "full_pe": v.full_pe,
                "params": param_count(cfg),
                "bf16_bytes": 2 * param_count(cfg),
                "context": context_of(size),
                "description": v.description,
            }
        )
    return rows
