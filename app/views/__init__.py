"""The dashboard's views (one module each) and what they share: the A/B runs of a probe."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from app import data, run_panel, state
from app.state import ViewState


@dataclass(frozen=True)
class Side:
    label: str  # "A" or "B"
    model: str | None
    abl: str
    run_id: str | None

    @property
    def name(self) -> str:
        return f"{self.label}: {self.model}" + (f" [{self.abl}]" if self.abl else "")


def side_runs(vs: ViewState, probe: str, prompt: bool = True) -> list[Side]:
    """The runs of ``probe`` for A (and B); missing ones get the compute prompt when ``prompt``."""
    params = state.parse_params(vs.params, probe) if probe == vs.effective_probe else None
    out = []
    for label, model, abl in run_panel.sides(vs):
        run_id, error = data.find_run(probe, model, abl, vs.data, params)
        if run_id is None and prompt:
            run_panel.missing(label, probe, model, abl, vs, error)
        out.append(Side(label, model, abl, run_id))
    return out


def header(title: str, sentence: str) -> None:
    st.header(title)
    st.caption(sentence)
