"""Generated hostile permalinks (seeded, 240 + 300 cases, each set time-bounded): every bad parameter is
refused with one warning line naming it, falls back to its default, the other parameters survive, the
cleaned link parses without a warning, nothing raises; a few open the real app (fake backend): no
exception, nothing submitted, nothing stored. The second set adds what only the data can refuse
(app/links.py: unknown models, layers/heads/documents out of range, page-only parameters on another
page, unknown paths) and the ambiguous forms (a repeated parameter, a view that disagrees with the path)."""

from __future__ import annotations

import random
import time

import pytest

from app.links import Catalog, Layout, check
from app.state import DEFAULT, PARSERS, VIEWS, encode, parse
from tests.app.conftest import run_app, texts

N_CASES, BUDGET_S = 240, 30.0
CTRL = [chr(c) for c in range(32)] + ["\x7f", "\u202e"]


def bad_value(rng: random.Random, key: str) -> str | list[str]:
    """A value the parser of ``key`` must refuse."""
    junk = rng.choice(["'; DROP TABLE runs;--", "<script>alert(1)</script>", "x" * rng.randint(513, 3000),
                       "a" + rng.choice(CTRL) + "b", "{{7*7}}", "%00", "${jndi:x}"])
    if key in ("doc", "start", "layer", "head"):
        return rng.choice(["-1", "1.5", "1e3", "true", "0x10", "１２", " 3", "3 ", "9" * rng.randint(10, 40),
                           "3; DROP TABLE runs", junk])
    if key in ("model", "model_b"):
        return rng.choice(["../../etc/passwd", "zoo/../x", "zoo//x", "zoo/./x", "/etc", "tiny/SF\n",
                           "tiny SF", "tïny/SF", "a" * 600, junk])
    if key == "data":
        return rng.choice(["file:/etc/passwd", "file:~/.ssh/id_rsa", "/etc/hosts", "file:../x", "zoo:nope",
                           "stdlib\n", junk])
    if key in ("abl", "abl_b"):
        return rng.choice(["window[swaa]=64", "rf[full]=-5", "pe[full]=alibi", "sinks=-1", "skip=a",
                           "heads=1", "colour=1", "window[swa]=64;window[swa]=32", junk])
    if key == "cmp":
        return rng.choice(["maybe", "2", "yes please", "tru", junk])
    if key == "probe":
        return rng.choice(["key_tokens", "rm -rf", "NIAH", "niah ", junk])
    if key == "view":
        return rng.choice(["bogus", "../admin", "<script>", junk])
    if key == "scale":
        return rng.choice(["log", "Shared", "per map", "per-map ", "shared;", junk])
    if key == "models":
        many = [f"zoo/m{i}" for i in range(rng.randint(17, 40))]
        return rng.choice([many, ["zoo/a", "../b"], ["zoo/a", "a" * 600], "|".join(many)])
    assert key == "params"
    return rng.choice(["max_tokens=abc", "n_docs=true", "n_docs=1e3", "max_tokens=2.0", "bogus=1",
                       "max_tokens=-5", "max_tokens=99999999999", "max_tokens", "=;=", "lengths=1,,x",
                       "n_docs=" + "9" * 30, junk])


GOOD = {"model_b": "zoo/ok", "doc": "3", "cmp": "true"}


def case(rng: random.Random) -> tuple[dict, list[str], bool]:
    """(query, the keys with bad values, whether unknown keys are present). A repeated bad key (its last
    value bad) gets two warnings: the repeat and the bad value."""
    keys = [k for k in PARSERS if k not in GOOD and k != "view"]
    bad = rng.sample(keys, rng.randint(1, 3))
    if "params" in bad and "probe" in bad:
        bad.remove("probe")  # params are checked against the probe: keep one reason per warning
    query: dict = {k: bad_value(rng, k) for k in bad}
    for k in bad:
        if k != "models" and isinstance(query[k], str) and rng.random() < 0.1:
            query[k] = ["zoo:test", query[k]]  # a repeated scalar: the last value counts
    query.update({k: v for k, v in GOOD.items() if k not in query})
    unknown = rng.random() < 0.2
    if unknown:
        query[rng.choice(["evil", "<img src=x>", "x" * 100, "view;"])] = "1"
    return query, bad, unknown


def test_permalink_fuzz_every_bad_value_warns_once_and_falls_back():
    rng = random.Random(1515)
    t0, done = time.monotonic(), 0
    while done < N_CASES and time.monotonic() - t0 < BUDGET_S:
        query, bad, unknown = case(rng)
        page = rng.choice(["overview", "niah", "token_loss", "runs"])
        state, warnings = parse(query, page)
        repeated = sum(isinstance(query[k], list) for k in bad if k != "models")
        assert len(warnings) == len(bad) + unknown + repeated, (query, warnings)
        assert all("\n" not in w and w.startswith("Ignored ") for w in warnings), warnings
        for k in bad:
            field = "params" if k == "params" else k
            assert getattr(state, field) == getattr(DEFAULT, field), (k, query[k], state)
        assert state.model_b == "zoo/ok" and state.doc == 3 and state.cmp is True and state.view == page
        again, more = parse(encode(state), page)  # the link the app redirects to is clean
        assert more == [] and again == state, (query, more)
        done += 1
    assert done >= 200, f"only {done} cases within {BUDGET_S} s"


@pytest.mark.parametrize("page, query", [
    ("niah", {"model": "../../etc/passwd", "data": "file:/etc/passwd", "params": "n_docs=true"}),
    ("token_loss", {"doc": "1e3", "start": "-1", "abl": "window[swaa]=4", "model": "zoo//x"}),
    ("runs", {"models": [f"zoo/m{i}" for i in range(20)], "probe": "rm -rf", "cmp": "maybe"}),
    ("retrieval_heads", {"layer": "3; DROP TABLE runs", "head": "1 OR 1=1", "abl_b": "x" * 600}),
])
def test_hostile_links_open_the_app_with_warnings_and_submit_nothing(empty_store, env, page, query):
    at = run_app(page, **query)
    assert texts(at, "warning"), "the bad values are reported"
    assert not env.exists()  # the fake backend was asked for nothing
    assert not (empty_store / "runs").exists() or not any((empty_store / "runs").iterdir())


# ------------------------------------------------------------------------------------------------
# links that only the data can refuse (app/links.py), with the ambiguous forms (repeats, view vs path,
# unknown paths), mixed with the malformed values above
# ------------------------------------------------------------------------------------------------
LINK_CASES, LINK_BUDGET_S = 300, 30.0
PAGES = list(VIEWS)
OWNER = {"doc": "token_loss", "start": "token_loss", "layer": "retrieval_heads", "head": "retrieval_heads",
         "models": "longppl"}


def fake_catalog() -> Catalog:
    """zoo/swa64 (SSSFSSSF, 6 heads) and zoo/gdn (GGGFGGGF: attention in layers 3 and 7, 6 heads)."""
    swa = Layout((True,) * 8, (6,) * 8)
    gdn = Layout(tuple(i in (3, 7) for i in range(8)), tuple(6 if i in (3, 7) else 0 for i in range(8)))
    return Catalog(("zoo/swa64", "zoo/gdn"), {"zoo/swa64": swa, "zoo/gdn": gdn}.get, "zoo/swa64")


def link_case(rng: random.Random) -> tuple[str, str | None, dict, dict, int]:
    """(page, unknown path, query, expected state values of the keys set, expected number of warnings).

    Good values: model A (sometimes), model_b, cmp, and the page's own parameters in range (token_loss:
    doc < 4, start < 4096; retrieval_heads: layer 3, head < 6 on both models). Bad ones (1-3 keys): a
    malformed value, an unknown model, a layer/head/doc/start out of range, a page-only parameter on
    another page; plus sometimes a repeated good parameter, a view that disagrees with the path, an
    unknown path (Streamlit then runs the Overview)."""
    lost = rng.choice(["bogus", "admin/../x", "<b>x</b>", "niah2"]) if rng.random() < 0.1 else None
    page = "overview" if lost else rng.choice(PAGES + ["token_loss", "retrieval_heads"] * 4)
    good: dict = {"model_b": "zoo/gdn", "cmp": "true"}
    if rng.random() < 0.5:
        good["model"] = rng.choice(["zoo/swa64", "zoo/gdn"])
    if page == "token_loss":
        good.update(doc=str(rng.randrange(4)), start=str(rng.randrange(4096)))
    if page == "retrieval_heads":
        good.update(layer="3", head=str(rng.randrange(6)))
    if page in ("longppl", "runs"):
        good["models"] = rng.sample(["zoo/swa64", "zoo/gdn"], rng.randint(1, 2))
    expect = {"model_b": "zoo/gdn", "cmp": True, "view": page if not lost else "overview"}
    expect.update({k: (tuple(v) if k == "models" else int(v) if k in OWNER else v)
                   for k, v in good.items() if k not in ("model_b", "cmp")})
    query, n = dict(good), int(lost is not None)
    keys = rng.sample(["model", "model_b", "models", "doc", "start", "layer", "head", "data", "abl"],
                      rng.randint(1, 3))
    model_a = "zoo/swa64" if "model" in keys else good.get("model", "zoo/swa64")  # the catalog's default
    for key in keys:
        owned = key not in OWNER or OWNER[key] == page or (key == "models" and page == "runs")
        if not owned:  # any value of a page-only parameter on another page: it does nothing here
            value = {"doc": "2", "start": "9", "layer": "3", "head": "1", "models": ["zoo/gdn"]}[key]
        elif rng.random() < 0.4:
            value = bad_value(rng, key)  # malformed: state.parse refuses it
        elif key in ("model", "model_b"):
            value = rng.choice(["zoo/nope", "org/unknown", "tiny/SXF", "zoo/swa64x"])
        elif key == "models":
            value = rng.choice([["zoo/nope"], ["zoo/x", "zoo/y"]])
        elif key == "doc":
            value = str(rng.choice([4, 5, 999_999]))
        elif key == "start":
            value = str(rng.choice([4096, 10_000, 1 << 20]))
        elif key == "layer":  # out of range, or (GDN) a layer without attention heads
            value = str(rng.choice([8, 12, 4095] + ([0, 1, 2, 5] if model_a == "zoo/gdn" else [])))
        elif key == "head":
            value = str(rng.choice([6, 7, 4095]))
        else:
            value = bad_value(rng, key)
        query[key] = value
        expect[key] = getattr(DEFAULT, key)
        n += 1
    if rng.random() < 0.15:  # a good parameter repeated with another value: the last one counts
        if query["model_b"] == "zoo/gdn":  # model_b is not one of this case's bad values
            query["model_b"], n = ["zoo/swa64", "zoo/gdn"], n + 1
    if page != "overview" and rng.random() < 0.15:
        query["view"], n = rng.choice([v for v in PAGES if v != page]), n + 1  # the path wins
    return page, lost, query, expect, n


def test_link_fuzz_data_checks_warn_once_fall_back_and_correct_the_link(monkeypatch, tmp_path):
    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(tmp_path))  # no dashboard defaults: token_loss n_docs=4
    rng, cat = random.Random(1414), fake_catalog()
    t0, done = time.monotonic(), 0
    while done < LINK_CASES and time.monotonic() - t0 < LINK_BUDGET_S:
        page, lost, query, expect, n = link_case(rng)
        state, warnings = parse(query, page)
        state, more = check(state, cat, lost)
        warnings += more
        assert len(warnings) == n, (page, lost, query, warnings)
        assert all("\n" not in w and w.startswith("Ignored ") for w in warnings), warnings
        got = {k: getattr(state, k) for k in expect}
        assert got == expect, (page, lost, query, got, expect)
        again, clean = parse(encode(state), state.view)  # the corrected link re-parses clean
        again, more = check(again, cat)
        assert clean == [] and more == [] and again == state, (query, clean, more)
        done += 1
    assert done >= 200, f"only {done} cases within {LINK_BUDGET_S} s"
