"""Zoo variants and sizes: equal size and data within a zoo, differing only in their token mixers.

Two zoo *generations*, each a set of variants; every size belongs to one generation, so a size name
picks the variant set too (``variants_of(size)``):

**v1** (the bundled zoo, sizes ``zoo`` and ``smoke``; unchanged, its run_ids stay valid). 8 layers in the
paper's efficient:full = 3:1 layout (layers 3 and 7 are full attention, except in ``full``), 6 query
heads and 2 KV heads of 32, qk-norm, RoPE, vocab 8192 tied embeddings, context 4096:

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

**v2** (issue 12: the paper's variants; sizes ``5m``, ``10m``, ``15m`` and the CPU stand-ins
``smoke-5m`` / ``smoke-15m``). Same 8-layer 3:1 layout and context 4096:

=============  ==========  ============================================================
name           pattern     efficient layers
=============  ==========  ============================================================
full           FFFFFFFF    none
swa128         SSSFSSSF    sliding window 128 (the paper's SWA-128)
swa128_nope    SSSFSSSF    window 128, NoPE on the full-attention layers only (SWA-128-NoPE)
swa512         SSSFSSSF    sliding window 512
swa2048        SSSFSSSF    sliding window 2048 (covers half the context: finding 3's large window)
mamba2         MMMFMMMF    Mamba-2 (mixer dims per size, below)
gdn            GGGFGGGF    Gated DeltaNet (mixer dims per size, below)
=============  ==========  ============================================================

=========  ======  ===========  =================  ===================  ==========================
size       hidden  MLP          attention          Mamba-2 (H, P, N)    GDN (H, Dv, Dk)
=========  ======  ===========  =================  ===================  ==========================
5m         256     320          8 q / 2 kv x 32    4, 48, 32            4, 32, 32
10m        320     768          10 q / 2 kv x 32   5, 32, 128           3, 64, 32
15m        384     1024         6 q / 2 kv x 64    4, 64, 128           4, 64, 32
=========  ======  ===========  =================  ===================  ==========================

Parameter counts (``python -m zoo variants --size 5m``): the attention-only variants of a size are
identical (a window or NoPE adds no weights); the recurrent mixer dims were chosen so their totals are
within 1% of those (tested). bf16 checkpoints: 5m 10.8 MB, 10m 21 MB, 15m 31.5 MB per variant (15m is
saved in shards, see ``zoo.checkpoint.SHARD``). Smoke sizes: the same layouts at hidden 32 / 48,
windows scaled down (v1: 64/256/1024 -> 8/16/32; v2: 128/512/2048 -> 8/32/128, the same fraction of
the 256-token smoke context), context 256.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
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
@dataclass(frozen=True)
class Variant:
    """One zoo member: layer pattern, SWA window (None when it has no SWA layer), full-layer PE.
    Recurrent mixer dims belong to the size (``Size.mixers``): they are matched to its attention size."""

    name: str
    pattern: str
    window: int | None = None
    full_pe: str = "rope"
    description: str = ""

    @property
    def ratio(self) -> str:
        """efficient:full layer ratio in lowest terms, e.g. "3:1" ("0:1" for the all-full model)."""
        full = self.pattern.count("F")
        g = math.gcd(len(self.pattern) - full, full)
        return f"{(len(self.pattern) - full) // g}:{full // g}"


@dataclass(frozen=True)
class Size:
    """A model size of one generation: overrides of BASE, recurrent mixer dims per pattern letter
    ("M", "G"), the training context, and (smoke sizes) the window each named window scales to."""

    name: str
    generation: str
    dims: dict[str, Any] = field(default_factory=dict)
    mixers: dict[str, dict[str, Any]] = field(default_factory=dict)
    context: int = CONTEXT
    windows: dict[int, int] | None = None
    smoke: bool = False  # a CPU stand-in (tests, --smoke pipelines)


def _variants(*vs: Variant) -> dict[str, Variant]:
    return {v.name: v for v in vs}


VARIANTS: dict[str, Variant] = _variants(  # generation v1: the bundled zoo
    Variant("full", "FFFFFFFF", description="full attention in every layer"),
    Variant("swa64", "SSSFSSSF", 64, description="SWA hybrid, window 64"),
    Variant("swa256", "SSSFSSSF", 256, description="SWA hybrid, window 256"),
    Variant("swa1024", "SSSFSSSF", 1024, description="SWA hybrid, window 1024"),
    Variant("mamba2", "MMMFMMMF", description="Mamba-2 hybrid"),
    Variant("gdn", "GGGFGGGF", description="Gated DeltaNet hybrid"),
    Variant("swa64_nope", "SSSFSSSF", 64, full_pe="nope",
            description="SWA hybrid, window 64, NoPE on the full-attention layers"),
)
VARIANTS_V2: dict[str, Variant] = _variants(  # generation v2 (issue 12)
    Variant("full", "FFFFFFFF", description="full attention in every layer"),
    Variant("swa128", "SSSFSSSF", 128, description="SWA hybrid, window 128 (SWA-128)"),
    Variant("swa128_nope", "SSSFSSSF", 128, full_pe="nope",
            description="SWA hybrid, window 128, NoPE on the full-attention layers only (SWA-128-NoPE)"),
    Variant("swa512", "SSSFSSSF", 512, description="SWA hybrid, window 512"),
    Variant("swa2048", "SSSFSSSF", 2048, description="SWA hybrid, window 2048 (half the training context)"),
    Variant("mamba2", "MMMFMMMF", description="Mamba-2 hybrid"),
    Variant("gdn", "GGGFGGGF", description="Gated DeltaNet hybrid"),
)
GENERATIONS: dict[str, dict[str, Variant]] = {"v1": VARIANTS, "v2": VARIANTS_V2}
NAMES = tuple(VARIANTS)  # v1's names (the bundle)
NAMES_V2 = tuple(VARIANTS_V2)

_SMOKE_V2 = dict(SMOKE, max_position_embeddings=2 * SMOKE_CONTEXT)
SIZES: dict[str, Size] = {
    s.name: s
    for s in (
        Size("zoo", "v1", mixers={"G": {"linear_num_heads": 3}}),
        Size("smoke", "v1", SMOKE, {"G": {"linear_num_heads": 1}}, SMOKE_CONTEXT, {64: 8, 256: 16, 1024: 32}, True),
        Size(
            "5m", "v2",
            dict(hidden_size=256, intermediate_size=320, num_attention_heads=8, num_key_value_heads=2, head_dim=32),
            {"M": dict(linear_num_heads=4, linear_head_dim=48, mamba_state_size=32),
             "G": dict(linear_num_heads=4, linear_head_dim=32, linear_key_dim=32)},
        ),
        Size(
            "10m", "v2",
            dict(hidden_size=320, intermediate_size=768, num_attention_heads=10, num_key_value_heads=2, head_dim=32),
            {"M": dict(linear_num_heads=5, linear_head_dim=32, mamba_state_size=128),
             "G": dict(linear_num_heads=3, linear_head_dim=64, linear_key_dim=32)},
        ),
        Size(
            "15m", "v2",
            dict(hidden_size=384, intermediate_size=1024, num_attention_heads=6, num_key_value_heads=2, head_dim=64),
            {"M": dict(linear_num_heads=4, linear_head_dim=64, mamba_state_size=128),
             "G": dict(linear_num_heads=4, linear_head_dim=64, linear_key_dim=32)},
        ),
        Size("smoke-5m", "v2", _SMOKE_V2, {}, SMOKE_CONTEXT, {128: 8, 512: 32, 2048: 128}, True),
        Size("smoke-15m", "v2", dict(_SMOKE_V2, hidden_size=48, intermediate_size=96, num_attention_heads=3),
             {}, SMOKE_CONTEXT, {128: 8, 512: 32, 2048: 128}, True),
    )
}
SIZE_NAMES = tuple(SIZES)


def get_size(size: str) -> Size:
    """The size called ``size``; ValueError naming the allowed names otherwise."""
    if size not in SIZES:
        raise ValueError(f"size: {size!r} is not one of {list(SIZES)}")
    return SIZES[size]


def variants_of(size: str = "zoo") -> dict[str, Variant]:
    """The variants of ``size``'s generation (v1 for "zoo"/"smoke")."""
    return GENERATIONS[get_size(size).generation]


def get_variant(name: str, size: str = "zoo") -> Variant:
    """The variant called ``name`` in ``size``'s generation; ValueError naming the allowed names otherwise."""
    variants = variants_of(size)
    if name not in variants:
        raise ValueError(f"variant: {name!r} is not one of {list(variants)} (size {size!r})")
    return variants[name]


def context_of(size: str = "zoo") -> int:
    """Training context (tokens per row) for a size."""
    return get_size(size).context


def variant_config(name: str, size: str = "zoo", **overrides: Any) -> HybridConfig:
    """The :class:`HybridConfig` of variant ``name`` at ``size``; ``overrides`` win."""
    s, v = get_size(size), get_variant(name, size)
    kw: dict[str, Any] = dict(BASE)
    kw.update(s.dims)
    for letter in sorted(set(v.pattern)):
        kw.update(s.mixers.get(letter, {}))
    window = v.window if s.windows is None or v.window is None else s.windows[v.window]
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
    """One row per variant of ``size``'s generation: name, pattern, ratio, window, full-layer PE,
    parameter count."""
    rows = []
    for name, v in variants_of(size).items():
        cfg = variant_config(name, size)
        n = param_count(cfg)
        rows.append(
            {
                "name": name,
                "pattern": v.pattern,
                "ratio": v.ratio,
                "window": cfg.sliding_window if v.window else None,
                "full_pe": v.full_pe,
                "params": n,
                "bf16_bytes": 2 * n,
                "context": context_of(size),
                "size": size,
                "description": v.description,
            }
        )
    return rows
