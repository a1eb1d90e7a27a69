"""The contract between the ablation engine and the models it acts on.

An :class:`~models.ablation.Ablation` is resolved against a :class:`ModelInfo` into one
:class:`LayerPlan` per layer. Native models (``models/modeling.py``) and HF adapters
(``models/adapters/``) only ever consume ``LayerPlan`` objects; they never parse ablations.

Layer kinds use HF's ``layer_types`` names. ``ATTENTION_KINDS`` take windows, positional
encodings and sinks; ``LINEAR_KINDS`` (recurrent mixers) take only receptive fields, skips and
head masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FULL = "full_attention"
SWA = "sliding_attention"
MAMBA2 = "mamba2"
GDN = "gated_deltanet"
ATTENTION_KINDS = (FULL, SWA)
LINEAR_KINDS = (MAMBA2, GDN, "linear_attention", "mamba")
# one letter per native layer kind: tiny/<pattern> refs, HybridConfig.from_pattern, zoo variant names
LAYER_LETTERS = {"F": FULL, "S": SWA, "M": MAMBA2, "G": GDN}

# selector word -> predicate on a layer kind
SELECTOR_WORDS = {
    "all": lambda kind: True,
    "full": lambda kind: kind == FULL,
    "swa": lambda kind: kind == SWA,
    "linear": lambda kind: kind in LINEAR_KINDS,
}


@dataclass(frozen=True)
class ModelInfo:
    """What the ablation engine needs to know about a model to validate and resolve."""

    layer_types: tuple[str, ...]
    num_heads: tuple[int, ...]  # heads per layer (attention heads, or recurrent heads)
    windows: tuple[int | None, ...]  # native window per layer (None = full causal / n.a.)
    pe: tuple[str | None, ...]  # native "rope"/"nope" per attention layer, None for recurrent
    conv_kernel: int = 4  # short-conv width of recurrent layers (receptive_field must be >= it)

    @property
    def num_layers(self) -> int:
        return len(self.layer_types)


@dataclass(frozen=True)
class LayerPlan:
    """Effective inference-time settings of one layer after an ablation.

    ``window``: attention window actually used (None = full causal). For attention layers it is
    min(native-or-overridden window, receptive_field). Always None for recurrent layers.
    ``pe``: "rope"/"nope" for attention layers, None for recurrent layers.
    ``receptive_field``: for recurrent layers, k such that nothing older than k tokens influences
    the output (None = unrestricted). For attention layers it is folded into ``window`` and kept
    here only for display.
    ``sinks``: the first n tokens stay visible to windowed attention (0 = none).
    ``skip``: the mixer output is zeroed (the residual stream passes through).
    ``masked_heads``: head indices whose output is zeroed before the output projection.
    """

    kind: str
    window: int | None = None
    pe: str | None = None
    receptive_field: int | None = None
    sinks: int = 0
    skip: bool = False
    masked_heads: tuple[int, ...] = field(default_factory=tuple)

    @property
    def is_attention(self) -> bool:
        return self.kind in ATTENTION_KINDS


def native_plans(info: ModelInfo) -> list[LayerPlan]:
    """The plans that reproduce the unmodified model (what an empty ablation resolves to)."""
    return [
        LayerPlan(kind=k, window=w if k in ATTENTION_KINDS else None, pe=p if k in ATTENTION_KINDS else None)
        for k, w, p in zip(info.layer_types, info.windows, info.pe)
    ]
