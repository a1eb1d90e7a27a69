"""JSON from outside (HTTP bodies, ``--spec-json``, ``--param`` values), bounded before it is parsed.

Python's ``json`` recurses once per nesting level (deep input: RecursionError), turns a 5000-digit
number into a ValueError from ``int`` and accepts ``NaN``/``Infinity``. :func:`loads` first checks the
size and the nesting depth on the raw text (strings skipped), refuses non-finite constants, and turns
every failure into one ``ValueError`` line naming what was parsed (torch-free).
"""

from __future__ import annotations

import json
import re
from typing import Any

from backend.limits import MAX_JSON_DEPTH

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def depth(text: str) -> int:
    """The deepest nesting of arrays/objects in JSON text (brackets inside strings do not count)."""
    deepest = level = 0
    for ch in _BRACKETS.findall(_STRING.sub("", text)):
        level += 1 if ch in "[{" else -1
        deepest = max(deepest, level)
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (finite numbers only)")


def loads(text: str | bytes, what: str, max_bytes: int | None = None, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON ``text``; ValueError ``"<what>: ..."`` (one line) when it is too large, nested deeper
    than ``max_depth``, not valid JSON, or holds a number Python refuses to read."""
    if isinstance(text, bytes | bytearray):
        if max_bytes is not None and len(text) > max_bytes:
            raise ValueError(f"{what}: {len(text)} bytes, at most {max_bytes} allowed")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{what}: not UTF-8 text") from None
    elif max_bytes is not None and len(text.encode("utf-8", errors="surrogatepass")) > max_bytes:
        raise ValueError(f"{what}: longer than {max_bytes} bytes")
    if depth(text) > max_depth:
        raise ValueError(f"{what}: JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # a number too long for int(), NaN/Infinity
        raise ValueError(f"{what}: {' '.join(str(e).split())[:160]}") from None
