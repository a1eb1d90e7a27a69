"""Probe parameters in the URL: a compact ``key=value;key=a,b`` text form, validated by the probe's
pydantic model (``backend.params``), canonical (sorted keys, defaults dropped)."""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from backend.params import PROBES

_PARAM_KEY = re.compile(r"^[a-z_]{1,32}$")
_PARAM_VALUE = re.compile(r"^[A-Za-z0-9_.,:/+-]{0,200}$")


def _is_tuple(annotation: Any) -> bool:
    return typing.get_origin(annotation) is tuple


def parse_params(text: str, probe: str) -> dict[str, Any]:
    """``"max_tokens=2048;lengths=256,512"`` -> validated non-default params of ``probe``.

    Raises ValueError naming the parameter and what is allowed.
    """
    model = PROBES[probe][0]
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
            raw[key] = [v for v in value.split(",") if v]
        elif value.lower() in ("none", "null") and not model.model_fields[key].is_required():
            raw[key] = None
        else:
            raw[key] = value
    try:
        typed = model(**raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise ValueError(f"params.{loc}: {err['msg']} (probe {probe})") from None
    return typed.model_dump(mode="json", exclude_defaults=True)


def format_params(values: Mapping[str, Any]) -> str:
    """Canonical compact text of already-validated params (sorted keys)."""

    def one(v: Any) -> str:
        return ",".join(str(x) for x in v) if isinstance(v, list | tuple) else str(v)

    return ";".join(f"{k}={one(v)}" for k, v in sorted(values.items()))
