"""Resolution on layers with two branches (Falcon-H1's hybrid layers) and on layers without a token mixer
(Nemotron-H's mlp / moe blocks): which branch each selector restricts, and what is refused."""

from __future__ import annotations

import dataclasses

import pytest

from models.ablation import Ablation, AblationError
from models.plan import FULL, HYBRID, MAMBA2, LayerPlan, ModelInfo, check_plans, native_plans

FALCON = ModelInfo(layer_types=(HYBRID,) * 3, num_heads=(4,) * 3, windows=(None,) * 3, pe=("rope",) * 3)
NEMOTRON = ModelInfo(layer_types=(MAMBA2, "moe", FULL, "mlp"), num_heads=(4, 0, 4, 0),
                     windows=(None,) * 4, pe=(None, None, "rope", None))


def _fields(plans: list[LayerPlan]) -> list[tuple]:
    return [(p.window, p.receptive_field, p.recurrent_field) for p in plans]


@pytest.mark.parametrize("text, want", [
    ("rf[full]=8", [(8, 8, None)] * 3),
    ("rf[linear]=8", [(None, None, 8)] * 3),
    ("rf[all]=8", [(8, 8, 8)] * 3),
    ("rf[1]=8", [(None, None, None), (8, 8, 8), (None, None, None)]),
    ("rf[full]=8;rf[linear]=16", [(8, 8, 16)] * 3),
    ("window[full]=5", [(5, None, None)] * 3),
])
def test_hybrid_layers_are_restricted_per_branch(text, want):
    plans = Ablation.from_text(text).resolve(FALCON)
    assert _fields(plans) == want
    check_plans(FALCON, plans)


def test_hybrid_selectors_that_address_no_attention_branch_are_refused():
    with pytest.raises(AblationError, match=r"window\[linear\]: selects no layer"):
        Ablation.from_text("window[linear]=8").resolve(FALCON)
    with pytest.raises(AblationError, match="selected by both 'all' and 'full'"):
        Ablation.from_text("rf[all]=8;rf[full]=4").resolve(FALCON)
    with pytest.raises(AblationError, match=r"receptive_field\[linear\]: 3 is shorter than the short-conv"):
        Ablation.from_text("rf[linear]=3").resolve(FALCON)
    assert Ablation.from_text("rf[full]=2;sinks=1").resolve(FALCON)[0].sinks == 1  # attention: any k


def test_layers_without_a_mixer_are_skipped_by_words_and_refused_by_index():
    plans = Ablation.from_text("rf[all]=8").resolve(NEMOTRON)
    assert [p.receptive_field for p in plans] == [8, None, 8, None]
    assert Ablation.from_text("rf[linear]=8").resolve(NEMOTRON)[0].receptive_field == 8
    with pytest.raises(AblationError, match=r"receptive_field\[1\]: receptive_field applies to layers with a "
                                            r"token mixer; layer 1 is moe") as e:
        Ablation.from_text("rf[1]=8").resolve(NEMOTRON)
    assert "\n" not in str(e.value)
    assert Ablation.from_text("skip=1,3").resolve(NEMOTRON)[3].skip
    with pytest.raises(AblationError, match=r"layer 3 \(mlp\) allows heads none \(no heads\)"):
        Ablation.from_text("heads=3.0").resolve(NEMOTRON)


def test_check_plans_guards_the_new_fields():
    plans = native_plans(NEMOTRON)
    with pytest.raises(ValueError, match=r"plans\[1\].receptive_field: layer 1 \(moe\) has no token mixer"):
        check_plans(NEMOTRON, [plans[0], dataclasses.replace(plans[1], receptive_field=8), *plans[2:]])
    with pytest.raises(ValueError, match=r"plans\[0\].recurrent_field: only hybrid layers"):
        check_plans(NEMOTRON, [dataclasses.replace(plans[0], recurrent_field=8), *plans[1:]])
    falcon = native_plans(FALCON)
    with pytest.raises(ValueError, match=r"plans\[2\].receptive_field: 2 is shorter"):
        check_plans(FALCON, [*falcon[:2], dataclasses.replace(falcon[2], recurrent_field=2)])
