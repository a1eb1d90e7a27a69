"""The dashboard's views (one module each) and what they share: the A/B runs of a probe."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from app import data, run_panel
from app.state import ViewState
from backend.spec import SpecError


@dataclass(frozen=True)
class Side:
    label: str  # "A" or "B"
    model: str | None
    abl: str
    run_id: str | None

    @property
    def name(self) -> str:
        return f"{self.label}: {self.model}" + (f" [{self.abl}]" if self.abl else "")


def find(vs: ViewState, probe: str, model: str | None, abl: str) -> tuple[str | None, str | None]:
    """(run_id, error of a failed run) of the spec the view asks ``probe`` for (none for a bad spec:
    the compute prompt says what is wrong with it)."""
    try:
        spec = run_panel.build_spec(vs, model, abl, probe)
    except (SpecError, ValueError):
        return None, None
    return data.find_run(spec)


def side_runs(vs: ViewState, probe: str, prompt: bool = True) -> list[Side]:
    """The runs of ``probe`` for A (and B); missing ones get the compute prompt when ``prompt``."""
    out = []
    for label, model, abl in run_panel.sides(vs):
        run_id, error = find(vs, probe, model, abl)
        if run_id is None and prompt:
            run_panel.missing(label, probe, model, abl, vs, error)
        out.append(Side(label, model, abl, run_id))
    shown = [f"{s.label} `{s.run_id}`" for s in out if s.run_id]
    if shown:
        st.caption(f"{probe} run{'s' if len(shown) > 1 else ''}: " + ", ".join(shown))
    return out


def header(title: str, sentence: str) -> None:
    st.header(title)
    st.caption(sentence)
