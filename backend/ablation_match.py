"""Ablations matched by what they do, not by how they are spelled (torch-free: the dashboard uses it).

``rf[full]=64`` and ``rf[3,7]=64`` are the same ablation on an ``SSSFSSSF`` model: both resolve to
the same :class:`~models.plan.LayerPlan` per layer. :func:`effect` is that resolution, made
comparable (an attention layer's ``receptive_field`` is folded into its window and kept in the plan
only for display, so it is left out); :func:`same_effect` compares two ablations on one model.

A model's :class:`~models.plan.ModelInfo` comes, without torch or transformers, from
:func:`info_of_meta` (the ``model_info`` the runner writes into every run's meta) or
:func:`native_info` (a native ``config.json``, ``model_type = "hybridscope"``: the bundled zoo).

:func:`meaning` labels an ablation by what it selects (``rf[0-2,4-6]=64`` on ``SSSFSSSF`` ->
``efficient layers, k=64``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from models.ablation import Ablation, AblationError
from models.ablation_text import format_intervals, merge_intervals
from models.plan import ATTENTION_KINDS, FULL, HYBRID, LINEAR_KINDS, SWA, LayerPlan, ModelInfo, branches

INFO_FIELDS = ("layer_types", "num_heads", "windows", "pe", "conv_kernel", "chunks")


# ---------------------------------------------------------------------------------------------
# ModelInfo without torch
# ---------------------------------------------------------------------------------------------
def info_to_json(info: ModelInfo) -> dict[str, Any]:
    """What the runner stores as ``meta.model_info`` (lists, JSON-ready)."""
    d = asdict(info)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k in INFO_FIELDS}


def info_from_json(obj: Any) -> ModelInfo | None:
    """The ModelInfo of a stored ``model_info`` object; None when it is missing or malformed."""
    if not isinstance(obj, dict):
        return None
    try:
        types = tuple(str(t) for t in obj["layer_types"])
        n = len(types)
        info = ModelInfo(
            layer_types=types,
            num_heads=tuple(int(h) for h in obj["num_heads"]),
            windows=tuple(None if w is None else int(w) for w in obj["windows"]),
            pe=tuple(None if p is None else str(p) for p in obj["pe"]),
            conv_kernel=int(obj.get("conv_kernel", 4)),
            chunks=None if obj.get("chunks") is None else tuple(None if c is None else int(c) for c in obj["chunks"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    if not n or any(len(t) != n for t in (info.num_heads, info.windows, info.pe)):
        return None
    return info


def info_of_meta(meta: str | dict | None) -> ModelInfo | None:
    """The ModelInfo in a run's meta (the ``runs.meta`` JSON text or a dict), if it holds one."""
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            return None
    return info_from_json(meta.get("model_info")) if isinstance(meta, dict) else None


def native_info(config: dict) -> ModelInfo | None:
    """The ModelInfo of a native (``hybridscope``) config dict, as ``NativeAdapter.info_for`` gives it
    (tested against it); None for any other model type."""
    if not isinstance(config, dict) or config.get("model_type") != "hybridscope":
        return None
    try:
        types = tuple(config["layer_types"])
        n = len(types)
        lw = config.get("layer_windows") or [None] * n
        lp = config.get("layer_pe") or [None] * n

        def window(i: int) -> int | None:
            if types[i] != SWA:
                return None
            return lw[i] if lw[i] is not None else config.get("sliding_window")

        def pe(i: int) -> str | None:
            if types[i] not in ATTENTION_KINDS:
                return None
            return lp[i] or "rope"

        return ModelInfo(
            layer_types=types,
            num_heads=tuple(
                config.get("num_attention_heads", 8) if t in ATTENTION_KINDS else config.get("linear_num_heads", 8)
                for t in types
            ),
            windows=tuple(window(i) for i in range(n)),
            pe=tuple(pe(i) for i in range(n)),
            conv_kernel=int(config.get("conv_kernel", 4)),
        )
    except (KeyError, TypeError, IndexError):
        return None


def native_info_at(path: str | Path) -> ModelInfo | None:
    """:func:`native_info` of the ``config.json`` in directory ``path`` (None when absent or not native)."""
    try:
        return native_info(json.loads((Path(path) / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# matching
# ---------------------------------------------------------------------------------------------
def effect(ablation: Ablation | str, info: ModelInfo) -> tuple[LayerPlan, ...] | None:
    """What ``ablation`` does to the model ``info`` describes: its plans, comparable (None when it
    does not fit the model)."""
    abl = Ablation.from_text(ablation) if isinstance(ablation, str) else ablation
    try:
        plans = abl.resolve(info)
    except (AblationError, ValueError):
        return None
    return tuple(replace(p, receptive_field=None) if p.kind in ATTENTION_KINDS else p for p in plans)


def same_effect(a: Ablation | str, b: Ablation | str, info: ModelInfo) -> bool:
    """Whether ablations ``a`` and ``b`` do the same to this model (False when either does not fit)."""
    ea = effect(a, info)
    return ea is not None and ea == effect(b, info)


# ---------------------------------------------------------------------------------------------
# labels by meaning
# ---------------------------------------------------------------------------------------------
def _groups(info: ModelInfo) -> list[tuple[str, frozenset[int]]]:
    """Named layer sets of this model, most specific names last (the first exact match wins)."""
    mixers = [i for i, t in enumerate(info.layer_types) if branches(t)]
    full = [i for i in mixers if info.layer_types[i] in (FULL, HYBRID)]
    efficient = [i for i in mixers if i not in full]
    out = [("all layers", frozenset(mixers)), ("full-attention layers", frozenset(full)),
           ("efficient layers", frozenset(efficient)),
           ("SWA layers", frozenset(i for i in mixers if info.layer_types[i] == SWA)),
           ("recurrent layers", frozenset(i for i in mixers if info.layer_types[i] in LINEAR_KINDS))]
    return [(name, s) for name, s in out if s]


_WORDS = {"all": "all layers", "full": "full-attention layers", "swa": "SWA layers",
          "linear": "recurrent layers", "chunked": "chunked-attention layers"}


def _layers(selector: str, info: ModelInfo | None) -> str:
    if selector in _WORDS:
        return _WORDS[selector]
    idx: set[int] = set()
    for part in selector.split(","):
        a, _, b = part.partition("-")
        idx.update(range(int(a), int(b or a) + 1))
    if info is not None:
        for name, s in _groups(info):
            if s == idx:
                return name
    return f"layer{'s' if len(idx) > 1 else ''} {format_intervals(merge_intervals([(i, i) for i in sorted(idx)]))}"


def _value(field: str, v: Any) -> str:
    if field == "receptive_field":
        return f"k={v}"
    if field == "window":
        return "full causal" if v is None else f"window {v}"
    return "NoPE" if v == "nope" else "RoPE"


def meaning(ablation: Ablation | str, info: ModelInfo | None = None) -> str:
    """A label of what ``ablation`` does: ``efficient layers, k=64``; ``none`` for the empty one.
    Index selectors are named by the layer set they equal on the model ``info`` describes."""
    try:
        abl = Ablation.from_text(ablation) if isinstance(ablation, str) else ablation
    except AblationError:
        return str(ablation)
    if abl.is_empty:
        return "none"
    parts = []
    for field in ("receptive_field", "window", "pe"):
        for sel, v in (getattr(abl, field) or {}).items():
            parts.append(f"{_layers(sel, info)}, {_value(field, v)}")
    if abl.sinks:
        parts.append(f"{abl.sinks} sink tokens")
    if abl.skip_layers:
        parts.append("skip " + _layers(",".join(map(str, abl.skip_layers)), info))
    if abl.mask_heads:
        parts.append("mask heads " + ", ".join(f"{layer}.{h}" for layer, h in abl.mask_heads))
    return "; ".join(parts)


__all__ = ["effect", "info_from_json", "info_of_meta", "info_to_json", "meaning", "native_info",
           "native_info_at", "same_effect"]
