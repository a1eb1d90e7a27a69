"""HybridScope dashboard: ``streamlit run app/main.py``.

The URL is the permalink: ``st.navigation`` shows one page per view (``app/views/``, paths like ``/niah``: the
path is the view), and :func:`app.session.load` checks the query with the permalink model of :mod:`app.state`
(warning about and dropping bad values), then :mod:`app.links` what only the data can reject (unknown models,
layers / heads the model lacks, page-only parameters, an unknown path), before the widgets, bound to it, take
their values from it. An old link's ``?view=niah`` is redirected to ``/niah`` with its other parameters. After
the page rendered, :func:`app.jobs.watch` shows and waits for the session's running computations (progress,
Cancel); :func:`app.jobs.guard` cancels them when the script run is stopped (the tab closed).
:func:`app.heap.freeze` keeps Streamlit's garbage collection after each run to what the run allocated."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts app/, not the repo root, on sys.path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import data, defaults, heap, jobs, links, run_panel, session, state  # noqa: E402
from app.state import VIEWS  # noqa: E402

VIEWS_DIR = Path(__file__).resolve().parent / "views"  # absolute: a test entry script may run this file
_PENDING = "_hs_pending_warnings"
_LOST = "_hs_unknown_path"  # the unknown path this session was redirected from (the browser may still report it)


def permalink(vs: state.ViewState) -> str:
    """The full link of this view, with the model made explicit so the link keeps its meaning."""
    pinned = replace(vs, model=run_panel.model_a(vs))
    query = urlencode(state.encode(pinned), doseq=True)
    base = (st.context.url or "").split("?")[0]
    lost = st.session_state.get(_LOST)  # an unknown path redirected to the Overview: not in the link
    if lost and base.rstrip("/").endswith("/" + lost):
        base = base.rstrip("/")[: -len(lost)]
    return f"{base}?{query}" if query else base or "?"


def sidebar(vs: state.ViewState):
    """The run panel; returns the slot of the permalink (filled after the view ran: it may fall back)."""
    with st.sidebar:
        run_panel.render(vs)
        slot = st.empty()  # the permalink: a popover, so the browser draws its code block only when opened
        note = data.provenance()
        if note:
            st.caption(f"⚠️ {note}")
    return slot


def main() -> None:
    heap.freeze()  # Streamlit's collection after this run then scans only what the run allocates
    st.set_page_config(page_title="HybridScope", page_icon="🔭", layout="wide")
    pages = {
        name: st.Page(VIEWS_DIR / f"{name}.py", title=title, url_path=name, default=name == "overview")
        for name, title in VIEWS.items()
    }
    pg = st.navigation(list(pages.values()), position="sidebar")
    page_view = next((name for name, p in pages.items() if p is pg), "overview")
    lost = links.unknown_page(p.url_path for p in pages.values())  # Streamlit ran the Overview for it
    if lost:
        st.session_state[_LOST] = lost
    vs, warnings, redirect = session.load(page_view, lambda s: links.check(s, links.catalog(), lost))
    if redirect is not None:  # a bad value, an old link form, an unknown path: rewrite the URL first
        st.session_state[_PENDING] = warnings
        st.switch_page(pages[redirect[0]], query_params=redirect[1])
    session.write(vs)
    problem = defaults.problem()
    for w in st.session_state.pop(_PENDING, []) + warnings + ([state.shown(problem, 300)] if problem else []):
        st.warning(w, icon="⚠️")
    slot = sidebar(vs)
    pg.run()
    with slot.popover("🔗 Permalink", help="This view's link with the model pinned (copy with the icon)"):
        st.code(permalink(session.current()), language=None, wrap_lines=True)
    jobs.watch(run_panel.finished)


with jobs.guard():
    main()
