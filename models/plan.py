"""The contract between the ablation engine and the models it acts on.

An :class:`~models.ablation.Ablation` is resolved against a :class:`ModelInfo` into one
:class:`LayerPlan` per layer. Native models (``models/modeling.py``) and HF adapters
(``models/adapters/``) only ever consume ``LayerPlan`` objects; they never parse ablations.

Layer kinds use HF's ``layer_types`` names, made specific for recurrent layers (``mamba2``,
``gated_deltanet``, ``mamba`` = Mamba-1, ``short_conv``, ``lightning_attention``). ``ATTENTION_KINDS``
take windows, positional encodings and sinks; ``LINEAR_KINDS`` (recurrent mixers) take only receptive
fields, skips and head masks. A ``hybrid`` layer (Falcon-H1) runs an attention branch and a Mamba-2
branch in parallel: the attention toggles and ``rf[full]`` address its attention branch, ``rf[linear]``
its recurrent branch (``LayerPlan.recurrent_field``), ``rf[all]`` / explicit indices both
(:func:`selected_branches`, the one place that says so). Layers without a token mixer (Nemotron-H's
``mlp`` / ``moe`` blocks) keep HF's name; only skips apply to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FULL = "full_attention"
SWA = "sliding_attention"
CHUNKED = "chunked_attention"  # Llama 4: a query sees the keys of its own chunk of `chunk` tokens
HYBRID = "hybrid"  # Falcon-H1: attention and Mamba-2 in parallel in one layer (their outputs summed)
MAMBA2 = "mamba2"
GDN = "gated_deltanet"
MAMBA = "mamba"  # Mamba-1 (selective scan, a diagonal state per channel; Jamba)
SHORT_CONV = "short_conv"  # gated short convolution (LFM2): no state beyond the conv width
LIGHTNING = "lightning_attention"  # linear attention with a per-head decay (MiniMax)
ATTENTION_KINDS = (FULL, SWA, CHUNKED, HYBRID)
PE_VALUES = ("rope", "nope")
LINEAR_KINDS = (MAMBA2, GDN, MAMBA, SHORT_CONV, LIGHTNING, "linear_attention")
ATTENTION, RECURRENT = "attention", "recurrent"  # the branches (token mixers) a layer can have
# one letter per native layer kind: tiny/<pattern> refs, HybridConfig.from_pattern, zoo variant names
LAYER_LETTERS = {"F": FULL, "S": SWA, "M": MAMBA2, "G": GDN}

# selector word -> predicate on a layer kind
SELECTOR_WORDS = {
    "all": lambda kind: True,
    "full": lambda kind: kind in (FULL, HYBRID),
    "swa": lambda kind: kind == SWA,
    "chunked": lambda kind: kind == CHUNKED,
    "linear": lambda kind: kind in LINEAR_KINDS or kind == HYBRID,
}


def branches(kind: str) -> tuple[str, ...]:
    """The token mixers of a ``kind`` layer: attention, recurrent, both (hybrid), or none (mlp / moe)."""
    if kind == HYBRID:
        return (ATTENTION, RECURRENT)
    if kind in ATTENTION_KINDS:
        return (ATTENTION,)
    return (RECURRENT,) if kind in LINEAR_KINDS else ()


def selected_branches(word: str | None, kind: str) -> tuple[str, ...]:
    """The branches of a ``kind`` layer that selector ``word`` addresses (None: an explicit index).

    ``all`` and indices address every branch; another word addresses the layer only if
    :data:`SELECTOR_WORDS` says so, and of a hybrid layer only the branch it names (``full`` its
    attention, ``linear`` its recurrence). A layer without a token mixer has no branch to address.
    """
    if word is not None and not SELECTOR_WORDS[word](kind):
        return ()
    if kind == HYBRID and word not in (None, "all"):
        return (ATTENTION,) if word == "full" else (RECURRENT,)
    return branches(kind)


@dataclass(frozen=True)
class ModelInfo:
    """What the ablation engine needs to know about a model to validate and resolve."""

    layer_types: tuple[str, ...]
    num_heads: tuple[int, ...]  # heads per layer (attention heads, or recurrent heads)
    windows: tuple[int | None, ...]  # native window per layer (None = full causal / n.a.)
    pe: tuple[str | None, ...]  # native "rope"/"nope" per attention layer, None for recurrent
    conv_kernel: int = 4  # short-conv width of recurrent layers (receptive_field must be >= it)
    chunks: tuple[int | None, ...] | None = None  # native chunk size per layer (chunked attention), else None

    def chunk_of(self, i: int) -> int | None:
        return self.chunks[i] if self.chunks is not None else None

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
    ``chunk``: chunked attention (Llama 4): a query sees only keys of its own ``chunk``-token block
    (intersected with ``window`` when both are set); None = not chunked.
    ``recurrent_field``: hybrid layers only: the receptive field of the recurrent branch (as
    ``receptive_field`` of a recurrent layer); None = unrestricted.
    ``sinks``: the first n tokens stay visible to windowed attention (0 = none).
    ``skip``: the mixer output is zeroed (the residual stream passes through).
    ``masked_heads``: head indices whose output is zeroed before the output projection.
    """

    kind: str
    window: int | None = None
    pe: str | None = None
    receptive_field: int | None = None
    chunk: int | None = None
    recurrent_field: int | None = None
    sinks: int = 0
    skip: bool = False
    masked_heads: tuple[int, ...] = field(default_factory=tuple)

    @property
    def is_attention(self) -> bool:
        return self.kind in ATTENTION_KINDS


def recurrence_window(receptive_field: int | None, conv_kernel: int) -> int | None:
    """The one receptive-field rule of recurrent layers: window of the recurrence for field ``k``.

    A recurrent layer reads a causal short convolution of width ``conv_kernel`` (K), whose output at
    s already reaches inputs s-K+1..s. So for "nothing older than k tokens influences the output",
    the recurrence itself may read only the last ``w = k - (K - 1)`` conv outputs: the oldest input
    reached is then t-w+1-(K-1) = t-k+1. None (unrestricted) stays None; ``k < K`` would leave
    ``w < 1`` and raises ``ValueError``.
    """
    if receptive_field is None:
        return None
    if receptive_field < conv_kernel:
        raise ValueError(
            f"receptive_field: {receptive_field} is shorter than the short-conv width ({conv_kernel}) of "
            f"recurrent layers; allowed: >= {conv_kernel} on recurrent layers"
        )
    return receptive_field - (conv_kernel - 1)


def check_plans(info: ModelInfo, plans: list[LayerPlan] | tuple[LayerPlan, ...]) -> None:
    """Raise ``ValueError`` naming ``plans[i].<field>`` unless ``plans`` fit the model ``info`` describes.

    The one validation of plans, for every adapter (native and HF), run before anything changes.
    """
    if len(plans) != info.num_layers:
        raise ValueError(f"plans: expected {info.num_layers} LayerPlans (one per layer), got {len(plans)}")
    for i, p in enumerate(plans):
        if not isinstance(p, LayerPlan):
            raise ValueError(f"plans[{i}]: expected a LayerPlan, got {type(p).__name__}")
        kind = info.layer_types[i]
        if p.kind != kind:
            raise ValueError(f"plans[{i}].kind: expected {kind!r} (the layer's type), got {p.kind!r}")
        if not isinstance(p.sinks, int) or p.sinks < 0:
            raise ValueError(f"plans[{i}].sinks: expected an int >= 0, got {p.sinks!r}")
        n = info.num_heads[i]
        for h in p.masked_heads:
            if not isinstance(h, int) or not 0 <= h < n:
                raise ValueError(f"plans[{i}].masked_heads: head {h!r} out of range 0..{n - 1}")
        if kind in ATTENTION_KINDS:
            if p.pe not in PE_VALUES:
                raise ValueError(f"plans[{i}].pe: expected one of {', '.join(PE_VALUES)}, got {p.pe!r}")
            if p.window is not None and (not isinstance(p.window, int) or p.window < 1):
                raise ValueError(f"plans[{i}].window: expected an int >= 1 or None, got {p.window!r}")
            if p.chunk is not None and (not isinstance(p.chunk, int) or p.chunk < 1):
                raise ValueError(f"plans[{i}].chunk: expected an int >= 1 or None, got {p.chunk!r}")
        elif p.window is not None or p.pe is not None or p.chunk is not None:
            raise ValueError(f"plans[{i}].window/pe: recurrent layer {i} ({kind}) takes None for both")
        if not branches(kind) and p.receptive_field is not None:
            raise ValueError(f"plans[{i}].receptive_field: layer {i} ({kind}) has no token mixer to restrict")
        if kind != HYBRID and p.recurrent_field is not None:
            raise ValueError(f"plans[{i}].recurrent_field: only hybrid layers have one; layer {i} is {kind}")
        if RECURRENT in branches(kind):
            try:
                recurrence_window(p.recurrent_field if kind == HYBRID else p.receptive_field, info.conv_kernel)
            except ValueError as e:
                raise ValueError(f"plans[{i}].{e}") from None


def native_plans(info: ModelInfo) -> list[LayerPlan]:
    """The plans that reproduce the unmodified model (what an empty ablation resolves to)."""
    return [
        LayerPlan(kind=k, window=w if k in ATTENTION_KINDS else None, pe=p if k in ATTENTION_KINDS else None,
                  chunk=info.chunk_of(i) if k in ATTENTION_KINDS else None)
        for i, (k, w, p) in enumerate(zip(info.layer_types, info.windows, info.pe))
    ]
