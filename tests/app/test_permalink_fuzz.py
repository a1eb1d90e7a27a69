"""Generated hostile permalinks (seeded, 240 cases, time-bounded): every bad parameter is refused with
one warning line naming it, falls back to its default, the other parameters survive, the cleaned link
parses without a warning, nothing raises; a few open the real app (fake backend): no exception,
nothing submitted, nothing stored."""

from __future__ import annotations

import random
import time

import pytest

from app.state import DEFAULT, PARSERS, encode, parse
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
