"""Attributions: Integrated Gradients of the answer's first token over the input embeddings of one passkey /
NIAH prompt, shown as token shading (vermilion: pushes towards the answer, blue: against it)."""

from __future__ import annotations

import html

import pandas as pd
import streamlit as st

from app import charts, data, session, state
from app.state import ViewState
from app.views import header, side_runs

PROBE = "attributions"


def shaded(df: pd.DataFrame) -> str:
    """One span per token (escaped), background by attribution / max |attribution|; needle underlined."""
    top = float(df["attribution"].abs().max()) or 1.0
    spans = []
    for row in df.itertuples(index=False):
        a = float(row.attribution) / top
        bg = f"rgba(213,94,0,{a:.2f})" if a > 0 else f"rgba(0,114,178,{-a:.2f})"
        tip = f"token {row.token!r} · position {row.pos} · attribution {float(row.attribution):+.4g}"
        tip += " · needle" if row.is_needle else ""
        style = f"background:{bg}" + (";border-bottom:2px solid #000" if row.is_needle else "")
        spans.append(f'<span title="{html.escape(tip)}" style="{style}">{html.escape(row.token)}</span>')
    return ('<div style="font-family:monospace;white-space:pre-wrap;line-height:1.7;max-height:480px;'
            f'overflow-y:auto;border:1px solid #ddd;padding:8px">{"".join(spans)}</div>')


def render(vs: ViewState) -> None:
    header(
        "Attributions",
        "Integrated Gradients (captum) of the log-probability of the answer's first token over the input "
        "embeddings: which context tokens the model uses to produce the passkey. Underlined: the needle.",
    )
    for s in side_runs(vs, PROBE):
        if not s.run_id:
            continue
        df = data.query("SELECT pos, token_id, token, char_start, char_end, attribution, is_needle, is_target "
                        "FROM attributions WHERE run_id = ? ORDER BY pos", (s.run_id,))
        meta = data.query("SELECT meta FROM runs WHERE run_id = ?", (s.run_id,))
        st.subheader(s.name)
        if df.empty:
            st.info("This run has no attributions.")
            continue
        needle = df.loc[df["is_needle"], "attribution"].abs().sum() / max(df["attribution"].abs().sum(), 1e-30)
        c1, c2 = st.columns(2)
        c1.metric("Share of |attribution| on the needle", f"{needle:.1%}")
        c2.metric("Tokens", f"{len(df):,}")
        if not meta.empty:
            st.caption(f"Run metadata: {state.shown(meta.iloc[0]['meta'], 400)}")
        st.caption("Shading: vermilion = raises the answer's log-probability, blue = lowers it (scaled to the "
                   "largest |attribution|). Hover a token for its value.")
        st.html(shaded(df))
        charts.table_downloads(df, f"attributions {s.label}")


if __name__ == "__main__":  # run as a page by st.navigation
    render(session.current())
