"""The bundle's dashboard defaults (precomputed/dashboard.json) and its store never drift apart: every view
finds the bundled runs by their exact RunSpec, built from the defaults the way the views build it."""

from __future__ import annotations

import json

import pytest

from app.state import VIEW_PROBE, ViewState
from tests.app.conftest import ROOT, charts, run_app, texts

PRE = ROOT / "precomputed"
ZOO = sorted(p.name for p in (PRE / "zoo").glob("*") if (p / "config.json").is_file()) if (PRE / "zoo").is_dir() else []
pytestmark = pytest.mark.skipif(not (PRE / "dashboard.json").is_file() or not ZOO, reason="no bundle in precomputed/")


@pytest.fixture
def bundle(monkeypatch, tmp_path):
    """The app over the bundle alone (an empty user store), as the embedded demo runs."""
    import streamlit as st

    from app import data

    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(PRE))
    monkeypatch.setenv("HYBRIDSCOPE_STORE", str(tmp_path / "empty"))
    st.cache_data.clear()
    st.cache_resource.clear()
    data._GEN.clear()
    yield
    st.cache_data.clear()
    data._GEN.clear()


def _probes() -> list[str]:
    return sorted(json.loads((PRE / "dashboard.json").read_text())["probes"])


@pytest.mark.parametrize("probe", _probes() if (PRE / "dashboard.json").is_file() else [])
@pytest.mark.parametrize("name", ZOO)
def test_the_spec_a_view_builds_from_the_defaults_is_a_bundled_ok_run(bundle, probe, name):
    from app import data, defaults
    from app.run_panel import build_spec

    assert defaults.problem() is None
    view = next((v for v, p in VIEW_PROBE.items() if p == probe), "overview")
    spec = build_spec(ViewState(view=view), f"zoo/{name}", "", probe)
    run_id, error = data.find_run(spec)
    assert run_id is not None, (spec.canonical_json(), error)
    row = data.query("SELECT status, spec FROM runs WHERE run_id = ?", (run_id,)).iloc[0]
    assert row["status"] == "ok" and row["spec"] == spec.canonical_json()


def test_the_stored_spec_is_the_canonical_runspec_byte_for_byte(bundle):
    """``runs.spec`` (what store_reader writes) is ``RunSpec.canonical_json()`` of every bundled run, so a
    lookup by the spec's canonical JSON finds exactly the runs of that spec."""
    from app import data
    from backend.spec import RunSpec

    df = data.query("SELECT run_id, spec FROM runs")
    assert len(df) > 50
    for run_id, stored in zip(df["run_id"], df["spec"], strict=True):
        assert RunSpec.build(**json.loads(stored)).canonical_json() == stored, run_id


@pytest.mark.parametrize("view", ["longppl", "token_loss", "retrieval_heads", "niah"])
def test_the_embedded_demo_shows_traces_with_no_parameters_in_the_url(bundle, view):
    at = run_app(view)
    assert not [i for i in texts(at, "info") if "traces yet" in i], texts(at, "info")
    assert charts(at), f"{view}: no chart from the bundle"
    assert at.query_params == {}
    run_caption = f"{VIEW_PROBE[view]} run: A `"
    assert any(c.startswith(run_caption) for c in texts(at, "caption")), texts(at, "caption")
