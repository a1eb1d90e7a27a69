"""Ablation spec: parsing, canonical forms, validation errors, and resolution against a ModelInfo."""

from __future__ import annotations

import json
import random
import re

import pytest

from models.ablation import Ablation, AblationError
from models.plan import FULL, GDN, MAMBA2, SWA, LayerPlan, ModelInfo, native_plans

# F S S S F M G: full, 3x SWA(64), full, Mamba-2, GDN
FSSSFMG = ModelInfo(
    layer_types=(FULL, SWA, SWA, SWA, FULL, MAMBA2, GDN),
    num_heads=(4, 4, 4, 4, 4, 8, 6),
    windows=(None, 64, 64, 64, None, None, None),
    pe=("rope",) * 5 + (None, None),
    conv_kernel=4,
)
FFMM = ModelInfo(layer_types=(FULL, FULL, MAMBA2, MAMBA2), num_heads=(2, 2, 4, 4),
                 windows=(None, None, None, None), pe=("rope", "nope", None, None))


# -- random ablations (seeded) ------------------------------------------------------------------
def _random_selectors(rng: random.Random, values: list) -> dict:
    out = {}
    for w in rng.sample(["all", "full", "swa", "linear"], rng.randint(0, 2)):
        out[w] = rng.choice(values)
    layers = list(range(rng.randint(0, 40)))
    rng.shuffle(layers)
    for _ in range(rng.randint(0, 3)):  # disjoint index selectors
        take, layers = layers[: rng.randint(1, 6)], layers[6:]
        if not take:
            break
        out[",".join(str(i) for i in take)] = rng.choice(values)
    return out


def random_ablation(rng: random.Random) -> Ablation:
    data = {
        "window": _random_selectors(rng, [None, 1, 7, 64, 4096, 2**31]),
        "pe": _random_selectors(rng, ["rope", "nope"]),
        "receptive_field": _random_selectors(rng, [1, 4, 512, 2**20]),
        "sinks": rng.choice([0, 0, 1, 4, 2**31]),
        "skip_layers": [rng.randrange(50) for _ in range(rng.randint(0, 5))],
        "mask_heads": [(rng.randrange(50), rng.randrange(16)) for _ in range(rng.randint(0, 5))],
    }
    return Ablation(**{k: v for k, v in data.items() if rng.random() < 0.7})


def test_random_round_trips():
    rng = random.Random(1234)
    seen_non_empty = 0
    for _ in range(500):
        a = random_ablation(rng)
        seen_non_empty += not a.is_empty
        assert Ablation.from_text(a.to_text()) == a
        assert Ablation.model_validate_json(a.model_dump_json()) == a
        assert Ablation.model_validate_json(a.canonical_json()) == a
        assert Ablation.model_validate(json.loads(a.canonical_json())) == a
        assert Ablation.from_text(a.to_text()).to_text() == a.to_text()
        assert hash(Ablation.from_text(a.to_text())) == hash(a)
        assert a.is_empty == (a.to_text() == "") == (a.canonical_json() == "{}")
    assert seen_non_empty > 400


def test_canonicalisation_makes_equal_ablations_equal():
    a = Ablation(window={"8-11,0,4": 64, " SWA ": None}, pe={"full": "NOPE"},
                 skip_layers=[5, 3, 5], mask_heads=[[5, 0], (2, 1), (5, 0)])
    b = Ablation.from_text(" window[swa] = none ; window[0,4,8,9,10,11]=64; pe[full]=nope;skip=3,5;"
                           "heads=2.1,5.0; ")
    assert a == b
    assert a.canonical_json() == b.canonical_json()
    assert list(a.window) == ["swa", "0,4,8-11"]
    assert a.skip_layers == [3, 5] and a.mask_heads == [(2, 1), (5, 0)]
    # index selectors with equal values are merged; key order: words, then indices by first index
    c = Ablation(window={"9": 1, "linear": 2, "0": 1, "3-4": 5, "all": 3, "1": 1})
    assert list(c.window.items()) == [("all", 3), ("linear", 2), ("0-1,9", 1), ("3-4", 5)]
    assert c.to_text() == "window[all]=3;window[linear]=2;window[0-1,9]=1;window[3-4]=5"


def test_canonical_json_only_non_default_and_sorted():
    a = Ablation.from_text("sinks=4;window[full]=128")
    assert a.canonical_json() == '{"sinks":4,"window":{"full":128}}'
    assert Ablation().canonical_json() == "{}" and Ablation.from_text("").is_empty
    assert Ablation.from_text(" ; ").is_empty and not a.is_empty


@pytest.mark.parametrize("text, expected", [
    ("window[swa]=64;pe[full]=nope;rf[full]=512;sinks=4;skip=3,5;heads=2.1,5.0",
     dict(window={"swa": 64}, pe={"full": "nope"}, receptive_field={"full": 512}, sinks=4,
          skip_layers=[3, 5], mask_heads=[(2, 1), (5, 0)])),
    ("window[full]=none", dict(window={"full": None})),
    ("window[0-2,7]=NULL;receptive_field[linear]=8",
     dict(window={"0-2,7": None}, receptive_field={"linear": 8})),
    ("skip=4-6,1", dict(skip_layers=[1, 4, 5, 6])),
    ("mask_heads=0.3;skip_layers=2", dict(mask_heads=[(0, 3)], skip_layers=[2])),
    ("WINDOW[ALL]=16", dict(window={"all": 16})),
])
def test_known_parses(text, expected):
    assert Ablation.from_text(text) == Ablation(**expected)


def test_known_text_output():
    a = Ablation(skip_layers=[0, 1, 2, 5], mask_heads=[(3, 2), (1, 0)], receptive_field={"2,0": 9})
    assert a.to_text() == "rf[0,2]=9;skip=0-2,5;heads=1.0,3.2"


SEL = "allowed: all, full, swa, chunked, linear, or indices/ranges like 0,4,8-11"
BAD = [  # (input: text or dict, message prefix, required substring)
    ("window[swaa]=64", "ablation.window[swaa]: unknown selector 'swaa'", SEL),
    ({"window": {"swaa": 64}}, "ablation.window[swaa]: unknown selector", SEL),
    ({"pe": {"0-": "nope"}}, "ablation.pe[0-]: malformed selector", SEL),
    ({"pe": {"": "nope"}}, "ablation.pe[]: malformed selector", SEL),
    ({"window": {"0,,4": 8}}, "ablation.window[0,,4]: malformed selector", SEL),
    ({"window": {"-1": 8}}, "ablation.window[-1]: malformed selector", SEL),
    ({"window": {"5-2": 8}}, "ablation.window[5-2]: range '5-2' runs backwards", "allowed: ranges lo-hi"),
    ({"window": {"3000000000": 8}}, "ablation.window[3000000000]: index 3000000000", "allowed: indices 0.."),
    ({"window": {3: 8}}, "ablation.window[3]: selector must be a string", SEL),
    ({"window": {"swa": 0}}, "ablation.window[swa]: 0 is not allowed",
     "allowed: an integer 1..2147483648 or null"),
    ({"window": {"swa": -3}}, "ablation.window[swa]: -3", "allowed: an integer 1.."),
    ({"window": {"swa": 2**31 + 1}}, "ablation.window[swa]: 2147483649", "allowed: an integer 1..2147483648"),
    ({"window": {"swa": 64.0}}, "ablation.window[swa]: 64.0", "allowed: an integer"),
    ({"window": {"swa": "64"}}, "ablation.window[swa]: '64'", "allowed: an integer"),
    ("window[swa]=big", "ablation.window[swa]: 'big'", "allowed: an integer 1..2147483648 or null/none"),
    ({"window": {"swa": True}}, "ablation.window[swa]: True", "allowed: an integer"),
    ({"receptive_field": {"full": 0}}, "ablation.receptive_field[full]: 0", "allowed: an integer 1.."),
    ({"receptive_field": {"full": None}}, "ablation.receptive_field[full]: None", "allowed: an integer 1.."),
    ("pe[full]=alibi", "ablation.pe[full]: 'alibi' is not allowed", "allowed: rope, nope"),
    ({"sinks": -1}, "ablation.sinks: -1 is not allowed", "allowed: an integer 0..2147483648"),
    ("sinks=99999999999", "ablation.sinks: 99999999999", "allowed: an integer 0..2147483648"),
    ({"foo": 1}, "ablation.foo: unknown field", "allowed: window, pe, receptive_field, sinks"),
    ("foo=1", "ablation: unknown field 'foo'", "allowed: window[...], pe[...], rf[...], sinks, skip, heads"),
    ("window=64", "ablation.window: needs a layer selector", SEL.replace("allowed:", "allowed selectors:")),
    ("sinks[full]=4", "ablation.sinks: takes no selector", "allowed: e.g. window[swa]=64"),
    ("window[swa]64", "ablation: segment 'window[swa]64' is not key=value", "allowed: e.g. window[swa]=64"),
    ("window[0]=4;window[0]=8", "ablation.window[0]: given twice", "allowed: each selector once"),
    ("sinks=1;sinks=2", "ablation.sinks: given twice", "allowed: each field once"),
    ({"window": {"all": 4, " ALL": 8}}, "ablation.window[ ALL]: selector 'all' given twice", "allowed: each"),
    ({"window": {"0-3": 4, "3,9": 8}}, "ablation.window: selectors '0-3' and '3,9' both select layer 3",
     "allowed: each layer selected at most once per field"),
    ({"window": ["swa", 4]}, "ablation.window: expected a mapping",
     SEL.replace("allowed:", "allowed selectors:")),
    ({"skip_layers": [1, -2]}, "ablation.skip_layers: -2 is not allowed", "allowed: a list of layer indices"),
    ({"skip_layers": 3}, "ablation.skip_layers: 3 is not a list", "allowed: a list of layer indices"),
    ("skip=a", "ablation.skip_layers: malformed layer list 'a'", "allowed: layer indices/ranges"),
    ("heads=2", "ablation.mask_heads: malformed head '2'", "allowed: layer.head pairs like 2.1,5.0"),
    ({"mask_heads": [[1, 2, 3]]}, "ablation.mask_heads: [1, 2, 3] is not a (layer, head) pair",
     "allowed: a list of [layer, head] pairs"),
    ({"mask_heads": [[1, -1]]}, "ablation.mask_heads: -1 is not allowed", "allowed: a list of [layer, head]"),
]


@pytest.mark.parametrize("bad, prefix, allowed", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_inputs(bad, prefix, allowed):
    assert len(BAD) >= 25
    with pytest.raises(AblationError) as exc:
        Ablation.from_text(bad) if isinstance(bad, str) else Ablation(**bad)
    msg = str(exc.value)
    assert msg.startswith(prefix), msg
    assert allowed in msg, msg
    assert "\n" not in msg
    if not isinstance(bad, str) and json.loads(json.dumps(bad)) == bad:  # JSON gives the same error
        with pytest.raises(AblationError, match="^" + re.escape(prefix)):
            Ablation.model_validate_json(json.dumps(bad))


def test_frozen_and_error_type():
    a = Ablation.from_text("sinks=2;window[swa]=8")
    with pytest.raises(Exception, match="frozen"):
        a.sinks = 3
    assert issubclass(AblationError, ValueError)


# -- merge ------------------------------------------------------------------------------------
def test_merge():
    a = Ablation.from_text("window[swa]=64;window[0-1]=8;skip=3;heads=1.0")
    b = Ablation.from_text("window[swa]=64;window[1-2]=8;pe[full]=nope;sinks=2;skip=1;heads=1.0,2.1")
    assert a.merge(b) == Ablation.from_text(
        "window[swa]=64;window[0-2]=8;pe[full]=nope;sinks=2;skip=1,3;heads=1.0,2.1")
    assert a.merge(Ablation()) == a == Ablation().merge(a)
    with pytest.raises(AblationError, match=r"^ablation\.window\[swa\]: cannot merge 64 and 32; allowed"):
        a.merge(Ablation.from_text("window[swa]=32"))
    with pytest.raises(AblationError, match=r"^ablation\.window: layer 1 gets both 8 and 16; allowed"):
        a.merge(Ablation.from_text("window[1,5]=16"))
    with pytest.raises(AblationError, match=r"^ablation\.sinks: cannot merge 2 and 3; allowed"):
        b.merge(Ablation(sinks=3))


# -- resolve ----------------------------------------------------------------------------------
def P(kind, **kw):
    return LayerPlan(kind=kind, **kw)


def test_empty_resolves_to_native():
    assert Ablation().resolve(FSSSFMG) == native_plans(FSSSFMG)
    assert native_plans(FSSSFMG)[1] == P(SWA, window=64, pe="rope")


def test_resolve_known_plans():
    a = Ablation.from_text("window[swa]=16;pe[full]=nope;rf[full]=512;rf[5-6]=32;sinks=4;skip=3;"
                           "heads=0.1,6.5")
    assert a.resolve(FSSSFMG) == [
        P(FULL, window=512, pe="nope", receptive_field=512, sinks=4, masked_heads=(1,)),
        P(SWA, window=16, pe="rope", sinks=4),
        P(SWA, window=16, pe="rope", sinks=4),
        P(SWA, window=16, pe="rope", sinks=4, skip=True),
        P(FULL, window=512, pe="nope", receptive_field=512, sinks=4),
        P(MAMBA2, receptive_field=32),
        P(GDN, receptive_field=32, masked_heads=(5,)),
    ]


def test_resolve_window_min_receptive_field_and_all():
    plans = Ablation.from_text("window[all]=none;rf[1]=8;rf[2]=100;sinks=1").resolve(FSSSFMG)
    assert [p.window for p in plans] == [None, 8, 100, None, None, None, None]
    assert [p.sinks for p in plans] == [0, 1, 1, 0, 0, 0, 0]
    plans = Ablation.from_text("window[1]=32;rf[1-2]=48").resolve(FSSSFMG)
    assert [p.window for p in plans[:4]] == [None, 32, 48, 64]
    assert [p.receptive_field for p in plans[:4]] == [None, 48, 48, None]
    # "all" for pe silently skips recurrent layers; for rf it reaches every layer
    plans = Ablation.from_text("pe[all]=nope;rf[all]=4").resolve(FSSSFMG)
    assert [p.pe for p in plans] == ["nope"] * 5 + [None, None]
    assert [p.window for p in plans] == [4] * 5 + [None, None]
    assert [p.receptive_field for p in plans] == [4] * 7


@pytest.mark.parametrize("text, info, message", [
    ("window[swa]=8", FFMM, r"^ablation\.window\[swa\]: selects no layer of this model \(full_attention x2, "
     r"mamba2 x2\); allowed: selectors matching attention layers"),
    ("window[linear]=8", FSSSFMG, r"^ablation\.window\[linear\]: selects no layer"),
    ("pe[5]=nope", FSSSFMG, r"^ablation\.pe\[5\]: pe applies to attention layers; layer 5 is mamba2$"),
    ("window[2-6]=8", FSSSFMG, r"^ablation\.window\[2-6\]: window applies to attention layers; layer 5 is "
     r"mamba2 — use receptive_field$"),
    ("window[0,7]=8", FSSSFMG, r"^ablation\.window\[0,7\]: layer 7 out of range; allowed: 0-6$"),
    ("rf[3-20]=8", FFMM, r"^ablation\.receptive_field\[3-20\]: layer 4 out of range; allowed: 0-3$"),
    ("window[all]=8;window[1]=4", FSSSFMG, r"^ablation\.window: layer 1 is selected by both 'all' and '1'; "
     r"allowed: each layer selected at most once per field$"),
    ("rf[all]=8;rf[linear]=8", FSSSFMG, r"^ablation\.receptive_field: layer 5 is selected by both 'all' and "
     r"'linear'"),
    ("rf[linear]=3", FSSSFMG, r"^ablation\.receptive_field\[linear\]: 3 is shorter than the short-conv "
     r"width of layer 5 \(mamba2\); allowed: >= 4 on recurrent layers$"),
    ("rf[all]=2", FFMM,
     r"^ablation\.receptive_field\[all\]: 2 is shorter .* layer 2 \(mamba2\); allowed: >= 4"),
    ("skip=7", FSSSFMG, r"^ablation\.skip_layers: layer 7 out of range; allowed: 0-6$"),
    ("heads=9.0", FSSSFMG, r"^ablation\.mask_heads: layer 9 out of range; allowed: 0-6$"),
    ("heads=6.6", FSSSFMG,
     r"^ablation\.mask_heads: head 6 of layer 6 out of range; layer 6 \(gated_deltanet\) allows heads 0-5$"),
    ("sinks=4", FFMM, r"^ablation\.sinks: no attention layer of this model is windowed .*; allowed: sinks=0"),
    ("sinks=4;window[swa]=none", FSSSFMG, r"^ablation\.sinks: no attention layer"),
])
def test_resolve_errors(text, info, message):
    with pytest.raises(AblationError, match=message):
        Ablation.from_text(text).resolve(info)


def test_resolve_boundaries_ok():
    plans = Ablation.from_text("rf[linear]=4;sinks=2;rf[0]=1;heads=6.5,0.3;skip=6").resolve(FSSSFMG)
    assert plans[0] == P(FULL, window=1, pe="rope", receptive_field=1, sinks=2, masked_heads=(3,))
    assert plans[5].receptive_field == 4 and plans[6].skip and plans[6].masked_heads == (5,)
    assert Ablation.from_text("sinks=3").resolve(FSSSFMG)[1].sinks == 3  # native SWA takes sinks
