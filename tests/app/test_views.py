"""AppTest: every view renders from a synthetic store, widgets write the URL, permalinks round-trip,
and malformed links warn and fall back."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest

from app.run_panel import COMPUTE_OPEN
from app.state import VIEW_PROBE
from tests.app.conftest import charts, link, open_panel, run_app, texts

VIEW_HEADERS = {
    "overview": "What each layer does at long context",
    "longppl": "LongPPL",
    "token_loss": "Per-token loss",
    "retrieval_heads": "Retrieval heads",
    "niah": "Needle in a haystack",
    "runs": "Runs",
    "influence": "Gradient influence",
    "retrieval_probe": "Retrieval probing",
    "qk_distance": "Q/K drift",
    "attributions": "Attributions",
    "scaling": "Scaling law",
}
MIN_CHARTS = {"overview": 4, "longppl": 3, "token_loss": 1, "retrieval_heads": 1, "niah": 1, "runs": 0,
              "influence": 2, "retrieval_probe": 1, "qk_distance": 0, "attributions": 0, "scaling": 0}


def plain(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


@pytest.mark.parametrize("view", list(VIEW_HEADERS))
def test_every_view_renders(store, view):
    at = run_app(view)
    assert texts(at, "header") == [VIEW_HEADERS[view]]
    assert len(charts(at)) >= MIN_CHARTS[view]
    assert at.warning.len == 0 and at.error.len == 0
    assert at.query_params == {}  # the path is the view; nothing else differs from the defaults
    assert link(at) == {"model": "zoo/gdn"}  # the permalink pins the model (the first known one)


def test_plain_widgets_use_streamlits_binding_and_the_text_forms_do_not(store):
    at = open_panel(run_app("retrieval_heads", model="zoo/swa64", cmp="true", layer="3"), COMPUTE_OPEN)
    for kind, key in [("selectbox", "model"), ("toggle", "cmp"), ("selectbox", "model_b"), ("selectbox", "probe"),
                      ("selectbox", "data"), ("selectbox", "layer"), ("selectbox", "head")]:
        assert getattr(at, kind)(key=key).proto.query_param_key == key, key
    for key in ("w_abl", "w_abl_b", "p_retrieval_heads_lengths"):
        assert not at.text_input(key=key).proto.query_param_key, key
    at = run_app("token_loss")
    assert at.number_input(key="doc").proto.query_param_key == "doc"
    assert at.number_input(key="start").proto.query_param_key == "start"
    assert run_app("runs").multiselect(key="models").proto.query_param_key == "models"


def click_nav(at, view: str):
    """What a click on a navigation link does in the browser: the query keeps the values of the bound
    sidebar widgets only (AppTest keeps those as widget state), and the page switches."""
    at.query_params.clear()
    return at.switch_page(f"views/{view}.py").run()


def test_navigation_keeps_the_state(store):
    at = run_app("longppl", model="zoo/swa64", cmp="true", abl="rf[full]=64", models=["zoo/gdn"])
    click_nav(at, "niah")
    assert not at.exception
    assert link(at) == {"model": "zoo/swa64", "abl": "rf[full]=64", "cmp": "true"}  # models: a LongPPL widget
    assert at.query_params == {"abl": "rf[full]=64"}  # the custom field is written back by the app
    assert texts(at, "header") == ["Needle in a haystack"] and len(charts(at)) == 3
    click_nav(at, "overview")
    assert link(at) == {"model": "zoo/swa64", "abl": "rf[full]=64", "cmp": "true"}
    assert texts(at, "header") == [VIEW_HEADERS["overview"]]


def test_a_callback_in_the_rerun_of_a_navigation_click_keeps_the_other_custom_fields(store):
    """The browser drops the custom fields from the URL of a navigation click; a widget callback that
    runs with the click (here: Ablation A edited) changes its own field only, the others (abl_b) stay."""
    at = run_app("token_loss", model="zoo/swa64", cmp="true", abl_b="rf[full]=64")
    at.text_input(key="w_abl").input("rf[full]=64")
    click_nav(at, "niah")
    assert not at.exception and at.warning.len == 0
    assert link(at) == {"model": "zoo/swa64", "abl": "rf[full]=64", "cmp": "true", "abl_b": "rf[full]=64"}
    assert at.query_params == {"abl": "rf[full]=64", "abl_b": "rf[full]=64"}
    captions = texts(at, "caption")
    assert any(c.startswith("niah runs: A ") and ", B " in c for c in captions), captions


def test_the_sidebar_says_when_traces_are_synthetic(store):
    at = run_app("niah")
    assert any("Some traces here are synthetic" in c for c in texts(at.sidebar, "caption"))


def test_no_provenance_note_on_an_empty_store(empty_store):
    at = run_app("niah")
    assert not any(c.startswith("⚠️") for c in texts(at.sidebar, "caption"))


def test_niah_failure_tables_are_drawn_only_when_opened(store):
    at = run_app("niah", model="zoo/swa64", cmp="true")
    labels = [e.label for e in at.expander]
    fails = [lab for lab in labels if lab.endswith("failed samples")]
    assert len(fails) == 2 and at.dataframe.len == 0  # closed: no table built or sent
    at.session_state["niah-fails-A"] = True
    at.run()
    assert at.dataframe.len == 1
    n = int(fails[0].split(": ")[-1].split()[0])
    table = at.dataframe[0].value
    assert len(table) == n and list(table.columns) == ["length", "depth", "sample", "expected", "predicted"]


@pytest.mark.parametrize(
    "page,query,view,expect",
    [
        ("overview", {"view": "runs", "models": "zoo/gdn"}, "runs", {"models": "zoo/gdn"}),
        ("overview", {"view": "niah", "cmp": "1", "abl": "rf[full]=64"}, "niah", {"abl": "rf[full]=64", "cmp": "true"}),
        ("niah", {"view": "niah", "model": "zoo/swa64"}, "niah", {"model": "zoo/swa64"}),
        ("overview", {"view": "longppl", "models": "zoo/gdn|zoo/swa64"}, "longppl",
         {"models": ["zoo/gdn", "zoo/swa64"]}),
        ("runs", {"cmp": "0"}, "runs", {}),
    ],
)
def test_old_links_redirect_to_the_page_of_their_view(store, page, query, view, expect):
    """``?view=`` repeated the page path: an old link goes to that page, keeping its other parameters
    (old value forms rewritten as the bound widgets write them)."""
    at = run_app(page, **query)
    assert texts(at, "header") == [VIEW_HEADERS[view]]
    assert at.warning.len == 0
    assert at.query_params == expect
    pinned = {"model": "zoo/gdn", **{k: v for k, v in expect.items()}}
    assert link(at) == pinned


def test_widgets_write_only_non_default_values(store):
    at = run_app("niah")
    at.toggle(key="cmp").set_value(True).run()
    assert link(at) == {"model": "zoo/gdn", "cmp": "true"}
    assert len(charts(at)) == 3  # A, B and B - A
    at.text_input(key="w_abl_b").input("rf[full]=64").run()
    assert at.query_params["abl_b"] == "rf[full]=64"  # a custom field: the app writes the URL itself
    at.selectbox(key="model").select("zoo/swa64").run()
    assert link(at)["model"] == "zoo/swa64"
    at.selectbox(key="model_b").select("zoo/gdn").run()
    assert link(at)["model_b"] == "zoo/gdn"
    at.selectbox(key="model_b").select(None).run()
    assert "model_b" not in link(at)
    at.toggle(key="cmp").set_value(False).run()
    assert "cmp" not in link(at) and len(charts(at)) == 1


def test_permalink_round_trip_restores_widgets(store):
    query = {
        "model": "zoo/swa64",
        "abl": "rf[full]=64",
        "cmp": "true",
        "model_b": "zoo/gdn",
        "doc": "1",
        "start": "256",
    }
    at = run_app("token_loss", **query)
    assert at.query_params == query and at.warning.len == 0
    assert at.selectbox(key="model").value == "zoo/swa64"
    assert at.text_input(key="w_abl").value == "rf[full]=64"
    assert at.toggle(key="cmp").value is True
    assert at.selectbox(key="model_b").value == "zoo/gdn"
    assert at.number_input(key="doc").value == 1 and at.number_input(key="start").value == 256
    html = at.get("html")[0].proto.body
    assert 'title="token' in html and "position 256" in html
    # the sidebar permalink pins the model and holds the whole state
    code = at.sidebar.code[0].value
    assert code == "?" + urlencode(query)  # AppTest has no base URL; the query is exactly the link


def test_ablation_text_is_canonicalised_in_the_url(store):
    at = run_app("longppl", abl="skip=3,1,2; window[swa]=64")
    assert at.query_params["abl"] == "window[swa]=64;skip=1-3"
    assert at.warning.len == 0


@pytest.mark.parametrize(
    "page,query,needle",
    [
        ("overview", {"view": "bogus"}, "unknown view"),
        ("niah", {"abl": "window[swaa]=64"}, "unknown selector"),
        ("niah", {"doc": "1" * 40}, "must be an integer"),
        ("token_loss", {"doc": "1.5"}, "must be an integer"),  # Streamlit's binding alone would take it as 1
        ("niah", {"abl": "9" * 600}, "longer than 512"),
        ("niah", {"head": "1e99"}, "integer in [0, 4095]"),
        ("niah", {"cmp": "maybe"}, "must be true or false"),
        ("runs", {"model": "x'); DROP TABLE runs; --"}, "not a model/dataset ref"),
        ("runs", {"models": ["zoo/gdn", "zoo/../x"]}, "not a model/dataset ref"),
        ("token_loss", {"data": "file:/etc/passwd"}, "file datasets are off"),
        ("token_loss", {"probe": "rm -rf"}, "unknown probe"),
        ("niah", {"<script>": "alert(1)"}, "unknown URL parameter"),
    ],
)
def test_malformed_links_warn_and_fall_back(store, page, query, needle):
    at = run_app(page, **query)
    warnings = [plain(w) for w in texts(at, "warning")]
    assert any(needle in w for w in warnings), warnings
    assert at.query_params == {}  # the rejected value left the URL before any widget could bind it
    assert link(at) == {"model": "zoo/gdn"}
    assert texts(at, "header") == [VIEW_HEADERS[page]]


def test_out_of_range_head_and_non_attention_layer_fall_back(store):
    at = run_app("retrieval_heads", model="zoo/gdn", layer="3", head="99")
    assert any("layer 3 has heads 0..3" in plain(w) for w in texts(at, "warning"))
    assert link(at) == {"model": "zoo/gdn", "layer": "3"}
    assert at.selectbox(key="head").value is None and at.selectbox(key="layer").value == 3
    at = run_app("retrieval_heads", model="zoo/gdn", layer="0", head="1")
    assert any("layer 0 is GDN: it has no attention heads" in plain(w) for w in texts(at, "warning"))
    assert "layer" not in link(at) and at.selectbox(key="layer").value is None
    at = run_app("retrieval_heads", model="zoo/gdn", layer="4000")
    assert any("layers 0..7" in plain(w) for w in texts(at, "warning"))


def test_retrieval_heads_select_head_shows_rows_and_entropy(store):
    at = run_app("retrieval_heads", model="zoo/swa64")
    n = len(charts(at))
    at.selectbox(key="layer").select(3).run()
    at.selectbox(key="head").select(2).run()
    assert link(at) == {"model": "zoo/swa64", "layer": "3", "head": "2"}
    assert texts(at, "subheader")[-1] == "Layer 3, head 2"
    assert len(charts(at)) == n + 2  # attention rows + entropy of the layer
    assert at.metric[0].label == "Attention entropy (nats)"
    # non-attention (GDN) layers are drawn as such: a grey, labelled layer, not zero scores
    at = run_app("retrieval_heads", model="zoo/gdn")
    spec = charts(at)[0].proto.spec
    assert "no attention" in spec and '"filter": "!datum.attention"' in spec


def test_token_view_escapes_tokens_and_shades_delta(store):
    at = run_app("token_loss", model="zoo/swa64", cmp="true", abl_b="rf[full]=64")
    html = at.get("html")[0].proto.body
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "B − A" in html  # delta in the hover titles
    assert any("B − A loss per token" in c for c in texts(at, "caption"))


def test_doc_out_of_range_falls_back(store):
    # doc=3 fits the token_loss params (n_docs=4: app/links.py lets it through), but run A has 2 documents
    at = run_app("token_loss", model="zoo/swa64", doc="3")
    assert any("documents 0..1" in plain(w) for w in texts(at, "warning"))
    assert "doc" not in link(at) and at.number_input(key="doc").value == 0
    at = run_app("token_loss", model="zoo/swa64", doc="7")  # beyond the params: refused before the view
    assert [w for w in texts(at, "warning") if "documents 0..3 (n_docs=4)" in plain(w)]
    assert "doc" not in link(at)


def test_runs_view_sql_box_is_read_only(store):
    at = run_app("runs")
    # the synthetic store: 2 models x 2 ablations x 9 probes + 2 sweeps + 1 formation
    assert at.dataframe[0].value.shape[0] == 39
    at.text_area(key="sql_box").input("SELECT count(*) AS n FROM token_loss").run()
    at.button(key="sql_run").click().run()
    assert int(at.dataframe[1].value["n"][0]) == 2 * 2 * 2 * 600
    at.text_area(key="sql_box").input("DROP VIEW runs").run()
    at.button(key="sql_run").click().run()
    assert any("only read-only statements" in plain(e) for e in texts(at, "error"))
    at.multiselect(key="models").select("zoo/gdn").run()
    assert link(at)["models"] == "zoo/gdn" and at.dataframe[0].value.shape[0] == 19


def test_overview_shows_findings_md(store, tmp_path, monkeypatch):
    pre = tmp_path / "pre2"
    pre.mkdir()
    (pre / "FINDINGS.md").write_text("# Zoo findings\n\nFinding 2 reproduces: LongPPL x3.\n")
    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(pre))
    at = run_app()
    assert any("Finding 2 reproduces" in m for m in texts(at, "markdown"))  # the whole file
    assert texts(at, "info")[0] == "Finding 2 reproduces: LongPPL x3."  # its first paragraph, on top


@pytest.mark.parametrize("view", list(VIEW_HEADERS))
def test_every_view_renders_on_an_empty_store(empty_store, view):
    at = run_app(view)
    assert texts(at, "header") == [VIEW_HEADERS[view]]
    assert at.error.len == 0 and charts(at) == []
    if view in ("longppl", "token_loss", "retrieval_heads", "niah"):
        assert any(f"No {VIEW_PROBE[view]} traces yet" in plain(i) for i in texts(at, "info"))
        assert at.button(key=f"compute-{VIEW_PROBE[view]}-A") is not None


def test_qk_drift_says_plainly_when_a_model_has_no_series_and_charts_one_that_has(store, tmp_path, monkeypatch):
    import numpy as np
    from safetensors.numpy import save_file

    from tests.app.conftest import _clear_caches
    from tests.app.fake_client import write_synthetic

    at = run_app("qk_distance", model="zoo/swa64")
    assert any("has no checkpoint series" in i.value for i in at.info) and not charts(at)
    root = tmp_path / "roots"
    (root / "m" / "qk").mkdir(parents=True)
    (root / "m" / "config.json").write_text("{}")
    for step in (0, 10):
        w = np.arange(32, dtype=np.float32).reshape(8, 4) + step
        save_file({"layers.3.q_proj.weight": w, "layers.3.k_proj.weight": w},
                  str(root / "m" / "qk" / f"step_{step:06d}.safetensors"), metadata={"step": str(step)})
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(root))
    write_synthetic(store_dir(), "m", "qk_distance")
    _clear_caches()  # the store's generation is rescanned at most once a second
    at = run_app("qk_distance", model="m")
    assert any("2 checkpoints, steps 0..10" in c.value for c in at.caption)
    assert len(charts(at)) == 1 and at.error.len == 0
    assert not any("has no checkpoint series" in i.value for i in at.info)


def store_dir():
    from app import data

    return data.store_dir()


def test_scaling_view_shows_the_bundled_fit_with_its_uncertainty(store, tmp_path):
    import os
    import shutil

    from backend.scaling import AUTHORS_R2
    from tests.app.conftest import ROOT

    pre = os.environ["HYBRIDSCOPE_PRECOMPUTED"]
    (tmp_path / "precomputed" / "scaling").mkdir()
    shutil.copy(ROOT / "precomputed" / "scaling" / "swa128_longppl.json", f"{pre}/scaling/swa128_longppl.json")
    at = run_app("scaling")
    assert at.error.len == 0 and len(charts(at)) == 5  # 4 fits with bands + the bootstrap (alpha, beta) cloud
    fits = at.dataframe[0].value
    authors = fits[fits["alpha bounds"] == "the authors' fit"].iloc[0]
    assert authors["R² train"] == pytest.approx(AUTHORS_R2["train"], abs=1e-4)
    assert authors["R² held-out"] == pytest.approx(AUTHORS_R2["validation"], abs=1e-4)
    ours = fits[(fits["alpha bounds"] == "[0.2, 0.3]") & (fits["fitted"] == "ln(loss)")].iloc[0]
    assert ours["objective"] <= authors["objective"] and ours["alpha 90% CI"].startswith("[")
