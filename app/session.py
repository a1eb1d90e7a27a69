"""The permalink model (:mod:`app.state`) bound to a Streamlit session: the URL, the widgets and the
session state.

:func:`load` (every script run, from main.py) parses the URL of the page, keeps the custom fields of the
page a navigation click left, lets :mod:`app.links` check what only the data can reject, and says when
the URL must be rewritten first (a redirect); :func:`write` makes a state current (session state) and
writes its custom fields into the URL (the bound ones are Streamlit's). Widgets: :func:`bound` (kwargs
of a plain widget bound to its query parameter with Streamlit's own binding), :func:`bind` /
:func:`bind_value` (a custom-field widget whose callback validates before it writes the URL),
:func:`update` (validated changes, from callbacks), :func:`fallback` (a URL value the data rejects:
warn and reset) and :func:`show_error`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import streamlit as st

from app.state import (
    BOUND,
    CUSTOM,
    DEFAULT,
    PAGE_FIELDS,
    ViewState,
    encode,
    ignored,
    legacy_form,
    parse,
    shown,
    value_text,
    with_changes,
)

CURRENT = "_hs_state"
_SYNCED = "_hs_synced"


def query() -> dict[str, str | list[str]]:
    """``st.query_params`` as a dict: every value of ``models`` (a list), of any other key its value, or
    the list of its values when it is repeated (:func:`parse` resolves those)."""
    qp = st.query_params
    out: dict[str, str | list[str]] = {}
    for k in qp:
        values = qp.get_all(k)
        out[k] = values if k == "models" or len(values) > 1 else qp[k]
    return out


def _to_widget(field: str, value: Any) -> Any:
    return list(value) if field == "models" else value


def _from_widget(field: str, value: Any) -> Any:
    if field == "models":
        return tuple(value or ())
    if field in ("doc", "start"):
        return int(value or 0)
    if field in ("layer", "head"):
        return None if value is None else int(value)
    return value


def _owned(field: str, view: str) -> bool:
    return view in PAGE_FIELDS.get(field, (view,))


def with_widgets(state: ViewState) -> ViewState:
    """``state`` with the values of the bound widgets of its page (they win over the URL: the browser
    updates the URL after the widget). Widgets of another page are not read: their values leave the
    URL on a page switch."""
    ss = st.session_state
    got = {f: _from_widget(f, ss[f]) for f in BOUND if f in ss and _owned(f, state.view)}
    return replace(state, **got)


def load(
    page: str, check: Callable[[ViewState], tuple[ViewState, list[str]]] | None = None
) -> tuple[ViewState, list[str], tuple[str, dict] | None]:
    """(state, warnings, redirect) of this run of page ``page``.

    ``redirect`` is (view, query) when the URL must be rewritten first: a rejected value (warned about),
    or an old link form (``?view=``, ``cmp=1``, ``models=a|b``, a repeated parameter). A navigation link
    keeps the custom fields of the page it leaves (Streamlit keeps the bound sidebar values itself).
    ``check`` (:func:`app.links.check`) then checks the URL's state against what the dashboard knows
    (models, their layers and heads, the page's probe); what it rejects redirects too.
    """
    raw = query()
    state, warnings = parse(raw, page)
    prev = st.session_state.get(CURRENT)
    if prev is not None and prev.view != page:
        state = replace(state, **{f: getattr(prev, f) for f in CUSTOM if f not in raw})
    if check is not None:
        state, more = check(state)
        warnings = warnings + more
    view = state.view
    if warnings or legacy_form(raw):
        return state, warnings, (view, encode(state))
    return with_widgets(state), warnings, None


def write(state: ViewState) -> None:
    """Make ``state`` current and the URL hold its custom fields (non-default only). The bound fields
    are Streamlit's: its binding keeps them in the URL."""
    st.session_state[CURRENT] = state
    want = encode(state)
    for key in CUSTOM:
        if key in want and st.query_params.get(key) != want[key]:
            st.query_params[key] = want[key]
        elif key not in want and key in st.query_params:
            del st.query_params[key]


def url_state() -> ViewState:
    """The state right now (in callbacks: including changes made earlier in this callback).

    A custom field missing from the URL is the current state's: a navigation click drops the custom
    fields from the URL (the browser keeps the bound ones only) until :func:`load` restores them, and a
    callback that runs with that click (a widget of the page being left reporting its value) must not
    clear them. Every other change of a custom field goes through :func:`write`, URL and state alike."""
    raw = query()
    state = parse(raw, current().view)[0]
    cur = st.session_state.get(CURRENT)
    if cur is not None:
        state = replace(state, **{f: getattr(cur, f) for f in CUSTOM if f not in raw})
    return with_widgets(state)


def current() -> ViewState:
    return st.session_state.get(CURRENT, DEFAULT)


def update(**changes: Any) -> ViewState:
    """Apply validated changes (raises ValueError on bad values): custom fields to the URL, bound
    fields to their widgets (call it from a callback, before the widgets of the run exist)."""
    state = with_changes(url_state(), **changes)
    for f in BOUND:
        if f in changes:
            st.session_state[f] = _to_widget(f, getattr(state, f))
    write(state)
    return state


def fallback(field: str, reason: str) -> ViewState:
    """A URL value that the data rejects (e.g. a head out of range): warn and reset to the default.
    Call it before the field's widget exists in this run."""
    state = current()
    st.warning(ignored(field, value_text(getattr(state, field)), reason))
    state = replace(state, **{field: getattr(DEFAULT, field)})
    if field in BOUND:
        st.session_state[field] = _to_widget(field, getattr(DEFAULT, field))
    write(state)
    return state


def bound(field: str, **kwargs: Any) -> dict[str, Any]:
    """Widget kwargs that bind ``field`` to its query parameter with Streamlit's own binding."""
    assert field in BOUND, field
    return {"key": field, "bind": "query-params", **kwargs}


def error_key(name: str) -> str:
    return f"_hs_err_{name}"


def bind_value(key: str, value: Any, apply: Callable[[Any], None]) -> dict[str, Any]:
    """``key``/``on_change`` kwargs that tie a custom-field widget to a value held in the URL.

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


def bind(field: str, from_widget: Callable[[Any], Any] = lambda v: v) -> dict[str, Any]:
    """:func:`bind_value` for one custom field (widget key ``w_<field>``)."""
    assert field in CUSTOM, field
    return bind_value(f"w_{field}", getattr(current(), field), lambda v: update(**{field: from_widget(v)}))


def show_error(key: str) -> None:
    """Show the message of a rejected widget input, if any."""
    msg = st.session_state.get(error_key(key))
    if msg:
        st.error(shown(msg, 300))


__all__ = [
    "CURRENT", "bind", "bind_value", "bound", "current", "error_key", "fallback", "load", "query", "show_error",
    "update", "url_state", "with_widgets", "write",
]
