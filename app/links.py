"""Permalink checks that need the data: what :func:`app.state.parse` cannot know from the URL alone.

:func:`check` runs on the URL's state before any widget or view (so before any Compute button), and
each value it rejects gets the same one-line warning as a malformed value (:func:`app.state.ignored`)
and falls back to its default; main.py then redirects once to the corrected link:

* **models**: ``model``, ``model_b`` and every entry of ``models`` must be a model the dashboard knows
  (:func:`app.data.known_models`: runs in a store, the bundled zoo, the model roots) or a
  ``tiny/<FSMG pattern>``. With a remote backend (``HYBRIDSCOPE_BACKEND_URL``) any well-formed ref is
  left to it: the dashboard cannot list the server's models.
* **page-only parameters** (:data:`app.state.PAGE_FIELDS`) belong to one page and are checked against
  that page's probe: ``layer`` / ``head`` (Retrieval heads) against model A's layer layout (the layer
  must exist and have attention heads, the head must exist in it), ``doc`` / ``start`` (Per-token loss)
  against the token_loss parameters of the view (``n_docs``, ``max_tokens``); ``scale`` (the Retrieval
  heads maps' colour scale) needs no data, its parser checks it. On any other page such a
  parameter does nothing, and is ignored with a warning.
* **unknown paths**: Streamlit runs the Overview for a path that is no page; :func:`unknown_page` names
  that path, :func:`check` warns about it, and the redirect puts the Overview's path in the link.

A model's layout comes without torch: the ``model_info`` its newest run stored, a native
``config.json`` (:func:`app.data.model_info`), an HF ``config.json`` (``num_hidden_layers``,
``num_attention_heads``, ``layer_types``) or a ``tiny/`` pattern. When the layout is unknown the view
checks the selection against the run's data instead (:func:`app.session.fallback`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app import defaults, probe_params
from app.state import DEFAULT, PAGE_FIELDS, VIEWS, ViewState, ignored, shown
from models.plan import ATTENTION, ATTENTION_KINDS, HYBRID, LAYER_LETTERS, LINEAR_KINDS, ModelInfo, branches

LISTED = 6  # known models named in a warning


@dataclass(frozen=True)
class Layout:
    """Per layer: whether it has attention heads (None: unknown) and how many (None: unknown)."""

    attention: tuple[bool | None, ...]
    heads: tuple[int | None, ...]

    @property
    def n_layers(self) -> int:
        return len(self.attention)


@dataclass(frozen=True)
class Catalog:
    """What the dashboard knows about models: ``models`` (None: any ref is accepted), ``layout`` of a
    model (None when unknown) and the model A of a link without ``model``."""

    models: tuple[str, ...] | None
    layout: Callable[[str], Layout | None]
    default_model: str | None = None

    def knows(self, model: str) -> bool:
        return self.models is None or model in self.models or _tiny(model) is not None


# ---------------------------------------------------------------------------------------------
# layouts without torch
# ---------------------------------------------------------------------------------------------
def _tiny(model: str) -> str | None:
    """The layer pattern of a ``tiny/<FSMG>`` ref (what backend.model_refs builds on the fly)."""
    if model.startswith("tiny/"):
        pattern = model[5:]
        if 1 <= len(pattern) <= 32 and all(c in LAYER_LETTERS for c in pattern):
            return pattern
    return None


def _has_attention(kind: str) -> bool | None:
    if kind in ATTENTION_KINDS or kind in LINEAR_KINDS or kind == HYBRID or kind in ("mlp", "moe"):
        return ATTENTION in branches(kind)
    return None  # a kind HybridScope's plan vocabulary does not name


def layout_of_info(info: ModelInfo) -> Layout:
    attention = tuple(_has_attention(k) for k in info.layer_types)
    heads = tuple(h if a is not False else 0 for h, a in zip(info.num_heads, attention, strict=True))
    return Layout(attention, heads)


def layout_of_pattern(pattern: str) -> Layout:
    """A tiny model's layers (their head counts are the tiny builder's, left unchecked here)."""
    attention = tuple(_has_attention(LAYER_LETTERS[c]) for c in pattern)
    return Layout(attention, tuple(None if a else 0 for a in attention))


def layout_of_config(config: Any) -> Layout | None:
    """An HF ``config.json`` (its ``text_config`` for multimodal ones): layer count, attention heads and,
    when it lists them, layer types (HF's vocabulary: ``full_attention``, ``sliding_attention``,
    ``linear_attention``...; another kind is left unknown)."""
    if not isinstance(config, dict):
        return None
    if "num_hidden_layers" not in config and isinstance(config.get("text_config"), dict):
        config = config["text_config"]
    try:
        n = int(config["num_hidden_layers"])
        heads = config.get("num_attention_heads")
        heads = None if heads is None else int(heads)
    except (KeyError, TypeError, ValueError):
        return None
    if not 0 < n <= 4096:
        return None
    types = config.get("layer_types")
    if isinstance(types, list) and len(types) == n and all(isinstance(t, str) for t in types):
        attention = tuple(False if t == "linear_attention" else _has_attention(t) for t in types)
    else:
        attention = (None,) * n
    return Layout(attention, tuple(0 if a is False else heads for a in attention))


def layout_of(model: str, info: ModelInfo | None, path: Path | None) -> Layout | None:
    """The layout of ``model`` from its stored / native ModelInfo, else its config.json, else its tiny
    pattern; None when none is known."""
    if info is not None:
        return layout_of_info(info)
    pattern = _tiny(model)
    if pattern is not None:
        return layout_of_pattern(pattern)
    if path is None:
        return None
    try:
        return layout_of_config(json.loads((Path(path) / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def catalog() -> Catalog:
    """The dashboard's catalog: the models :func:`app.data.known_models` lists, layouts as
    :func:`layout_of` reads them (cached by the data layer's model info)."""
    from app import data, run_panel

    def layout(model: str) -> Layout | None:
        info = data.model_info(model)
        path = None
        if info is None and _tiny(model) is None:
            try:
                from backend.model_refs import resolve

                path = resolve(model).path
            except Exception:  # noqa: BLE001 - unknown or unreadable: no layout
                path = None
        return layout_of(model, info, path)

    remote = bool(os.environ.get("HYBRIDSCOPE_BACKEND_URL"))
    known = data.known_models()
    return Catalog(None if remote else tuple(known), layout, (known or [run_panel.DEMO_MODEL])[0])


def unknown_page(url_paths: Iterable[str]) -> str | None:
    """The path this script run was asked for when it is no page of ``url_paths`` (Streamlit then runs
    the default page); None for a known page, a page switch, or outside a browser session."""
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        pm = get_script_run_ctx().pages_manager
        name, script = pm.intended_page_name, pm.intended_page_script_hash
    except Exception:  # noqa: BLE001 - no script run context (bare mode) or another Streamlit
        return None
    if script or not name or not isinstance(name, str):
        return None
    name = name.strip("/")
    return None if not name or name in set(url_paths) else name


# ---------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------
def _listed(models: tuple[str, ...] | None) -> str:
    if not models:
        return "none"
    more = f" and {len(models) - LISTED} more" if len(models) > LISTED else ""
    return ", ".join(models[:LISTED]) + more


def _check_models(vs: ViewState, cat: Catalog, warnings: list[str]) -> ViewState:
    reason = f"unknown model; known: {_listed(cat.models)}"
    for key in ("model", "model_b"):
        value = getattr(vs, key)
        if value is not None and not cat.knows(value):
            warnings.append(ignored(key, value, reason))
            vs = replace(vs, **{key: None})
    bad = [m for m in vs.models if not cat.knows(m)]
    if bad:
        kept = tuple(m for m in vs.models if cat.knows(m))
        using = f"the others ({shown('|'.join(kept))})" if kept else None
        what = f"unknown model{'s' if len(bad) > 1 else ''} {', '.join(bad)}; known: {_listed(cat.models)}"
        warnings.append(ignored("models", "|".join(vs.models), what, using))
        vs = replace(vs, models=kept)
    return vs


def _elsewhere(vs: ViewState, warnings: list[str]) -> ViewState:
    """Page-only parameters on another page do nothing there: ignored."""
    for key, pages in PAGE_FIELDS.items():
        value = getattr(vs, key)
        if vs.view not in pages and value != getattr(DEFAULT, key):
            where = " and ".join(f"the {VIEWS[p]} page" for p in pages)
            shown_value = "|".join(value) if isinstance(value, tuple) else value
            warnings.append(ignored(key, shown_value, f"only {where} use{'s' if len(pages) == 1 else ''} it"))
            vs = replace(vs, **{key: getattr(DEFAULT, key)})
    return vs


def token_loss_params(vs: ViewState) -> dict[str, Any] | None:
    """Every token_loss parameter the Per-token loss view asks for (None when the URL's params do not
    fit: parse already warned about those)."""
    base = defaults.params_for("token_loss")
    try:
        params = probe_params.resolve(vs.params, "token_loss", base) if vs.effective_probe == "token_loss" else base
        return probe_params.full(params, "token_loss")
    except ValueError:
        return None


def _check_token_loss(vs: ViewState, warnings: list[str]) -> ViewState:
    params = token_loss_params(vs)
    if params is None:
        return vs
    n_docs, max_tokens = int(params["n_docs"]), int(params["max_tokens"])
    if vs.doc >= n_docs:
        warnings.append(ignored("doc", vs.doc, f"the token_loss run has documents 0..{n_docs - 1} (n_docs={n_docs})"))
        vs = replace(vs, doc=DEFAULT.doc)
    if vs.start >= max_tokens:
        reason = f"the token_loss run has positions 0..{max_tokens - 1} (max_tokens={max_tokens})"
        warnings.append(ignored("start", vs.start, reason))
        vs = replace(vs, start=DEFAULT.start)
    return vs


def _check_heads(vs: ViewState, cat: Catalog, warnings: list[str]) -> ViewState:
    """Layer / head of the Retrieval heads page against model A's layout (as the view's pickers offer:
    attention layers only; the head picker lists the heads of the selected layer, else of the first
    attention layer)."""
    if vs.layer is None and vs.head is None:
        return vs
    model = vs.model or cat.default_model
    lay = cat.layout(model) if model else None
    if lay is None:
        return vs
    name = model
    if vs.layer is not None:
        if vs.layer >= lay.n_layers:
            warnings.append(ignored("layer", vs.layer, f"{name} has layers 0..{lay.n_layers - 1}"))
            vs = replace(vs, layer=None)
        elif lay.attention[vs.layer] is False:
            warnings.append(ignored("layer", vs.layer, f"layer {vs.layer} of {name} has no attention heads"))
            vs = replace(vs, layer=None)
    if vs.head is not None:
        attn = [i for i, a in enumerate(lay.attention) if a is not False]
        layer = vs.layer if vs.layer is not None else (attn[0] if attn else None)
        n = None if layer is None else lay.heads[layer]
        if layer is None:
            warnings.append(ignored("head", vs.head, f"{name} has no attention layers"))
            vs = replace(vs, head=None)
        elif n is not None and vs.head >= n:
            warnings.append(ignored("head", vs.head, f"layer {layer} of {name} has heads 0..{n - 1}"))
            vs = replace(vs, head=None)
    return vs


def check(vs: ViewState, cat: Catalog, unknown_path: str | None = None) -> tuple[ViewState, list[str]]:
    """(state, warnings): ``vs`` with every value the catalog rejects set back to its default, one
    warning line per rejected value (and one for an unknown page path). Never raises."""
    warnings: list[str] = []
    if unknown_path is not None:
        warnings.append(
            f"Ignored unknown page “/{shown(unknown_path, 60)}”: no view has this path (the views are listed "
            "in the sidebar). Showing the Overview."
        )
        vs = replace(vs, view=DEFAULT.view)
    vs = _elsewhere(vs, warnings)  # first: a parameter that does nothing here gets no other warning
    vs = _check_models(vs, cat, warnings)
    if vs.view == "token_loss":
        vs = _check_token_loss(vs, warnings)
    if vs.view == "retrieval_heads":
        vs = _check_heads(vs, cat, warnings)
    return vs, warnings


__all__ = ["Catalog", "Layout", "catalog", "check", "layout_of", "layout_of_config", "unknown_page"]
