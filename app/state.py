"""View state <-> URL query parameters (the permalink), with validation of every parameter.

The URL is the single source of truth: every run parses ``st.query_params`` into a :class:`ViewState`
(:func:`parse`), and widgets write back through callbacks (:func:`bind`, :func:`update`). Only
non-default values are written (:func:`encode`). Malformed or hostile values never raise: each one
yields a warning (shown by the app) and its field falls back to the default. No value from the URL
is ever put into SQL text; the views use parameterised queries only.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import streamlit as st

from app.probe_params import format_params, parse_params
from backend.params import PROBES
from models.ablation import Ablation, AblationError

VIEWS: dict[str, str] = {  # name -> title (also the navigation order)
    "overview": "Overview",
    "longppl": "LongPPL",
    "token_loss": "Per-token loss",
    "retrieval_heads": "Retrieval heads",
    "niah": "NIAH",
    "runs": "Runs",
}
VIEW_PROBE: dict[str, str] = {
    "overview": "longppl",
    "longppl": "longppl",
    "token_loss": "token_loss",
    "retrieval_heads": "retrieval_heads",
    "niah": "niah",
    "runs": "token_loss",
}
RUN_PROBES = tuple(p for p in PROBES if p != "key_tokens")  # what the run panel offers
BUILTIN_DATA = ("zoo:test", "zoo:val", "stdlib")
MAX_VALUE_LEN = 512
MAX_INT = {"doc": 1_000_000, "start": 1 << 20, "layer": 4095, "head": 4095}
MAX_MODELS = 16
_REF = re.compile(r"^[A-Za-z0-9_.:/@+=,~-]{1,200}$")
_UINT = re.compile(r"^\d{1,9}$")


@dataclass(frozen=True)
class ViewState:
    """Everything a permalink holds. ``None`` model means "the first known model"."""

    view: str = "overview"
    model: str | None = None
    abl: str = ""  # ablation A, canonical text form
    cmp: bool = False  # compare A vs B
    model_b: str | None = None  # None = same model as A
    abl_b: str = ""
    data: str | None = None  # None = the probe's default dataset
    probe: str | None = None  # run-panel probe; None = the view's probe
    params: str = ""  # probe parameters, canonical "key=value;key=a,b" form
    doc: int = 0
    start: int = 0  # first token shown in the per-token view
    layer: int | None = None
    head: int | None = None
    models: tuple[str, ...] = ()  # model filter of the comparison views (empty = all)

    @property
    def effective_probe(self) -> str:
        return self.probe or VIEW_PROBE[self.view]

    @property
    def effective_model_b(self) -> str | None:
        return self.model_b or self.model


DEFAULT = ViewState()
FIELDS = tuple(f.name for f in fields(ViewState))


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:;&=\"'/])")


def shown(value: Any, limit: int = 40) -> str:
    """A value made safe to echo in Markdown (warnings, errors): control and format characters dropped,
    length capped, every Markdown/HTML special character backslash-escaped, so it shows as plain text."""
    s = "".join(c for c in str(value) if unicodedata.category(c)[0] != "C" or c == " ")
    s = s[:limit] + ("…" if len(s) > limit else "")
    return _MD_SPECIAL.sub(r"\\\1", s)


# ---------------------------------------------------------------------------------------------
# field parsers: raw URL string -> value, or ValueError with the reason
# ---------------------------------------------------------------------------------------------
def _ref(raw: str) -> str:
    if not _REF.match(raw) or ".." in raw:
        raise ValueError("not a model/dataset ref (letters, digits and ._:/@+=,~- only)")
    return raw


def _data(raw: str) -> str:
    ref = _ref(raw)
    if ref in BUILTIN_DATA:
        return ref
    if os.environ.get("HYBRIDSCOPE_ALLOW_FILE_DATA") == "1":
        return ref
    raise ValueError(f"dataset must be one of {', '.join(BUILTIN_DATA)} (file datasets are off here)")


def _uint(name: str) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        hi = MAX_INT[name]
        if not _UINT.match(raw) or int(raw) > hi:
            raise ValueError(f"must be an integer in [0, {hi}]")
        return int(raw)

    return parse


def _bool(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be 1 or 0")


def _ablation(raw: str) -> str:
    try:
        return Ablation.from_text(raw).to_text()
    except AblationError as e:
        raise ValueError(str(e)) from None


def _view(raw: str) -> str:
    if raw not in VIEWS:
        raise ValueError(f"unknown view; allowed: {', '.join(VIEWS)}")
    return raw


def _probe(raw: str) -> str:
    if raw not in RUN_PROBES:
        raise ValueError(f"unknown probe; allowed: {', '.join(RUN_PROBES)}")
    return raw


def _models(raw: str) -> tuple[str, ...]:
    items = [m for m in raw.split("|") if m]
    if len(items) > MAX_MODELS:
        raise ValueError(f"at most {MAX_MODELS} models")
    return tuple(dict.fromkeys(_ref(m) for m in items))


PARSERS: dict[str, Callable[[str], Any]] = {
    "view": _view,
    "model": _ref,
    "abl": _ablation,
    "cmp": _bool,
    "model_b": _ref,
    "abl_b": _ablation,
    "data": _data,
    "probe": _probe,
    "params": lambda raw: raw,
    "doc": _uint("doc"),
    "start": _uint("start"),
    "layer": _uint("layer"),
    "head": _uint("head"),
    "models": _models,
}


# ---------------------------------------------------------------------------------------------
# URL <-> state
# ---------------------------------------------------------------------------------------------
def parse(query: Mapping[str, Any]) -> tuple[ViewState, list[str]]:
    """Query parameters -> (state, warnings). Never raises; bad values fall back to defaults."""
    values: dict[str, Any] = {}
    warnings: list[str] = []
    unknown = [k for k in query if k not in PARSERS]
    if unknown:
        names = ", ".join(f"“{shown(k, 24)}”" for k in unknown[:5])
        warnings.append(f"Ignored unknown URL parameter(s): {names}.")
    for key in FIELDS:
        if key not in query:
            continue
        raw = query[key]
        raw = raw[-1] if isinstance(raw, list | tuple) else raw
        try:
            if not isinstance(raw, str) or len(raw) > MAX_VALUE_LEN:
                raise ValueError(f"longer than {MAX_VALUE_LEN} characters")
            values[key] = PARSERS[key](raw)
        except ValueError as e:
            default = getattr(DEFAULT, key)
            warnings.append(
                f"Ignored URL parameter “{key}={shown(raw)}”: {shown(e, 160)}. "
                f"Using the default ({shown(default) if default not in (None, '') else 'none'})."
            )
    state = replace(DEFAULT, **values)
    if state.params:
        try:
            state = replace(state, params=format_params(parse_params(state.params, state.effective_probe)))
        except ValueError as e:
            warnings.append(
                f"Ignored URL parameter “params={shown(state.params)}”: {shown(e, 160)}. "
                "Using the probe's defaults."
            )
            state = replace(state, params="")
    return state, warnings


def _encode_value(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, tuple):
        return "|".join(v)
    return str(v)


def encode(state: ViewState) -> dict[str, str]:
    """Only the non-default fields, as URL strings (field order)."""
    return {k: _encode_value(getattr(state, k)) for k in FIELDS if getattr(state, k) != getattr(DEFAULT, k)}


def with_changes(state: ViewState, **changes: Any) -> ViewState:
    """``state`` with ``changes`` applied and validated (ValueError with the reason on bad input).

    Changing the view or probe drops params that do not fit the new probe.
    """
    candidate = replace(state, **changes)
    if ("view" in changes or "probe" in changes) and "params" not in changes and candidate.params:
        try:
            parse_params(candidate.params, candidate.effective_probe)
        except ValueError:
            candidate = replace(candidate, params="")
    encoded = encode(candidate)
    for key in changes:
        if key in encoded:
            if len(encoded[key]) > MAX_VALUE_LEN:
                raise ValueError(f"{key}: longer than {MAX_VALUE_LEN} characters")
            try:
                PARSERS[key](encoded[key])
            except ValueError as e:
                raise ValueError(
                    str(e) if str(e).startswith(("ablation", "params")) else f"{key}: {e}"
                ) from None
    if candidate.params:
        parse_params(candidate.params, candidate.effective_probe)
    return parse(encoded)[0]


# ---------------------------------------------------------------------------------------------
# Streamlit glue
# ---------------------------------------------------------------------------------------------
CURRENT = "_hs_state"
_SYNCED = "_hs_synced"


def write(state: ViewState) -> None:
    """Make the URL hold exactly ``state`` (only non-default values), and make it current."""
    st.session_state[CURRENT] = state
    want = encode(state)
    if st.query_params.to_dict() != want:
        st.query_params.from_dict(want)


def url_state() -> ViewState:
    """The state in the URL right now (in callbacks: including changes made earlier in this callback)."""
    return parse(st.query_params.to_dict())[0]


def current() -> ViewState:
    return st.session_state.get(CURRENT, DEFAULT)


def update(**changes: Any) -> ViewState:
    """Apply validated changes to the URL state (raises ValueError on bad values)."""
    state = with_changes(url_state(), **changes)
    write(state)
    return state


def fallback(field: str, reason: str) -> ViewState:
    """A URL value that the data rejects (e.g. a head out of range): warn and reset to the default."""
    state = current()
    st.warning(
        f"Ignored URL parameter “{field}={shown(getattr(state, field))}”: {shown(reason, 160)}. "
        "Using the default."
    )
    state = replace(state, **{field: getattr(DEFAULT, field)})
    write(state)
    return state


def error_key(name: str) -> str:
    return f"_hs_err_{name}"


def bind_value(key: str, value: Any, apply: Callable[[Any], None]) -> dict[str, Any]:
    """``key``/``on_change`` kwargs that tie a widget to a value held in the URL.

    The widget is set to ``value`` whenever that value changed since the widget last synced (so a
    permalink or another widget can move it); a user change calls ``apply(widget_value)``, which
    updates the URL and may raise ValueError: then the widget keeps the rejected input and the
    message is kept under ``error_key(key)`` for the caller to show.
    """
    synced = st.session_state.setdefault(_SYNCED, {})
    if key not in st.session_state or synced.get(key) != value:
        st.session_state[key] = value
        synced[key] = value

    def on_change() -> None:
        try:
            apply(st.session_state[key])
        except ValueError as e:
            st.session_state[error_key(key)] = str(e)
        else:
            st.session_state.pop(error_key(key), None)
            synced[key] = st.session_state[key]

    return {"key": key, "on_change": on_change}


def bind(
    field: str, to_widget: Callable[[Any], Any] = lambda v: v, from_widget: Callable[[Any], Any] = lambda v: v
) -> dict[str, Any]:
    """:func:`bind_value` for one state field (widget key ``w_<field>``)."""
    return bind_value(
        f"w_{field}", to_widget(getattr(current(), field)), lambda v: update(**{field: from_widget(v)})
    )


def show_error(key: str) -> None:
    """Show the message of a rejected widget input, if any."""
    msg = st.session_state.get(error_key(key))
    if msg:
        st.error(shown(msg, 300))
