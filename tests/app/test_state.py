"""URL <-> view state: round trips, canonical forms, and every kind of malformed or hostile value."""

from __future__ import annotations

import json
import random
import re

import pytest

from app.state import DEFAULT, VIEWS, ViewState, encode, format_params, parse, parse_params, with_changes


@pytest.fixture(autouse=True)
def _no_bundle(monkeypatch, tmp_path):
    """No dashboard defaults unless a test writes them (params are overrides of those)."""
    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(tmp_path))


def plain(text: str) -> str:
    """What a reader sees: Markdown backslash escapes removed."""
    return re.sub(r"\\(.)", r"\1", text)


def test_default_state_writes_nothing():
    assert encode(DEFAULT) == {}
    assert parse({}) == (DEFAULT, [])


def test_round_trip_of_a_full_state():
    s = ViewState(
        view="retrieval_heads",
        model="zoo/swa64",
        abl="rf[full]=512;window[swa]=64",
        cmp=True,
        model_b="zoo/gdn",
        abl_b="pe[full]=nope",
        data="stdlib",
        probe="attention_rows",
        params="max_tokens=2048;queries=-1,100",
        doc=3,
        start=512,
        layer=3,
        head=1,
        models=("zoo/a", "zoo/b"),
    )
    q = encode(s)
    assert "view" not in q  # the page path is the view
    assert q["cmp"] == "true" and q["models"] == ["zoo/a", "zoo/b"] and q["layer"] == "3"  # as bound widgets write
    back, warnings = parse({**q, "view": s.view})  # an old link's view parameter still parses
    assert warnings == []
    # ablation text is canonicalised (selector order all, full, swa, linear)
    assert back == ViewState(**{**s.__dict__, "abl": "window[swa]=64;rf[full]=512"})


def test_random_states_round_trip():
    rng = random.Random(0)
    for _ in range(200):
        s = ViewState(
            view=rng.choice(list(VIEWS)),
            model=rng.choice([None, "zoo/x", "tiny/SSSF"]),
            abl=rng.choice(["", "rf[full]=64", "skip=1-3;heads=0.1"]),
            cmp=rng.random() < 0.5,
            doc=rng.randrange(0, 1000),
            start=rng.randrange(0, 1 << 20),
            layer=rng.choice([None, 0, 7]),
            head=rng.choice([None, 0, 15]),
            models=tuple(rng.sample(["zoo/a", "zoo/b", "zoo/c"], rng.randrange(4))),
        )
        back, warnings = parse(encode(s))
        assert warnings == [] and encode(back) == encode(s) and back.view == "overview"


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("view", "bogus", "unknown view"),
        ("view", "<script>", "unknown view"),
        ("abl", "window[swaa]=64", "unknown selector"),
        ("abl", "rf[full]=-5", "ablation.receptive_field"),
        ("abl", "x" * 600, "longer than 512"),
        ("doc", "99999999999999999999", "integer in [0, 1000000]"),
        ("doc", "-1", "integer in [0, 1000000]"),
        ("start", "1e9", "integer in [0, 1048576]"),
        ("layer", "3; DROP TABLE runs", "integer in [0, 4095]"),
        ("head", "1 OR 1=1", "integer in [0, 4095]"),
        ("model", "zoo/x'; DROP TABLE runs;--", "not a model/dataset ref"),
        ("model", "../../etc/passwd", "not a model/dataset ref"),
        ("data", "file:/etc/passwd", "file datasets are off"),
        ("cmp", "maybe", "must be true or false"),
        ("probe", "rm -rf", "unknown probe"),
        ("models", "|".join(f"zoo/m{i}" for i in range(20)), "at most 16 models"),
    ],
)
def test_malformed_values_warn_and_fall_back(key, value, needle):
    state, warnings = parse({key: value, "model_b": "zoo/ok"})
    assert len(warnings) == 1 and needle in plain(warnings[0]), warnings
    assert getattr(state, key) == getattr(DEFAULT, key)
    assert state.model_b == "zoo/ok"  # the good parameter survives
    w = warnings[0]
    for special in "<>[]`*;'":  # echoed input is escaped: it renders as plain text, never Markdown/HTML
        assert special not in w.replace("\\" + special, ""), (special, w)


def test_unknown_keys_are_reported_and_dropped():
    state, warnings = parse({"view": "niah", "evil": "1", "<img src=x>": "2"})
    assert state == ViewState(view="niah")
    assert len(warnings) == 1 and "unknown URL parameter" in warnings[0]
    assert "\\<img src\\=x\\>" in warnings[0] and "<" not in warnings[0].replace("\\<", "")


def test_old_value_forms_still_parse():
    state, warnings = parse({"cmp": "1", "models": "zoo/a|zoo/b"})
    assert warnings == [] and state.cmp is True and state.models == ("zoo/a", "zoo/b")
    assert parse({"cmp": "0"})[0].cmp is False and parse({"cmp": "TRUE"})[0].cmp is True


def test_params_are_validated_against_the_views_probe():
    state, warnings = parse({"view": "token_loss", "params": "max_tokens=2048;n_docs=2"})
    assert warnings == [] and state.params == "max_tokens=2048;n_docs=2"
    state, warnings = parse({"view": "token_loss", "params": "max_tokens=99999999"})
    assert state.params == "" and "params.max_tokens" in plain(warnings[0])
    state, warnings = parse({"view": "niah", "params": "lengths=512,256;haystack=text"})
    assert warnings == [] and state.params == "haystack=text;lengths=256,512"
    _, warnings = parse({"view": "niah", "params": "nope=1"})
    assert "unknown parameter 'nope'" in plain(warnings[0])


def write_defaults(root, probes: dict) -> None:
    (root / "dashboard.json").write_text(json.dumps({"probes": probes}))


def test_params_are_overrides_of_the_dashboard_defaults(tmp_path):
    from app import probe_params
    from app.run_panel import build_spec

    write_defaults(tmp_path, {"longppl": {"data": "zoo:test", "params": {"n_docs": 16, "evaluator": "zoo/gdn"}}})
    base = {"evaluator": "zoo/gdn", "n_docs": 16}
    state, warnings = parse({"view": "longppl", "params": "n_docs=16;trunc_len=2048"})
    assert warnings == [] and state.params == "trunc_len=2048"  # a value equal to the default leaves the URL
    state = parse({"view": "longppl", "params": "n_docs=4;evaluator=none"})[0]
    assert state.params == "evaluator=none;n_docs=4"  # back to the probe's own defaults: explicit
    assert probe_params.resolve(state.params, "longppl", base) == {}
    spec = build_spec(ViewState(view="longppl"), "zoo/swa64", "")
    assert spec.canonical() == {"model": "zoo/swa64", "probe": "longppl", "data": "zoo:test", "params": base}
    spec = build_spec(ViewState(view="longppl", params="trunc_len=2048", data="zoo:val"), "zoo/swa64", "")
    assert spec.data == "zoo:val" and spec.params == {**base, "trunc_len": 2048}
    assert build_spec(ViewState(view="niah"), "zoo/swa64", "").canonical() == {"model": "zoo/swa64", "probe": "niah"}


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[1]", "expected"),
        ('{"probes": {"bogus": {}}}', "unknown probe"),
        ('{"probes": {"niah": {"params": {"lengths": [1]}}}}', "params.lengths"),
        ('{"probes": {"niah": {"data": "a b"}}}', "data"),
        ('{"probes": {"niah": {"extra": 1}}}', "expected an object"),
        ("{", "Expecting"),
    ],
)
def test_a_broken_defaults_file_is_ignored_with_the_reason(tmp_path, text, needle):
    from app import defaults

    (tmp_path / "dashboard.json").write_text(text)
    d = defaults.load()
    assert d.params == {} and d.data == {} and needle in d.problem, d.problem


def test_parse_params_values():
    assert parse_params("", "longppl") == {}
    assert parse_params("evaluator=zoo/big;alpha=1.5", "longppl") == {"alpha": 1.5, "evaluator": "zoo/big"}
    assert parse_params("trunc_len=1024", "longppl") == {}  # defaults are dropped
    assert format_params({"lengths": [256, 512], "samples": 3}) == "lengths=256,512;samples=3"
    with pytest.raises(ValueError, match="params: malformed entry"):
        parse_params("max_tokens", "token_loss")
    with pytest.raises(ValueError, match="params.haystack"):
        parse_params("haystack=ocean", "niah")


def test_with_changes_validates_and_drops_params_that_do_not_fit_a_new_probe():
    s = ViewState(view="niah", params="samples=3")
    assert with_changes(s, doc=2).params == "samples=3"
    assert with_changes(s, probe="token_loss").params == ""
    assert with_changes(s, view="token_loss").params == ""
    with pytest.raises(ValueError, match="unknown selector"):
        with_changes(s, abl="window[bogus]=1")
    with pytest.raises(ValueError, match="integer in"):
        with_changes(s, head=10_000)


def test_the_permalink_model_needs_no_streamlit():
    """app/state.py is the model alone; app/session.py binds it to a Streamlit session."""
    import subprocess
    import sys

    from tests.app.conftest import ROOT

    code = "import sys, app.state; print(sorted(m for m in sys.modules if m.split('.')[0] == 'streamlit'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
