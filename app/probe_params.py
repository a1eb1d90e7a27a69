"""Probe parameters in the URL: a compact ``key=value;key=a,b`` text form, validated by the probe's
pydantic model (``backend.params``), canonical (sorted keys, defaults dropped).

The URL holds *overrides* of a base: the dashboard defaults of the probe (``app.defaults``), so a
view that the bundle has traces for needs no ``params`` at all. :func:`resolve` turns base + overrides
into the RunSpec params; :func:`overrides` is the inverse (only the values that differ from the base;
``none`` sets an optional value back to None).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from backend.params import parse_scalar
from backend.probes.registry import PROBES

_PARAM_KEY = re.compile(r"^[a-z_]{1,32}$")
_PARAM_VALUE = re.compile(r"^[A-Za-z0-9_.,:/+-]{0,200}$")


def _is_tuple(annotation: Any) -> bool:
    return typing.get_origin(annotation) is tuple


def parse_params(text: str, probe: str) -> dict[str, Any]:
    """``"max_tokens=2048;lengths=256,512"`` -> validated non-default params of ``probe``.

    Raises ValueError naming the parameter and what is allowed.
    """
    return resolve(text, probe, {})


def _explicit(text: str, probe: str) -> dict[str, Any]:
    """The entries of ``text``, checked against the probe's fields (values still raw)."""
    model = PROBES[probe].params
    raw: dict[str, Any] = {}
    for seg in (s for s in text.split(";") if s):
        key, sep, value = seg.partition("=")
        if not sep or not _PARAM_KEY.match(key) or not _PARAM_VALUE.match(value):
            raise ValueError(f"params: malformed entry {seg[:40]!r}; expected key=value")
        if key not in model.model_fields:
            raise ValueError(
                f"params: unknown parameter {key!r} for probe {probe}; allowed: "
                f"{', '.join(model.model_fields)}"
            )
        ann = model.model_fields[key].annotation
        if _is_tuple(ann):
            raw[key] = [parse_scalar(v) for v in value.split(",") if v]
        elif value.lower() in ("none", "null") and not model.model_fields[key].is_required():
            raw[key] = None
        else:
            raw[key] = parse_scalar(value)  # numbers as numbers: the params are strict
    return raw


def _validated(probe: str, values: Mapping[str, Any]) -> Any:
    try:
        return PROBES[probe].params(**values)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        msg = err['msg'].removeprefix('Value error, ')
        raise ValueError(f"params{'.' + loc if loc else ''}: {msg} (probe {probe})") from None


def resolve(text: str, probe: str, base: Mapping[str, Any]) -> dict[str, Any]:
    """The RunSpec params (non-default values) of ``base`` with the overrides in ``text`` applied.

    Raises ValueError naming the parameter and what is allowed.
    """
    return _validated(probe, {**base, **_explicit(text, probe)}).model_dump(mode="json", exclude_defaults=True)


def full(params: Mapping[str, Any], probe: str) -> dict[str, Any]:
    """Every parameter of ``probe`` (JSON values): ``params`` over the probe's defaults."""
    return _validated(probe, params).model_dump(mode="json")


def overrides(params: Mapping[str, Any], probe: str, base: Mapping[str, Any]) -> str:
    """Canonical text of the values of ``params`` that differ from ``base`` (both validated)."""
    have, ref = full(params, probe), full(base, probe)
    return format_params({k: v for k, v in have.items() if v != ref[k]})


def canonical(text: str, probe: str, base: Mapping[str, Any]) -> str:
    """``text`` validated against ``base`` and written canonically (overrides equal to the base dropped)."""
    return overrides(resolve(text, probe, base), probe, base)


def format_params(values: Mapping[str, Any]) -> str:
    """Canonical compact text of already-validated params (sorted keys; None is ``none``)."""

    def one(v: Any) -> str:
        if v is None:
            return "none"
        return ",".join(str(x) for x in v) if isinstance(v, list | tuple) else str(v)

    return ";".join(f"{k}={one(v)}" for k, v in sorted(values.items()))
