"""The ablation spec: inference-time toggles applied to a hybrid model, and their resolution.

An :class:`Ablation` is validated without a model (types, ranges, selector syntax) and then
resolved against a :class:`~models.plan.ModelInfo` into one :class:`~models.plan.LayerPlan` per
layer (:meth:`Ablation.resolve`), which checks everything that needs the model.

Canonical form: selectors are normalised (``" ALL "`` -> ``"all"``, ``"8-11,0,4"`` ->
``"0,4,8-11"``), index selectors with equal values are merged (``{"0": 64, "1": 64}`` ->
``{"0-1": 64}``), dict keys are ordered ``all, full, swa, chunked, linear`` then index selectors by first
index, ``skip_layers``/``mask_heads`` are sorted and de-duplicated. So equal ablations compare,
hash and serialise equal. Accepted inputs: keyword fields, a dict, JSON, or the text form
(see :mod:`models.ablation_text`). Every error is an :class:`AblationError` (a ``ValueError``)
with a one-line message starting with the field path, e.g. ``ablation.window[swaa]: ...``; when
an ``Ablation`` is nested in another pydantic model, that model's ``ValidationError`` carries
the same message.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.ablation_text import (
    ALLOWED_SELECTORS,
    MAX_VALUE,
    WORDS,
    AblationError,
    Intervals,
    format_intervals,
    format_text,
    merge_intervals,
    parse_selector,
    parse_text,
    selector_key,
    selector_sort_key,
)
from models.plan import (
    ATTENTION,
    HYBRID,
    RECURRENT,
    LayerPlan,
    ModelInfo,
    native_plans,
    recurrence_window,
    selected_branches,
)

__all__ = ["Ablation", "AblationError"]

FIELDS = ("window", "pe", "receptive_field", "sinks", "skip_layers", "mask_heads")
DICT_FIELDS = ("window", "pe", "receptive_field")
_ALLOWED_VALUE = {
    "window": f"an integer 1..{MAX_VALUE} or null/none (full causal)",
    "pe": "rope, nope",
    "receptive_field": f"an integer 1..{MAX_VALUE}",
}


def _int(v: Any, path: str, lo: int, allowed: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= MAX_VALUE:
        raise AblationError(f"{path}: {v!r} is not allowed; allowed: {allowed}")
    return v


def _value(field: str, v: Any, path: str) -> Any:
    if field == "pe":
        s = v.strip().lower() if isinstance(v, str) else v
        if s not in ("rope", "nope"):
            raise AblationError(f"{path}: {v!r} is not allowed; allowed: rope, nope")
        return s
    if field == "window" and v is None:
        return None
    return _int(v, path, 1, _ALLOWED_VALUE[field])


def _selector_dict(field: str, raw: Any) -> dict[str, Any]:
    """Validate and canonicalise one selector -> value dict."""
    if not isinstance(raw, dict):
        raise AblationError(f"ablation.{field}: expected a mapping selector -> value; "
                            f"allowed selectors: {ALLOWED_SELECTORS}")
    words: dict[str, Any] = {}
    indexed: list[tuple[Intervals, str, Any]] = []
    for key, v in raw.items():
        sel = parse_selector(key, field)
        value = _value(field, v, f"ablation.{field}[{key}]")
        if isinstance(sel, str):
            if sel in words:
                raise AblationError(f"ablation.{field}[{key}]: selector {sel!r} given twice; "
                                    "allowed: each selector once")
            words[sel] = value
        else:
            for other, other_key, _ in indexed:
                layer = _first_overlap(sel, other)
                if layer is not None:
                    raise AblationError(f"ablation.{field}: selectors {other_key!r} and {key!r} both select "
                                        f"layer {layer}; allowed: each layer selected at most once per field")
            indexed.append((sel, key, value))
    by_value: dict[Any, list[tuple[int, int]]] = {}
    for sel, _, value in indexed:
        by_value.setdefault(value, []).extend(sel)
    merged = [(merge_intervals(ivs), value) for value, ivs in by_value.items()]
    out = {w: words[w] for w in WORDS if w in words}
    for sel, value in sorted(merged, key=lambda p: selector_sort_key(p[0])):
        out[format_intervals(sel)] = value
    return out


def _first_overlap(a: Intervals, b: Intervals) -> int | None:
    for lo1, hi1 in a:
        for lo2, hi2 in b:
            if max(lo1, lo2) <= min(hi1, hi2):
                return max(lo1, lo2)
    return None


def _skip_layers(raw: Any) -> list[int]:
    allowed = f"a list of layer indices 0..{MAX_VALUE}"
    if not isinstance(raw, list | tuple):
        raise AblationError(f"ablation.skip_layers: {raw!r} is not a list; allowed: {allowed}")
    return sorted({_int(i, "ablation.skip_layers", 0, allowed) for i in raw})


def _mask_heads(raw: Any) -> list[tuple[int, int]]:
    allowed = "a list of [layer, head] pairs of integers >= 0"
    if not isinstance(raw, list | tuple):
        raise AblationError(f"ablation.mask_heads: {raw!r} is not a list; allowed: {allowed}")
    out = set()
    for pair in raw:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise AblationError(f"ablation.mask_heads: {pair!r} is not a (layer, head) pair; "
                                f"allowed: {allowed}")
        out.add(tuple(_int(x, "ablation.mask_heads", 0, allowed) for x in pair))
    return sorted(out)


def _kinds_summary(info: ModelInfo) -> str:
    return ", ".join(f"{k} x{n}" for k, n in Counter(info.layer_types).items())


class Ablation(BaseModel):
    """Inference-time toggles; see the module docstring and DESIGN.md ("Ablation")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: dict[str, int | None] = Field(default_factory=dict)
    pe: dict[str, Literal["rope", "nope"]] = Field(default_factory=dict)
    receptive_field: dict[str, int] = Field(default_factory=dict)
    sinks: int = 0
    skip_layers: list[int] = Field(default_factory=list)
    mask_heads: list[tuple[int, int]] = Field(default_factory=list)

    # -- validation ---------------------------------------------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _canonicalise(cls, data: Any) -> Any:
        if isinstance(data, Ablation):
            return {f: getattr(data, f) for f in FIELDS}
        if isinstance(data, str):
            data = parse_text(data)
        if not isinstance(data, dict):
            raise AblationError(f"ablation: expected a mapping or the text form, got {type(data).__name__}; "
                                f"allowed fields: {', '.join(FIELDS)}")
        unknown = [k for k in data if k not in FIELDS]
        if unknown:
            raise AblationError(f"ablation.{unknown[0]}: unknown field; allowed: {', '.join(FIELDS)}")
        out: dict[str, Any] = {f: _selector_dict(f, data[f]) for f in DICT_FIELDS if f in data}
        if "sinks" in data:
            out["sinks"] = _int(data["sinks"], "ablation.sinks", 0, f"an integer 0..{MAX_VALUE}")
        if "skip_layers" in data:
            out["skip_layers"] = _skip_layers(data["skip_layers"])
        if "mask_heads" in data:
            out["mask_heads"] = _mask_heads(data["mask_heads"])
        return out

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise _as_ablation_error(e) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Ablation:  # type: ignore[override]
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as e:
            raise _as_ablation_error(e) from None

    @classmethod
    def model_validate_json(cls, json_data: str | bytes, **kwargs: Any) -> Ablation:  # type: ignore[override]
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as e:
            raise _as_ablation_error(e) from None

    def __hash__(self) -> int:
        return hash(self.canonical_json())

    # -- forms --------------------------------------------------------------------------------
    @classmethod
    def from_text(cls, text: str) -> Ablation:
        """Parse the compact text form (``""`` = empty ablation)."""
        return cls.model_validate(parse_text(text))

    def to_text(self) -> str:
        """Canonical compact text form; ``from_text(a.to_text()) == a``."""
        return format_text({f: getattr(self, f) for f in FIELDS})

    def non_default(self) -> dict[str, Any]:
        """The fields that differ from their defaults, JSON-ready."""
        dumped = self.model_dump(mode="json")
        return {f: v for f, v in dumped.items() if v not in ({}, [], 0)}

    def canonical_json(self) -> str:
        """Compact JSON with sorted keys and only non-default fields (``"{}"`` when empty)."""
        return json.dumps(self.non_default(), sort_keys=True, separators=(",", ":"))

    @property
    def is_empty(self) -> bool:
        """True when every field has its default (the ablation is a no-op)."""
        return not self.non_default()

    # -- composition ----------------------------------------------------------------------------
    def merge(self, other: Ablation) -> Ablation:
        """Union of two ablations (nested ``apply_ablation`` is refused; merge instead).

        Selector fields: the same word with different values, or index selectors that share a
        layer with different values, raise an :class:`AblationError`. Overlaps between a word
        and an index selector (or two words, e.g. ``all`` and ``swa``) can only be seen against
        a model and are reported by :meth:`resolve`. ``sinks``: both non-zero and different is
        an error. ``skip_layers`` and ``mask_heads``: union.
        """
        data: dict[str, Any] = {f: _merge_dict(f, getattr(self, f), getattr(other, f)) for f in DICT_FIELDS}
        if self.sinks and other.sinks and self.sinks != other.sinks:
            raise AblationError(f"ablation.sinks: cannot merge {self.sinks} and {other.sinks}; "
                                "allowed: equal values, or 0 on one side")
        data["sinks"] = self.sinks or other.sinks
        data["skip_layers"] = [*self.skip_layers, *other.skip_layers]
        data["mask_heads"] = [*self.mask_heads, *other.mask_heads]
        return Ablation(**data)

    # -- resolution -----------------------------------------------------------------------------
    def resolve(self, info: ModelInfo) -> list[LayerPlan]:
        """Per-layer plans for ``info``: native plans with this ablation's fields applied.

        Attention layers get ``window = min(window, receptive_field)`` (None = infinity) and the
        ablation's sinks when that window is not None. Recurrent layers get ``receptive_field``
        (which must be >= ``info.conv_kernel``); hybrid layers get both, per branch
        (:func:`models.plan.selected_branches`: ``rf[full]`` their attention, ``rf[linear]`` their
        recurrence as ``recurrent_field``). Raises :class:`AblationError` for selectors that do not fit
        the model (see :meth:`_match`), out-of-range layers/heads, and sinks that no layer can take.
        """
        n = info.num_layers
        window = self._match("window", info, (ATTENTION,))[ATTENTION]
        pe = self._match("pe", info, (ATTENTION,))[ATTENTION]
        rf = self._match("receptive_field", info, (ATTENTION, RECURRENT))
        skips = set(self.skip_layers)
        for i in skips:
            if i >= n:
                raise AblationError(f"ablation.skip_layers: layer {i} out of range; allowed: {_range(n)}")
        heads: dict[int, list[int]] = {}
        for layer, head in self.mask_heads:
            if layer >= n:
                raise AblationError(f"ablation.mask_heads: layer {layer} out of range; allowed: {_range(n)}")
            if head >= info.num_heads[layer]:
                raise AblationError(f"ablation.mask_heads: head {head} of layer {layer} out of range; layer "
                                    f"{layer} ({info.layer_types[layer]}) allows heads "
                                    f"{_range(info.num_heads[layer], 'heads')}")
            heads.setdefault(layer, []).append(head)
        plans, sinks_used = [], False
        for i, plan in enumerate(native_plans(info)):
            if plan.is_attention:
                r = rf[ATTENTION].get(i, (None, None))[1]
                w = window[i][1] if i in window else plan.window
                eff = r if w is None else (w if r is None else min(w, r))
                sinks = self.sinks if eff is not None else 0
                sinks_used |= sinks > 0
                chunk = None if i in window else plan.chunk  # a window override replaces chunking
                plan = replace(plan, window=eff, pe=pe[i][1] if i in pe else plan.pe, receptive_field=r,
                               sinks=sinks, chunk=chunk)
            if i in rf[RECURRENT]:
                r_sel, r = rf[RECURRENT][i]
                try:
                    recurrence_window(r, info.conv_kernel)
                except ValueError:
                    raise AblationError(f"ablation.receptive_field[{r_sel}]: {r} is shorter than the "
                                        f"short-conv width of layer {i} ({plan.kind}); allowed: >= "
                                        f"{info.conv_kernel} on recurrent layers") from None
                field = "recurrent_field" if plan.kind == HYBRID else "receptive_field"
                plan = replace(plan, **{field: r})
            plans.append(replace(plan, skip=i in skips, masked_heads=tuple(heads.get(i, ()))))
        if self.sinks and not sinks_used:
            raise AblationError(f"ablation.sinks: no attention layer of this model is windowed after this "
                                f"ablation ({_kinds_summary(info)}); allowed: sinks=0, or a window/receptive "
                                "field on an attention layer")
        return plans

    def _match(
        self, field: str, info: ModelInfo, branches: tuple[str, ...]
    ) -> dict[str, dict[int, tuple[str, Any]]]:
        """branch -> {layer -> (selector, value)} for one selector field and the ``branches`` it sets.

        Words select the layers (branches) they address (:func:`models.plan.selected_branches`) and
        must select at least one; explicit indices must be in range and name layers with one of
        ``branches``; no layer's branch may be selected twice.
        """
        n, types = info.num_layers, info.layer_types
        out: dict[str, dict[int, tuple[str, Any]]] = {b: {} for b in branches}
        for key, value in getattr(self, field).items():
            sel = parse_selector(key, field)
            path = f"ablation.{field}[{key}]"
            word = sel if isinstance(sel, str) else None
            if word is None:
                if sel[-1][1] >= n:
                    bad = max(sel[-1][0], n)
                    raise AblationError(f"{path}: layer {bad} out of range; allowed: {_range(n)}")
                layers = [i for lo, hi in sel for i in range(lo, hi + 1)]
                for i in layers:
                    if not set(selected_branches(None, types[i])) & set(branches):
                        if field != "receptive_field":
                            hint = " — use receptive_field" if field == "window" else ""
                            raise AblationError(f"{path}: {field} applies to attention layers; layer {i} is "
                                                f"{types[i]}{hint}")
                        raise AblationError(f"{path}: receptive_field applies to layers with a token mixer; "
                                            f"layer {i} is {types[i]} (no token mixer); allowed: skip_layers")
            else:
                layers = range(n)
            picked = [(i, b) for i in layers for b in selected_branches(word, types[i]) if b in branches]
            if word is not None and not picked:
                raise AblationError(f"{path}: selects no layer of this model ({_kinds_summary(info)}); "
                                    f"allowed: selectors matching {_applies_to(field)}")
            for i, b in picked:
                if i in out[b]:
                    raise AblationError(f"ablation.{field}: layer {i} is selected by both {out[b][i][0]!r} and "
                                        f"{key!r}; allowed: each layer selected at most once per field")
                out[b][i] = (key, value)
        return out


def _applies_to(field: str) -> str:
    return "attention layers" if field in ("window", "pe") else "any layer with a token mixer"


def _range(n: int, what: str = "layers") -> str:
    return f"0-{n - 1}" if n > 0 else f"none (no {what})"


def _merge_dict(field: str, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    by_value: dict[Any, list[tuple[int, int]]] = {}
    for key, value in [*a.items(), *b.items()]:
        sel = parse_selector(key, field)
        if isinstance(sel, str):
            if key in out and out[key] != value:
                raise AblationError(f"ablation.{field}[{key}]: cannot merge {out[key]!r} and {value!r}; "
                                    "allowed: equal values for the same selector")
            out[key] = value
        else:
            by_value.setdefault(value, []).extend(sel)
    merged = [(merge_intervals(ivs), v) for v, ivs in by_value.items()]
    for i, (s1, v1) in enumerate(merged):
        for s2, v2 in merged[i + 1:]:
            layer = _first_overlap(s1, s2)
            if layer is not None:
                raise AblationError(f"ablation.{field}: layer {layer} gets both {v1!r} and {v2!r}; "
                                    "allowed: equal values for a layer selected by both ablations")
    out.update({selector_key(s): v for s, v in merged})
    return out


def _as_ablation_error(e: ValidationError) -> AblationError:
    err = e.errors()[0]
    inner = (err.get("ctx") or {}).get("error")
    if isinstance(inner, AblationError):
        return AblationError(str(inner))
    loc = ".".join(str(x) for x in err["loc"])
    where = f"ablation.{loc}" if loc else "ablation"
    return AblationError(f"{where}: {err['msg']}; allowed fields: {', '.join(FIELDS)}")
