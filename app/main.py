"""HybridScope dashboard: ``streamlit run app/main.py``.

The URL is the permalink: :mod:`app.state` parses ``st.query_params`` (warning about and dropping bad
values) and the widgets write back to it. ``st.navigation`` shows one page per view (``app/views/``,
paths like ``/niah``); the ``view`` parameter repeats the page so a link stays valid without its path.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts app/, not the repo root, on sys.path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import data, run_panel, state  # noqa: E402
from app.state import VIEWS  # noqa: E402

_PENDING = "_hs_pending_warnings"


def permalink(vs: state.ViewState) -> str:
    """The full link of this view, with the model made explicit so the link keeps its meaning."""
    pinned = replace(vs, model=run_panel.model_a(vs))
    query = urlencode(state.encode(pinned))
    base = (st.context.url or "").split("?")[0]
    return f"{base}?{query}" if query else base or "?"


def sidebar(vs: state.ViewState) -> None:
    with st.sidebar:
        run_panel.render(vs)
        st.caption("Permalink (copy with the icon)")
        st.code(permalink(vs), language=None, wrap_lines=True)
        note = data.provenance()
        if note:
            st.caption(f"⚠️ {note}")


def main() -> None:
    st.set_page_config(page_title="HybridScope", page_icon="🔭", layout="wide")
    raw = st.query_params.to_dict()
    vs, warnings = state.parse(raw)
    pages = {
        name: st.Page(f"views/{name}.py", title=title, url_path=name, default=name == "overview")
        for name, title in VIEWS.items()
    }
    pg = st.navigation(list(pages.values()), position="sidebar")
    page_view = next((name for name, p in pages.items() if p is pg), "overview")
    prev = st.session_state.get(state.CURRENT)
    if not raw and prev is not None:  # a navigation link was clicked (it clears the query string)
        vs = replace(prev, view=page_view)
    elif raw.get("view") in VIEWS and vs.view != page_view:  # e.g. /?view=niah: go to that page
        st.session_state[_PENDING] = warnings
        st.switch_page(pages[vs.view], query_params=state.encode(vs))
    else:  # the path decides the view
        vs = replace(vs, view=page_view)
    state.write(vs)
    for w in st.session_state.pop(_PENDING, []) + warnings:
        st.warning(w, icon="⚠️")
    sidebar(vs)
    pg.run()


main()
