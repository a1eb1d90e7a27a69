"""Per-token loss: the text shaded by loss (A, or B − A), and loss vs position.

Tokens are HTML-escaped before they go into ``st.html``; the hover title shows token, position,
loss and whether LongPPL picked it as a key token.
"""

from __future__ import annotations

import html

import pandas as pd
import streamlit as st

from app import charts, data, session
from app.state import ViewState
from app.views import Side, header, side_runs

WINDOW = 512  # tokens shown at once
MAX_LOSS = 8.0  # nats at full colour


def _tokens(run_id: str, doc: int, start: int) -> pd.DataFrame:
    return data.query(
        "SELECT pos, token_id, token, nll, is_key FROM token_loss WHERE run_id = ? AND doc = ? "
        "AND pos >= ? AND pos < ? ORDER BY pos",
        (run_id, doc, start, start + WINDOW),
    )


def _extent(run_id: str) -> tuple[int, int]:
    df = data.query("SELECT max(doc) AS d, max(pos) AS p FROM token_loss WHERE run_id = ?", (run_id,))
    d, p = df.iloc[0]["d"], df.iloc[0]["p"]
    return (-1 if pd.isna(d) else int(d)), (-1 if pd.isna(p) else int(p))


def _loss_colour(nll: float) -> str:
    a = min(max(nll, 0.0) / MAX_LOSS, 1.0)
    return f"rgba(213,94,0,{a:.2f})"  # Okabe-Ito vermilion


def _delta_colour(d: float) -> str:
    a = min(abs(d) / 3.0, 1.0)
    return (
        f"rgba(213,94,0,{a:.2f})" if d > 0 else f"rgba(0,114,178,{a:.2f})"
    )  # worse: vermilion, better: blue


def shaded_html(df: pd.DataFrame, delta: pd.Series | None = None) -> str:
    """One span per token, background = loss (or B − A delta), title = details; all text escaped."""
    spans = []
    deltas = None if delta is None else delta.to_numpy()  # positional, as .iloc (no per-row pandas indexing)
    for i, row in enumerate(df.itertuples(index=False)):
        nll = float(row.nll)
        tip = f"token {row.token!r} · position {row.pos} · loss {nll:.3f}"
        if deltas is not None:
            tip += f" · B − A {float(deltas[i]):+.3f}"
        tip += " · key token" if row.is_key else ""
        bg = _delta_colour(float(deltas[i])) if deltas is not None else _loss_colour(nll)
        style = f"background:{bg}" + (";border-bottom:2px solid #000" if row.is_key else "")
        spans.append(
            f'<span class="tok" title="{html.escape(tip)}" style="{style}">{html.escape(row.token)}</span>'
        )
    body = "".join(spans)
    return (
        '<div class="hs-tokens" style="font-family:monospace;white-space:pre-wrap;line-height:1.7;'
        f'max-height:420px;overflow-y:auto;border:1px solid #ddd;padding:8px">{body}</div>'
    )


def _legend(delta: bool) -> None:
    if delta:
        st.caption(
            "Shading: B − A loss per token — vermilion where B is worse, blue where B is better. "
            "Underlined: key tokens (LongPPL). Hover a token for details."
        )
    else:
        st.caption(
            f"Shading: loss per token (white 0 → vermilion ≥ {MAX_LOSS:g} nats). Underlined: key "
            "tokens (LongPPL). Hover a token for details."
        )


def _text(vs: ViewState, a: Side, b: Side | None) -> None:
    n_docs, n_pos = _extent(a.run_id)
    if vs.doc > n_docs:
        vs = session.fallback("doc", f"run A has documents 0..{n_docs}")
    if vs.start > max(n_pos, 0):
        vs = session.fallback("start", f"document has positions 0..{n_pos}")
    c1, c2 = st.columns(2)
    c1.number_input("Document", 0, max(n_docs, 0), **session.bound("doc"))
    c2.number_input(
        f"First token (shows {WINDOW})", 0, max(n_pos, 0), step=WINDOW // 2, **session.bound("start")
    )
    ta = _tokens(a.run_id, vs.doc, vs.start)
    if ta.empty:
        st.info("No tokens in this range.")
        return
    delta = None
    if b is not None and b.run_id:
        tb = _tokens(b.run_id, vs.doc, vs.start)
        if len(tb) == len(ta) and (tb["token_id"].to_numpy() == ta["token_id"].to_numpy()).all():
            delta = pd.Series(tb["nll"].to_numpy() - ta["nll"].to_numpy())
            ta = ta.assign(is_key=ta["is_key"] | tb["is_key"].to_numpy())
        else:
            st.caption("A and B tokenise this document differently: showing A only.")
    _legend(delta is not None)
    st.html(shaded_html(ta, delta))
    charts.table_downloads(ta, f"tokens doc {vs.doc} from {vs.start}")


def render(vs: ViewState) -> None:
    header(
        "Per-token loss",
        "Where in the text does the model pay? Each token is shaded by its loss; with "
        "A vs B, by how much B's loss differs from A's on the same token.",
    )
    found = side_runs(vs, "token_loss")
    a = found[0]
    b = found[1] if len(found) > 1 else None
    if a.run_id:
        _text(vs, a, b)
    st.subheader("Loss vs position")
    curves = [
        data.position_curve(s.run_id).assign(model=s.model, ablation=s.abl or "none", side=s.label)
        for s in found
        if s.run_id
    ]
    if curves:
        charts.show(
            "per token loss vs position", charts.position_curves, pd.concat(curves), data.known_models()
        )


if __name__ == "__main__":  # run as a page by st.navigation
    render(session.current())
