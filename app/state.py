"""View state <-> URL query parameters (the permalink): the model, with validation of every parameter.

The page path is the view (``/niah``); the query holds the rest, only non-default values, in two kinds:

* **Bound** (:data:`BOUND`: model, cmp, model_b, data, probe, doc, start, layer, head, scale, models): each is
  a plain widget with ``key`` = the parameter name and Streamlit's own ``bind="query-params"``
  (:func:`app.session.bound`). Streamlit seeds the widget from the URL, the browser writes the user's
  changes into the URL, and a value equal to the widget's default leaves the URL. What the binding cannot
  do is our contract for bad links: it silently drops a value it cannot parse (and accepts some we
  refuse, such as ``doc=3.7`` or an option-sized SQL fragment). So :func:`app.session.load` checks the
  URL first with the parsers here; when a value is rejected (each gets a warning naming it and the
  default) or the link uses an old form (``?view=niah``, ``cmp=1``, ``models=a|b``), main.py redirects
  once, before any widget binds, to the cleaned URL on the right page. What only the data can reject (an
  unknown model, a head the model lacks, a document beyond the probe's ``n_docs``) :mod:`app.links`
  rejects in the same redirect, from the model info the store holds or a config.json; what needs a run's
  own rows (a document the dataset lacks) the views reject with :func:`app.session.fallback`, and the
  widget's options/bounds agree with them.
* **Custom** (:data:`CUSTOM`: abl, abl_b, params): the compact ablation and probe-parameter text forms.
  These are not bound: binding would write whatever is typed, including text that does not parse, into
  the URL. Our callbacks (:func:`app.session.bind_value`) validate and canonicalise first (a rejected
  input stays in its widget with the error) and write the URL themselves (:func:`app.session.write`).
  ``params`` holds overrides of the dashboard defaults (``app.defaults``), so the embedded demo needs none.

This module is the model alone (it never imports Streamlit): :class:`ViewState`, the parsers,
:func:`parse`, :func:`encode`, :func:`with_changes` and the warning text (:func:`ignored`,
:func:`shown`). :mod:`app.session` binds it to a Streamlit session (the URL, the widgets, session state).

Malformed or hostile values never raise. No value from the URL is ever put into SQL text.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from app import defaults
from app.probe_params import canonical, format_params, parse_params
from backend.params import check_ref
from backend.probes.registry import USER_PROBES
from models.ablation import Ablation, AblationError

VIEWS: dict[str, str] = {  # name -> title (also the navigation order)
    "overview": "Overview",
    "longppl": "LongPPL",
    "token_loss": "Per-token loss",
    "retrieval_heads": "Retrieval heads",
    "niah": "NIAH",
    "influence": "Gradient influence",
    "retrieval_probe": "Retrieval probing",
    "qk_distance": "Q/K drift",
    "attributions": "Attributions",
    "scaling": "Scaling law",
    "runs": "Runs",
}
VIEW_PROBE: dict[str, str] = {
    "overview": "longppl",
    "longppl": "longppl",
    "token_loss": "token_loss",
    "retrieval_heads": "retrieval_heads",
    "niah": "niah",
    "influence": "gradient_influence",
    "retrieval_probe": "retrieval_probe",
    "qk_distance": "qk_distance",
    "attributions": "attributions",
    "scaling": "longppl",  # the fit reads a table, not runs; the run panel offers LongPPL
    "runs": "token_loss",
}
RUN_PROBES = USER_PROBES  # what the run panel offers (internal probes left out)
BUILTIN_DATA = ("zoo:test", "zoo:val", "stdlib")
MAX_VALUE_LEN = 512
MAX_INT = {"doc": 1_000_000, "start": 1 << 20, "layer": 4095, "head": 4095}
MAX_MODELS = 16
SCALES = ("shared", "per-map")  # colour scale of the retrieval-head maps: one for every map, or one per map
_UINT = re.compile(r"[0-9]{1,9}")  # ASCII digits only (\d also takes "１２")


@dataclass(frozen=True)
class ViewState:
    """Everything a permalink holds, and the page. ``None`` model means "the first known model"."""

    view: str = "overview"  # the page (its path), never a query parameter
    model: str | None = None
    abl: str = ""  # ablation A, canonical text form
    cmp: bool = False  # compare A vs B
    model_b: str | None = None  # None = same model as A
    abl_b: str = ""
    data: str | None = None  # None = the dashboard default of the probe (else the probe's own)
    probe: str | None = None  # run-panel probe; None = the view's probe
    params: str = ""  # overrides of the probe's dashboard defaults, canonical "key=value;key=a,b" form
    doc: int = 0
    start: int = 0  # first token shown in the per-token view
    layer: int | None = None
    head: int | None = None
    scale: str = SCALES[0]  # retrieval-head maps: "shared" colour scale, or "per-map"
    models: tuple[str, ...] = ()  # model filter of the comparison views (empty = all)

    @property
    def effective_probe(self) -> str:
        return self.probe or VIEW_PROBE[self.view]

    @property
    def effective_model_b(self) -> str | None:
        return self.model_b or self.model


DEFAULT = ViewState()
FIELDS = tuple(f.name for f in fields(ViewState) if f.name != "view")  # the query parameters
CUSTOM = ("abl", "abl_b", "params")
BOUND = tuple(f for f in FIELDS if f not in CUSTOM)
PAGE_FIELDS = {  # bound widgets that live on one page (the others are in the sidebar, on every page)
    "doc": ("token_loss",),
    "start": ("token_loss",),
    "layer": ("retrieval_heads",),
    "head": ("retrieval_heads",),
    "scale": ("retrieval_heads",),
    "models": ("longppl", "runs"),
}


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
    try:
        check_ref(raw)
    except ValueError:
        raise ValueError("not a model/dataset ref (letters, digits and ._:/@+=,~- only)") from None
    if any(part in ("", ".", "..") for part in raw.split("/")) or ".." in raw:
        raise ValueError("not a model/dataset ref (no '..', '.' or empty path parts)")
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
        if not _UINT.fullmatch(raw) or int(raw) > hi:
            raise ValueError(f"must be an integer in [0, {hi}]")
        return int(raw)

    return parse


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


def _bool(raw: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ValueError("must be true or false")


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


def _scale(raw: str) -> str:
    if raw not in SCALES:
        raise ValueError(f"must be one of {', '.join(SCALES)}")
    return raw


def _models(raw: str | list[str]) -> tuple[str, ...]:
    """Repeated parameters (``models=a&models=b``, what the bound multiselect writes) or an old link's
    ``a|b``."""
    items = [m for r in ([raw] if isinstance(raw, str) else raw) for m in r.split("|") if m]
    if len(items) > MAX_MODELS:
        raise ValueError(f"at most {MAX_MODELS} models")
    return tuple(dict.fromkeys(_ref(m) for m in items))


PARSERS: dict[str, Callable[[Any], Any]] = {
    "view": _view,  # old links only: the page path is the view
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
    "scale": _scale,
    "models": _models,
}


def legacy_form(query: Mapping[str, Any]) -> bool:
    """Whether a link uses a form this app no longer writes (it is rewritten by one redirect)."""
    models = query.get("models")
    return (
        "view" in query
        or any(isinstance(v, list | tuple) for k, v in query.items() if k != "models")  # a repeated parameter
        or str(query.get("cmp", "true")).lower() not in ("true", "false")
        or (isinstance(models, str) and "|" in models)
    )


# ---------------------------------------------------------------------------------------------
# URL <-> state
# ---------------------------------------------------------------------------------------------
def ignored(key: str, value: Any, reason: Any, using: str | None = None) -> str:
    """The one-line warning for a rejected URL value (every check uses it: here, :mod:`app.links`, the
    views' :func:`fallback`): the parameter and its value, why, and what is used instead (the default
    of ``key`` unless ``using`` says otherwise); all escaped."""
    if using is None:
        default = getattr(DEFAULT, key, None)
        using = f"the default ({shown(default) if default not in (None, '', ()) else 'none'})"
    return f"Ignored URL parameter “{key}={shown(value)}”: {shown(reason, 160)}. Using {using}."


def value_text(raw: Any) -> str:
    return "|".join(map(str, raw)) if isinstance(raw, list | tuple) else str(raw)


def parse(query: Mapping[str, Any], page: str = DEFAULT.view) -> tuple[ViewState, list[str]]:
    """Query parameters of page ``page`` -> (state, warnings). Never raises; bad values fall back to
    defaults. Params are checked against the dashboard defaults of the view's probe.

    One documented way for ambiguous links: a repeated parameter (other than ``models``) counts once,
    with its **last** value (a warning when its values differ); an old link's ``view`` parameter picks
    the page on the Overview (the root path, where old links pointed), while on any other page **the
    path wins** and a ``view`` naming another page is ignored with a warning."""
    values: dict[str, Any] = {"view": page}
    warnings: list[str] = []
    unknown = [k for k in query if k not in PARSERS]
    if unknown:
        names = ", ".join(f"“{shown(k, 24)}”" for k in unknown[:5])
        warnings.append(f"Ignored unknown URL parameter(s): {names}.")
    for key in PARSERS:
        if key not in query:
            continue
        raw = query[key]
        if isinstance(raw, list | tuple) and key != "models":
            if len(set(map(str, raw))) > 1:
                warnings.append(
                    f"Ignored repeated URL parameter “{shown(key)}” ({len(raw)} values): the last one counts."
                )
            raw = raw[-1] if raw else ""
        try:
            items = [raw] if isinstance(raw, str) else list(raw)
            if not all(isinstance(r, str) for r in items) or sum(map(len, items)) > MAX_VALUE_LEN:
                raise ValueError(f"longer than {MAX_VALUE_LEN} characters")
            value = PARSERS[key](raw)
        except ValueError as e:
            warnings.append(ignored(key, value_text(raw), e, f"the page ({page})" if key == "view" else None))
            continue
        if key == "view" and page != DEFAULT.view and value != page:
            warnings.append(ignored(key, value, f"this page's path (/{page}) is the view", f"the page ({page})"))
            continue
        values[key] = value
    state = replace(DEFAULT, **values)
    if state.params:
        probe = state.effective_probe
        try:
            state = replace(state, params=canonical(state.params, probe, defaults.params_for(probe)))
        except ValueError as e:
            warnings.append(ignored("params", state.params, e, "the defaults of the probe"))
            state = replace(state, params="")
    return state, warnings


def _encode_value(v: Any) -> str | list[str]:
    if isinstance(v, bool):
        return "true" if v else "false"  # what Streamlit's binding writes for a toggle
    if isinstance(v, tuple):
        return list(v)  # repeated parameters, as a bound multiselect writes them
    return str(v)


def encode(state: ViewState) -> dict[str, str | list[str]]:
    """Only the non-default fields, as URL values (field order; ``models`` as repeated values)."""
    return {k: _encode_value(getattr(state, k)) for k in FIELDS if getattr(state, k) != getattr(DEFAULT, k)}


def _fits(params: str, probe: str) -> bool:
    try:
        canonical(params, probe, defaults.params_for(probe))
    except ValueError:
        return False
    return True


def with_changes(state: ViewState, **changes: Any) -> ViewState:
    """``state`` with ``changes`` applied and validated (ValueError with the reason on bad input).

    Changing the view or probe drops params that do not fit the new probe.
    """
    candidate = replace(state, **changes)
    if ("view" in changes or "probe" in changes) and "params" not in changes and candidate.params:
        if not _fits(candidate.params, candidate.effective_probe):
            candidate = replace(candidate, params="")
    encoded = encode(candidate)
    for key in changes:
        if key in encoded:
            value = encoded[key]
            if sum(map(len, [value] if isinstance(value, str) else value)) > MAX_VALUE_LEN:
                raise ValueError(f"{key}: longer than {MAX_VALUE_LEN} characters")
            try:
                PARSERS[key](value)
            except ValueError as e:
                raise ValueError(
                    str(e) if str(e).startswith(("ablation", "params")) else f"{key}: {e}"
                ) from None
    if candidate.params:
        probe = candidate.effective_probe
        canonical(candidate.params, probe, defaults.params_for(probe))
    return parse(encoded, candidate.view)[0]


__all__ = [
    "BOUND", "CUSTOM", "DEFAULT", "FIELDS", "PAGE_FIELDS", "SCALES", "VIEWS", "VIEW_PROBE", "ViewState", "encode",
    "format_params", "ignored", "legacy_form", "parse", "parse_params", "shown", "value_text", "with_changes",
]
