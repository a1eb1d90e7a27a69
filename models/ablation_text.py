"""Layer selectors and the compact text form of an ablation.

Selectors name layers: the words ``all``, ``full``, ``swa``, ``linear`` or explicit indices and
inclusive ranges such as ``0,4,8-11``. Index selectors are kept as sorted, merged inclusive
intervals and written back in normal form (``"8-11,0,4"`` -> ``"0,4,8-11"``, ``"0,1"`` -> ``"0-1"``).

The text form (for URLs and the CLI) is ``;``-separated ``key=value`` segments::

    window[swa]=64;pe[full]=nope;rf[full]=512;sinks=4;skip=3,5;heads=2.1,5.0

``window[...]=none`` means full causal attention; whitespace is ignored; the empty string is the
empty ablation. :func:`parse_text` only splits the text into raw field values; all value checks
happen in :class:`models.ablation.Ablation`'s validators, so both forms give the same errors.
"""

from __future__ import annotations

import re
from typing import Any

MAX_VALUE = 2**31  # largest accepted window / receptive field / sinks / index
WORDS = ("all", "full", "swa", "chunked", "linear")  # canonical order of word selectors
ALLOWED_SELECTORS = "all, full, swa, chunked, linear, or indices/ranges like 0,4,8-11"
TEXT_EXAMPLE = "window[swa]=64;pe[full]=nope;rf[full]=512;sinks=4;skip=3,5;heads=2.1,5.0"

Intervals = tuple[tuple[int, int], ...]  # sorted, disjoint, non-adjacent inclusive (lo, hi)


class AblationError(ValueError):
    """Bad ablation input; the message is one line starting with the field path."""


# ---------------------------------------------------------------------------------------------
# selectors
# ---------------------------------------------------------------------------------------------
_PART = re.compile(r"^(\d{1,12})(?:-(\d{1,12}))?$")


def merge_intervals(intervals: list[tuple[int, int]]) -> Intervals:
    """Sort and merge overlapping or adjacent inclusive intervals."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def format_intervals(intervals: Intervals) -> str:
    """``((0, 0), (4, 4), (8, 11))`` -> ``"0,4,8-11"``."""
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in intervals)


def parse_indices(text: str, path: str, what: str) -> Intervals:
    """Parse ``"0,4,8-11"`` into merged intervals; ``path``/``what`` shape the error message."""
    s = re.sub(r"\s+", "", text)
    parts: list[tuple[int, int]] = []
    for part in s.split(","):
        m = _PART.match(part)
        if m is None:
            raise AblationError(f"{path}: malformed {what} {text!r}; allowed: {_allowed(what)}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi > MAX_VALUE:
            raise AblationError(f"{path}: index {hi} in {text!r} is too large; "
                                f"allowed: indices 0..{MAX_VALUE}")
        if lo > hi:
            raise AblationError(f"{path}: range {part!r} runs backwards; allowed: ranges lo-hi with lo <= hi")
        parts.append((lo, hi))
    return merge_intervals(parts)


def _allowed(what: str) -> str:
    return ALLOWED_SELECTORS if what == "selector" else "layer indices/ranges like 0,4,8-11"


def parse_selector(raw: Any, field: str) -> str | Intervals:
    """A selector word (``"all"`` ...) or the merged intervals of an index selector."""
    path = f"ablation.{field}[{raw}]"
    if not isinstance(raw, str):
        raise AblationError(f"{path}: selector must be a string; allowed: {ALLOWED_SELECTORS}")
    s = raw.strip().lower()
    if s in WORDS:
        return s
    if re.fullmatch(r"[a-z_]+", s):
        raise AblationError(f"{path}: unknown selector {raw!r}; allowed: {ALLOWED_SELECTORS}")
    return parse_indices(s, path, "selector")


def selector_key(sel: str | Intervals) -> str:
    """The normal-form string of a parsed selector."""
    return sel if isinstance(sel, str) else format_intervals(sel)


def selector_sort_key(sel: str | Intervals) -> tuple[int, int]:
    """Words first in :data:`WORDS` order, then index selectors by first index."""
    return (0, WORDS.index(sel)) if isinstance(sel, str) else (1, sel[0][0])


# ---------------------------------------------------------------------------------------------
# text form
# ---------------------------------------------------------------------------------------------
_SEGMENT = re.compile(r"^([A-Za-z_]+)(?:\[([^\]]*)\])?=(.*)$")
_DICT_KEYS = {"window": "window", "pe": "pe", "rf": "receptive_field", "receptive_field": "receptive_field"}
_SCALAR_KEYS = {"sinks": "sinks", "skip": "skip_layers", "skip_layers": "skip_layers",
                "heads": "mask_heads", "mask_heads": "mask_heads"}
_TEXT_NAMES = {"window": "window", "pe": "pe", "receptive_field": "rf"}
_INT = re.compile(r"^[+-]?\d{1,12}$")


def _text_value(v: str) -> Any:
    """Numerals become ints, ``none``/``null`` becomes None; anything else stays a string."""
    if _INT.match(v):
        return int(v)
    if v.lower() in ("none", "null"):
        return None
    return v


def parse_text(text: str) -> dict[str, Any]:
    """Split the text form into raw field values (validated later by ``Ablation``)."""
    if not isinstance(text, str):
        raise AblationError(f"ablation: text form must be a string; allowed: e.g. {TEXT_EXAMPLE}")
    out: dict[str, Any] = {}
    for segment in text.split(";"):
        seg = re.sub(r"\s+", "", segment)
        if not seg:
            continue
        m = _SEGMENT.match(seg)
        if m is None:
            raise AblationError(f"ablation: segment {segment.strip()!r} is not key=value; "
                                f"allowed: e.g. {TEXT_EXAMPLE}")
        key, sel, value = m.group(1).lower(), m.group(2), m.group(3)
        if key in _DICT_KEYS:
            field = _DICT_KEYS[key]
            if sel is None:
                raise AblationError(f"ablation.{field}: needs a layer selector like {key}[swa]={value}; "
                                    f"allowed selectors: {ALLOWED_SELECTORS}")
            entries = out.setdefault(field, {})
            if sel in entries:
                raise AblationError(f"ablation.{field}[{sel}]: given twice; allowed: each selector once")
            entries[sel] = _text_value(value)
        elif key in _SCALAR_KEYS:
            field = _SCALAR_KEYS[key]
            if sel is not None:
                raise AblationError(f"ablation.{field}: takes no selector (got {key}[{sel}]); "
                                    f"allowed: e.g. {TEXT_EXAMPLE}")
            if field in out:
                raise AblationError(f"ablation.{field}: given twice; allowed: each field once")
            out[field] = _scalar_value(field, value)
        else:
            raise AblationError(f"ablation: unknown field {key!r}; allowed: window[...], pe[...], rf[...], "
                                "sinks, skip, heads")
    return out


def _scalar_value(field: str, value: str) -> Any:
    if field == "sinks":
        return _text_value(value)
    if field == "skip_layers":
        ivs = parse_indices(value, "ablation.skip_layers", "layer list")
        if sum(hi - lo + 1 for lo, hi in ivs) > 1_000_000:
            raise AblationError("ablation.skip_layers: range too long; allowed: at most 1000000 layers")
        return [i for lo, hi in ivs for i in range(lo, hi + 1)]
    pairs = []
    for item in value.split(","):
        m = re.fullmatch(r"(\d{1,12})\.(\d{1,12})", item)
        if m is None:
            raise AblationError(f"ablation.mask_heads: malformed head {item!r}; allowed: layer.head pairs "
                                "like 2.1,5.0")
        pairs.append((int(m.group(1)), int(m.group(2))))
    return pairs


def format_text(fields: dict[str, Any]) -> str:
    """Canonical text form of already-canonical field values (defaults omitted)."""
    segs: list[str] = []
    for field in ("window", "pe", "receptive_field"):
        for sel, v in fields[field].items():
            segs.append(f"{_TEXT_NAMES[field]}[{sel}]={'none' if v is None else v}")
    if fields["sinks"]:
        segs.append(f"sinks={fields['sinks']}")
    if fields["skip_layers"]:
        ivs = merge_intervals([(i, i) for i in fields["skip_layers"]])
        segs.append(f"skip={format_intervals(ivs)}")
    if fields["mask_heads"]:
        segs.append("heads=" + ",".join(f"{layer}.{head}" for layer, head in fields["mask_heads"]))
    return ";".join(segs)
