"""HybridScope dashboard: ``streamlit run app/main.py``.

The URL is the permalink: :mod:`app.state` parses ``st.query_params`` (warning about and dropping bad
values), the sidebar widgets write back to it, and ``st.navigation`` runs the page of the ``view``
parameter (pages also have their own paths, e.g. ``/niah?view=niah``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts app/, not the repo root, on sys.path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import data, run_panel, state  # noqa: E402
from app.state import VIEWS  # noqa: E402
from app.views import longppl, niah, overview, retrieval_heads, runs, token_loss  # noqa: E402

MODULES = {"overview": overview, "longppl": longppl, "token_loss": token_loss,
           "retrieval_heads": retrieval_heads, "niah": niah, "runs": runs}
_PENDING = "_hs_pending_warnings"


def _page(name: str):
    def page() -> None:
        MODULES[name].render(state.current())

    page.__name__ = f"view_{name}"
    return page


def permalink(vs: state.ViewState) -> str:
    """The full link of this view, with the model made explicit so the link keeps its meaning."""
    from dataclasses import replace

    pinned = replace(vs, model=run_panel.model_a(vs))
    query = urlencode(state.encode(pinned))
    base = (st.context.url or "").split("?")[0]
    return f"{base}?{query}" if query else base or "?"


def sidebar(vs: state.ViewState) -> None:
    with st.sidebar:
        st.title("HybridScope")
        st.radio("View", list(VIEWS), format_func=VIEWS.get, **state.bind("view"))
        run_panel.render(vs)
        st.caption("Permalink (copy with the icon)")
        st.code(permalink(vs), language=None, wrap_lines=True)
        note = data.provenance()
        if note:
            st.caption(f"⚠️ {note}")


def main() -> None:
    st.set_page_config(page_title="HybridScope", page_icon="🔭", layout="wide")
    vs, warnings = state.load()
    warnings = st.session_state.pop(_PENDING, []) + warnings
    pages = {name: st.Page(_page(name), title=title, url_path=name, default=name == "overview")
             for name, title in VIEWS.items()}
    pg = st.navigation(list(pages.values()), position="hidden")
    shown = next((name for name, p in pages.items() if p is pg), "overview")
    if shown != vs.view:  # the URL's view parameter wins over the page path
        st.session_state[_PENDING] = warnings
        st.switch_page(pages[vs.view], query_params=state.encode(vs))
    for w in warnings:
        st.warning(w, icon="⚠️")
    sidebar(vs)
    pg.run()


main()
