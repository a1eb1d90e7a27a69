"""The run panel: computing missing traces (fake client), limits, the ablation editor, probe params."""

from __future__ import annotations

import json
import re

import pytest

from app.run_panel import COMPUTE_OPEN, EDITOR_OPEN, combine, over_limits
from backend.spec import RunSpec
from tests.app.conftest import charts, link, open_panel, run_app, texts


def plain(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def test_missing_traces_offer_to_compute_and_the_view_updates(empty_store, env):
    at = run_app("niah")
    assert any("No niah traces yet" in plain(i) for i in texts(at, "info"))
    assert charts(at) == []
    at.button(key="compute-niah-A").click().run()
    assert not at.exception
    assert len(charts(at)) == 1  # the fake run's traces are in the store and shown
    logged = [json.loads(line) for line in env.read_text().splitlines()]
    assert logged == [{"model": "tiny/SSSF", "probe": "niah"}]
    assert (empty_store / "runs").is_dir()


def test_failed_run_is_reported(empty_store, env):
    from tests.app.fake_client import write_synthetic

    write_synthetic(empty_store, "zoo/will-fail", "token_loss")  # a known model (links refuse unknown ones)
    at = run_app("niah", model="zoo/will-fail")
    at.button(key="compute-niah-A").click().run()
    assert any("Run failed: model: fake failure for zoo/will-fail" in plain(e) for e in texts(at, "error"))


def test_runs_above_the_cpu_limits_are_refused_with_the_limits(empty_store, env, monkeypatch):
    monkeypatch.setenv("HYBRIDSCOPE_MAX_TOKENS", "1000")
    at = open_panel(run_app("token_loss", params="max_tokens=4096"), COMPUTE_OPEN)
    errors = [plain(e) for e in texts(at, "error")]
    assert any(
        "Cannot compute it here: 4096 tokens asked, at most 1000 allowed" in e
        and "cpu: max tokens 1000, max docs 8" in e
        for e in errors
    ), errors
    at.button(key="run-A").click().run()
    assert any(e.startswith("Refused: 4096 tokens asked") for e in map(plain, texts(at, "error")))
    assert not env.exists()  # nothing was submitted


def test_over_limits_counts_tokens_lengths_and_docs():
    lim = {"device": "cpu", "max_tokens": 2048, "max_docs": 4}
    assert (
        over_limits(RunSpec.build(model="zoo/a", probe="token_loss"), lim)
        == "4096 tokens asked, at most 2048 allowed"
    )
    assert (
        over_limits(RunSpec.build(model="zoo/a", probe="niah", params={"lengths": [512, 4096]}), lim)
        == "4096 tokens asked, at most 2048 allowed"
    )
    assert over_limits(RunSpec.build(model="zoo/a", probe="niah"), lim) is None
    spec = RunSpec.build(model="zoo/a", probe="token_loss", params={"max_tokens": 1024, "n_docs": 9})
    assert over_limits(spec, lim) == "9 documents asked, at most 4 allowed"


def test_ablation_editor_adds_replaces_and_clears(store):
    at = open_panel(run_app("longppl"), EDITOR_OPEN)
    at.selectbox(key="ed_field").select("rf").run()
    at.selectbox(key="ed_sel").select("full").run()
    at.number_input(key="ed_rf").set_value(512).run()
    at.button(key="ed_add").click().run()
    assert at.query_params["abl"] == "rf[full]=512"
    assert at.text_input(key="w_abl").value == "rf[full]=512"
    at.selectbox(key="ed_field").select("window").run()
    at.selectbox(key="ed_sel").select("swa").run()
    at.text_input(key="ed_win").input("none").run()
    at.button(key="ed_add").click().run()
    assert at.query_params["abl"] == "window[swa]=none;rf[full]=512"
    at.selectbox(key="ed_field").select("rf").run()
    at.selectbox(key="ed_sel").select("full").run()
    at.number_input(key="ed_rf").set_value(64).run()
    at.button(key="ed_add").click().run()
    assert at.query_params["abl"] == "window[swa]=none;rf[full]=64"
    at.button(key="ed_clear").click().run()
    assert "abl" not in at.query_params


def test_bad_ablation_text_keeps_the_input_and_the_url(store):
    at = run_app("niah", abl="rf[full]=64")
    at.text_input(key="w_abl").input("rf[ful]=64").run()
    assert at.query_params["abl"] == "rf[full]=64"
    assert at.text_input(key="w_abl").value == "rf[ful]=64"
    assert any("unknown selector 'ful'" in plain(e) for e in texts(at, "error"))


def test_probe_params_widgets_write_canonical_params(store):
    at = open_panel(run_app("token_loss"), COMPUTE_OPEN)
    at.number_input(key="p_token_loss_max_tokens").set_value(2048).run()
    assert at.query_params["params"] == "max_tokens=2048"
    at.number_input(key="p_token_loss_n_docs").set_value(2).run()
    assert at.query_params["params"] == "max_tokens=2048;n_docs=2"
    at.number_input(key="p_token_loss_max_tokens").set_value(4096).run()  # back to the default
    assert at.query_params["params"] == "n_docs=2"
    at.selectbox(key="probe").select("niah").run()
    assert link(at)["probe"] == "niah" and "params" not in at.query_params
    at.text_input(key="p_niah_lengths").input("1024,256").run()
    assert at.query_params["params"] == "lengths=256,1024"
    at.text_input(key="p_niah_lengths").input("5,abc").run()
    assert at.query_params["params"] == "lengths=256,1024"
    assert at.error.len == 1


@pytest.mark.parametrize(
    "current,segment,expect",
    [
        ("", "rf[full]=512", "rf[full]=512"),
        ("rf[full]=512", "rf[full]=64", "rf[full]=64"),
        ("rf[full]=512", "window[swa]=32", "window[swa]=32;rf[full]=512"),
        ("skip=1", "skip=3", "skip=1,3"),
        ("heads=2.1", "heads=0.0", "heads=0.0,2.1"),
        ("sinks=4", "sinks=8", "sinks=8"),
    ],
)
def test_combine(current, segment, expect):
    assert combine(current, segment) == expect


def test_a_submitted_run_id_is_the_run_shown(own_store, monkeypatch):
    """Two runs of the same spec: the view shows the newest, until a submit returns the other (a cached
    hit, say): from then on this session shows the run the backend answered with."""
    from app import run_panel
    from backend.limits import cpu_limits
    from tests.app.fake_client import write_synthetic

    older = write_synthetic(own_store, "zoo/swa64", "niah", seed=1)
    newer = write_synthetic(own_store, "zoo/swa64", "niah", seed=2)

    class Cached:
        def limits(self) -> dict:
            return cpu_limits()

        def submit(self, spec, on_progress=None) -> str:
            assert spec.canonical() == {"model": "zoo/swa64", "probe": "niah"}
            return older

    at = open_panel(run_app("niah", model="zoo/swa64"), COMPUTE_OPEN)
    assert f"niah run: A `{newer}`" in [plain(c) for c in texts(at, "caption")]
    monkeypatch.setattr(run_panel, "CLIENT_FACTORY", Cached)
    at.button(key="run-A").click().run()
    assert not at.exception
    assert f"niah run: A `{older}`" in [plain(c) for c in texts(at, "caption")]


def test_a_failed_run_of_the_spec_reports_its_error(empty_store):
    from backend.store import TraceStore

    spec = RunSpec.build(model="zoo/swa64", probe="niah")
    TraceStore(empty_store).write_error("failed-1", spec.canonical(), "CUDA out of memory")
    at = run_app("niah", model="zoo/swa64")
    warnings = [plain(w) for w in texts(at, "warning")]
    assert any("The last niah run for **A**: zoo/swa64 failed: CUDA out of memory" in w for w in warnings), warnings
    assert at.button(key="compute-niah-A") is not None  # and it can be computed again


def test_closed_panels_draw_no_content_but_keep_the_bound_pickers(store):
    """The editor and the parameters are drawn only while their expander is open (a rerun builds and
    sends none of their widgets); the probe and dataset pickers, bound to the URL, are drawn always."""
    at = run_app("niah", probe="token_loss", data="zoo:val", params="max_tokens=2048")
    keys = {w.key for kind in ("selectbox", "text_input", "number_input", "button", "radio")
            for w in getattr(at.sidebar, kind)}
    assert {"probe", "data", "model", "w_abl"} <= keys
    assert not {k for k in keys if k.startswith(("ed_", "p_", "run-"))}, keys
    assert link(at) == {"model": "zoo/gdn", "data": "zoo:val", "probe": "token_loss", "params": "max_tokens=2048"}
    at = open_panel(at, EDITOR_OPEN, COMPUTE_OPEN)
    assert at.number_input(key="p_token_loss_max_tokens").value == 2048
    assert at.selectbox(key="ed_field") is not None and at.button(key="run-A") is not None
    assert link(at)["params"] == "max_tokens=2048"


def test_probe_and_dataset_pickers_write_only_choices_that_differ_from_the_defaults(store):
    at = run_app("niah")
    at.selectbox(key="probe").select("niah").run()  # this view's probe, chosen explicitly
    assert "probe" not in link(at) and at.selectbox(key="probe").value is None
    at.selectbox(key="data").select("zoo:val").run()
    assert link(at)["data"] == "zoo:val"
    at.selectbox(key="data").select(None).run()
    assert "data" not in link(at)


def test_head_detail_computes_the_attention_rows_of_its_layer(empty_store, env):
    from tests.app.fake_client import write_synthetic

    write_synthetic(empty_store, "zoo/swa64", "retrieval_heads")
    at = run_app("retrieval_heads", model="zoo/swa64", layer="3", head="1")
    assert any("No attention_rows traces yet" in plain(i) for i in texts(at, "info"))
    at.button(key="compute-attention_rows-A").click().run()
    assert not at.exception and texts(at, "subheader")[-1] == "Layer 3, head 1"
    assert at.metric[0].label == "Attention entropy (nats)"
    logged = [json.loads(line) for line in env.read_text().splitlines()]
    assert logged == [{"model": "zoo/swa64", "probe": "attention_rows", "params": {"layers": [3]}}]
