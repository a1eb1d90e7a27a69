"""Permalink rules that need the data (app/links.py) and the documented way ambiguous links resolve
(app/state.py): unknown models, layers/heads the model lacks, page-only parameters checked against
their page's probe (and ignored on other pages), repeated parameters, a ``view`` that disagrees with the
path, unknown paths. Each rejected value: one "Ignored ..." line, its default, a corrected link that
parses clean; in the app before anything offers a Compute button."""

from __future__ import annotations

import json
import re

import pytest

from app import links
from app.links import Catalog, Layout, check, layout_of, layout_of_config
from app.state import DEFAULT, ViewState, encode, parse
from backend.ablation_match import info_to_json, native_info
from backend.spec import RunSpec
from backend.store import TraceStore
from tests.app.conftest import link, make_app, run_app, texts
from tests.app.fake_client import synthetic_tables

SWA64 = {  # the bundled zoo/swa64 layout: SSSFSSSF, 6 heads per layer
    "model_type": "hybridscope", "layer_types": ["sliding_attention"] * 3 + ["full_attention"]
    + ["sliding_attention"] * 3 + ["full_attention"], "num_attention_heads": 6, "sliding_window": 64,
}
GDN = {"model_type": "hybridscope", "num_attention_heads": 6, "linear_num_heads": 3,
       "layer_types": (["gated_deltanet"] * 3 + ["full_attention"]) * 2}
INFOS = {"zoo/swa64": native_info(SWA64), "zoo/gdn": native_info(GDN)}


def catalog(models=("zoo/swa64", "zoo/gdn"), default="zoo/swa64") -> Catalog:
    return Catalog(models, lambda m: layout_of(m, INFOS.get(m), None), default)


def plain(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


@pytest.fixture(autouse=True)
def _no_bundle(monkeypatch, tmp_path):
    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(tmp_path / "none"))


def checked(query: dict, page: str = "overview", cat: Catalog | None = None, lost: str | None = None):
    """parse + check, and the corrected link re-parsed: (state, warnings) after asserting it is clean."""
    state, warnings = parse(query, page)
    state, more = check(state, cat or catalog(), lost)
    again, later = check(parse(encode(state), state.view)[0], cat or catalog())
    assert parse(encode(state), state.view)[1] == [] and later == [] and again == state, (encode(state), later)
    return state, warnings + more


def one(warnings: list[str], needle: str) -> str:
    assert len(warnings) == 1, warnings
    w = plain(warnings[0])
    assert w.startswith("Ignored ") and "\n" not in w and needle in w, w
    return w


# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["model", "model_b"])
def test_an_unknown_model_warns_and_falls_back(key):
    state, warnings = checked({key: "zoo/nope", "cmp": "true"}, "niah")
    w = one(warnings, f"Ignored URL parameter “{key}=zoo/nope”: unknown model; known: zoo/swa64, zoo/gdn")
    assert w.endswith("Using the default (none).")
    assert getattr(state, key) is None and state.cmp is True


def test_known_and_tiny_models_pass():
    state, warnings = checked({"model": "tiny/SSGF", "model_b": "zoo/gdn"}, "niah")
    assert warnings == [] and state.model == "tiny/SSGF" and state.model_b == "zoo/gdn"


def test_unknown_entries_of_models_are_dropped_with_one_warning():
    state, warnings = checked({"models": ["zoo/gdn", "zoo/nope", "zoo/x"]}, "longppl")
    one(warnings, "unknown models zoo/nope, zoo/x")
    assert "Using the others (zoo/gdn)" in plain(warnings[0]) and state.models == ("zoo/gdn",)
    state, warnings = checked({"models": "zoo/nope"}, "runs")
    assert state.models == () and "Using the default (none)" in one(warnings, "unknown model zoo/nope")


def test_a_remote_backend_decides_on_models_it_alone_knows():
    state, warnings = checked({"model": "org/big"}, "niah", Catalog(None, lambda m: None))
    assert warnings == [] and state.model == "org/big"


def test_the_warning_lists_a_few_known_models():
    many = tuple(f"zoo/m{i}" for i in range(10))
    w = one(checked({"model": "zoo/x"}, "niah", catalog(many))[1], "known: zoo/m0")
    assert "and 4 more" in w and "zoo/m9" not in w


# ------------------------------------------------------------------------------------------------
# layers and heads (the Retrieval heads page) against model A's layout
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("query, field, needle", [
    ({"layer": "8"}, "layer", "zoo/swa64 has layers 0..7"),
    ({"layer": "4095", "head": "1"}, "layer", "zoo/swa64 has layers 0..7"),
    ({"head": "6"}, "head", "layer 0 of zoo/swa64 has heads 0..5"),  # no layer: the first attention layer
    ({"layer": "3", "head": "6"}, "head", "layer 3 of zoo/swa64 has heads 0..5"),
    ({"model": "zoo/gdn", "layer": "0"}, "layer", "layer 0 of zoo/gdn has no attention heads"),
    ({"model": "zoo/gdn", "head": "6"}, "head", "layer 3 of zoo/gdn has heads 0..5"),  # GDN: first attn = 3
    ({"model": "tiny/SSMF", "layer": "2"}, "layer", "layer 2 of tiny/SSMF has no attention heads"),
    ({"model": "tiny/SF", "layer": "2"}, "layer", "tiny/SF has layers 0..1"),
])
def test_out_of_range_layers_and_heads_warn_and_fall_back(query, field, needle):
    state, warnings = checked(query, "retrieval_heads")
    one(warnings, f"Ignored URL parameter “{field}={query[field]}”: {needle}")
    assert getattr(state, field) is None
    for other in ("layer", "head"):
        if other in query and other != field:
            assert getattr(state, other) == int(query[other])  # the good one survives


def test_layers_and_heads_in_range_pass_and_an_unknown_layout_is_left_to_the_view():
    assert checked({"layer": "7", "head": "5"}, "retrieval_heads")[1] == []
    assert checked({"model": "zoo/gdn", "layer": "3", "head": "5"}, "retrieval_heads")[1] == []
    state, warnings = checked({"model": "zoo/other", "layer": "99"}, "retrieval_heads",
                              catalog(("zoo/swa64", "zoo/other")))
    assert warnings == [] and state.layer == 99  # no layout known: the view checks the run's head map


def test_an_unknown_model_a_checks_layers_against_the_default_model():
    state, warnings = checked({"model": "zoo/nope", "layer": "9"}, "retrieval_heads")
    assert len(warnings) == 2 and state.model is None and state.layer is None
    assert "zoo/swa64 has layers 0..7" in plain(warnings[1])


def test_hf_config_layouts_without_torch():
    lay = layout_of_config({"num_hidden_layers": 4, "num_attention_heads": 16,
                            "layer_types": ["linear_attention", "full_attention"] * 2})
    assert lay == Layout((False, True, False, True), (0, 16, 0, 16))
    lay = layout_of_config({"text_config": {"num_hidden_layers": 2, "num_attention_heads": 8}})
    assert lay == Layout((None, None), (8, 8))  # kinds unknown: every layer may have heads
    assert layout_of_config({"num_hidden_layers": "x"}) is None and layout_of_config([]) is None
    cat = Catalog(("org/qwen",), lambda m: lay)
    assert one(checked({"model": "org/qwen", "head": "8"}, "retrieval_heads", cat)[1], "has heads 0..7")


def test_layout_from_a_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 3, "num_attention_heads": 2}))
    assert layout_of("org/m", None, tmp_path) == Layout((None,) * 3, (2,) * 3)
    assert layout_of("org/m", None, tmp_path / "missing") is None


# ------------------------------------------------------------------------------------------------
# doc / start (the Per-token loss page) against the token_loss parameters
# ------------------------------------------------------------------------------------------------
def test_doc_and_start_are_checked_against_the_token_loss_params():
    assert checked({"doc": "3", "start": "4095"}, "token_loss")[1] == []  # n_docs=4, max_tokens=4096
    state, warnings = checked({"doc": "4", "start": "100"}, "token_loss")
    one(warnings, "“doc=4”: the token_loss run has documents 0..3 (n_docs=4)")
    assert state.doc == 0 and state.start == 100
    state, warnings = checked({"start": "4096"}, "token_loss")
    one(warnings, "“start=4096”: the token_loss run has positions 0..4095 (max_tokens=4096)")
    state, warnings = checked({"doc": "7", "params": "n_docs=8"}, "token_loss")  # the URL's params count
    assert warnings == [] and state.doc == 7
    state, warnings = checked({"doc": "7", "probe": "niah", "params": "samples=2"}, "token_loss")
    one(warnings, "documents 0..3")  # another run-panel probe: the view asks token_loss for its defaults


def test_doc_range_follows_the_dashboard_defaults(monkeypatch, tmp_path):
    (tmp_path / "dashboard.json").write_text(json.dumps({"probes": {"token_loss": {"params": {"n_docs": 16}}}}))
    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(tmp_path))
    assert checked({"doc": "15"}, "token_loss")[1] == []
    one(checked({"doc": "16"}, "token_loss")[1], "documents 0..15")


# ------------------------------------------------------------------------------------------------
# page-only parameters on another page, repeated parameters, view vs path, unknown paths
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("page, key, value, needle", [
    ("niah", "layer", "3", "only the Retrieval heads page uses it"),
    ("overview", "head", "1", "only the Retrieval heads page uses it"),
    ("retrieval_heads", "doc", "2", "only the Per-token loss page uses it"),
    ("longppl", "start", "512", "only the Per-token loss page uses it"),
    ("niah", "models", "zoo/gdn", "only the LongPPL page and the Runs page use it"),
    ("niah", "models", "zoo/nope", "only the LongPPL page and the Runs page use it"),  # one warning, not two
])
def test_page_only_parameters_on_another_page_are_ignored(page, key, value, needle):
    state, warnings = checked({key: value, "model_b": "zoo/gdn"}, page)
    one(warnings, f"“{key}={value}”: {needle}")
    assert getattr(state, key) == getattr(DEFAULT, key) and state.model_b == "zoo/gdn"


def test_a_repeated_parameter_counts_once_with_its_last_value():
    state, warnings = checked({"doc": ["1", "2"], "model": ["zoo/gdn", "zoo/gdn"]}, "token_loss")
    one(warnings, "Ignored repeated URL parameter “doc” (2 values): the last one counts.")
    assert state.doc == 2 and state.model == "zoo/gdn"  # identical repeats: silent
    assert encode(state) == {"model": "zoo/gdn", "doc": "2"}  # the corrected link holds one value
    state, warnings = checked({"model": ["zoo/gdn", "zoo/nope"]}, "niah")
    assert len(warnings) == 2 and state.model is None  # the repeat, then the last value's own check


def test_a_view_that_disagrees_with_the_path_is_ignored_the_path_wins():
    state, warnings = checked({"view": "token_loss", "model": "zoo/gdn"}, "niah")
    one(warnings, "“view=token_loss”: this page's path (/niah) is the view. Using the page (niah).")
    assert state.view == "niah" and state.model == "zoo/gdn"
    assert checked({"view": "niah"}, "niah") == (ViewState(view="niah"), [])  # agrees: silent
    assert checked({"view": "niah"}, "overview")[0].view == "niah"  # the old link form (root path) picks it
    state, warnings = checked({"view": "bogus"}, "niah")
    assert state.view == "niah" and "Using the page (niah)" in one(warnings, "unknown view")


def test_an_unknown_path_falls_back_to_the_overview_with_one_warning():
    state, warnings = checked({"model": "zoo/gdn", "layer": "3"}, "overview", lost="bogus/<b>x</b>")
    assert len(warnings) == 2 and state == ViewState(model="zoo/gdn")
    w = plain(warnings[0])
    assert w.startswith("Ignored unknown page “/bogus/<b>x</b>”: no view has this path") and "Overview" in w
    assert "<b>" not in warnings[0].replace("\\<", "")  # escaped
    assert "only the Retrieval heads page" in plain(warnings[1])


def test_unknown_page_outside_a_browser_session_is_none():
    assert links.unknown_page(["overview", "niah"]) is None


# ------------------------------------------------------------------------------------------------
# in the app: before any Compute button, one redirect to the corrected link
# ------------------------------------------------------------------------------------------------
def write_heads_run(root, model: str, config: dict) -> str:
    """A retrieval_heads run whose meta holds the model's ``model_info`` (as the runner writes it)."""
    spec = RunSpec.build(model=model, probe="retrieval_heads")
    run_id = "heads-" + model.replace("/", "-")
    tables = synthetic_tables("retrieval_heads", model)
    TraceStore(root).write_run(run_id, spec.canonical(), tables,
                               meta={"fake": True, "model_info": info_to_json(native_info(config))})
    return run_id


@pytest.fixture
def heads_store(empty_store):
    write_heads_run(empty_store, "zoo/swa64", SWA64)
    return empty_store


def test_app_out_of_range_head_warns_before_the_view(heads_store):
    at = run_app("retrieval_heads", model="zoo/swa64", layer="3", head="9")
    warns = [plain(w) for w in texts(at, "warning")]
    assert sum("“head=9”: layer 3 of zoo/swa64 has heads 0..5" in w for w in warns) == 1, warns
    assert link(at) == {"model": "zoo/swa64", "layer": "3"}  # the corrected permalink
    assert not at.button or all("Compute" not in b.label for b in at.button)


def test_app_unknown_model_warns_once_and_offers_no_compute_for_it(heads_store, env):
    at = run_app("niah", model="zoo/nope", cmp="true", model_b="zoo/missing")
    warns = [plain(w) for w in texts(at, "warning")]
    assert sum("“model=zoo/nope”: unknown model; known: zoo/swa64" in w for w in warns) == 1, warns
    assert sum("“model_b=zoo/missing”: unknown model" in w for w in warns) == 1, warns
    assert "zoo/nope" not in " ".join(str(b.label) for b in at.button)
    assert link(at) == {"model": "zoo/swa64", "cmp": "true"}
    assert not env.exists()  # nothing submitted


def test_app_repeated_and_misplaced_parameters_and_a_disagreeing_view(heads_store):
    at = run_app("niah", model=["zoo/nope", "zoo/swa64"], view="token_loss", doc="2")
    warns = [plain(w) for w in texts(at, "warning")]
    assert len([w for w in warns if w.startswith("Ignored")]) == 3, warns
    assert link(at) == {"model": "zoo/swa64"}
    assert "Needle in a haystack" in [h.value for h in at.header]  # the path won


def test_app_unknown_path_redirects_to_the_overview(heads_store, monkeypatch):
    asked = iter(["bogus"])  # the first run only: the redirect's run is a page switch
    monkeypatch.setattr(links, "unknown_page", lambda paths: next(asked, None))
    at = make_app("overview", model="zoo/swa64")
    at.run()
    warns = [plain(w) for w in texts(at, "warning")]
    assert sum(w.startswith("Ignored unknown page “/bogus”") for w in warns) == 1, warns
    assert link(at) == {"model": "zoo/swa64"}
