"""apply_ablation on native HybridForCausalLM models: no-op parity, restore, and equivalences
with natively configured / weight-zeroed models."""

from __future__ import annotations

import copy
import types

import pytest
import torch

from models.ablation import Ablation, AblationError
from models.adapters import ModelAdapter, adapter_for
from models.apply import apply_ablation
from models.plan import LayerPlan, ModelInfo, native_plans
from models.tiny import tiny_model

PATTERN = "FSSSFMG"  # full, 3x SWA(8), full, Mamba-2, GDN
L = 24


@pytest.fixture(scope="module")
def model():
    return tiny_model(PATTERN, seed=0)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 256, (2, L), generator=torch.Generator().manual_seed(7))


def logits(m, ids):
    with torch.no_grad():
        return m(ids).logits


def test_empty_ablation_is_bit_identical(model, ids):
    ref = logits(model, ids)
    for empty in (Ablation(), Ablation.from_text(""), "", None):
        with apply_ablation(model, empty) as plans:
            assert plans == adapter_for(model).native_plans() == adapter_for(model).current_plans()
            assert torch.equal(logits(model, ids), ref)
    assert torch.equal(logits(model, ids), ref)


def test_ablation_changes_logits_and_restores(model, ids):
    ref = logits(model, ids)
    with apply_ablation(model, "window[swa]=2;pe[full]=nope;rf[linear]=5"):
        assert not torch.allclose(logits(model, ids), ref)
    assert torch.equal(logits(model, ids), ref)


def _mixer_plans(model) -> list[LayerPlan]:
    return [layer.mixer.plan for layer in model.model.layers]


def test_previous_plans_restored_after_exit_and_exception(model):
    adapter = adapter_for(model)
    native = adapter.native_plans()
    custom = list(native)
    custom[1] = LayerPlan(kind=custom[1].kind, window=3, pe="rope", sinks=1)
    for layer, plan in zip(model.model.layers, custom, strict=True):  # plans set by hand on the mixers
        layer.mixer.plan = plan
    try:
        a = Ablation.from_text("window[swa]=4;skip=6;heads=0.1")
        with apply_ablation(model, a) as plans:
            assert _mixer_plans(model) == adapter.current_plans() == plans == a.resolve(adapter.info())
            assert plans[1].window == 4 and plans[6].skip  # resolved from native plans, not `custom`
        assert _mixer_plans(model) == custom
        with pytest.raises(RuntimeError, match="boom"):
            with apply_ablation(model, a):
                raise RuntimeError("boom")
        assert _mixer_plans(model) == custom
        # a resolution error leaves the model untouched and not marked as busy
        with pytest.raises(AblationError, match=r"^ablation\.window\[5\]: window applies to attention"):
            with apply_ablation(model, "window[5]=4"):
                pass
        assert _mixer_plans(model) == custom
        with apply_ablation(model, a):
            pass
    finally:
        for layer, plan in zip(model.model.layers, native, strict=True):
            layer.mixer.plan = plan


def test_nested_apply_refused_with_merge_hint(model):
    outer, inner = Ablation.from_text("window[swa]=4"), Ablation.from_text("pe[full]=nope")
    with apply_ablation(model, outer) as plans:
        with pytest.raises(AblationError, match=r"nesting is not supported.*merge"):
            with apply_ablation(model, inner):
                pass
        assert adapter_for(model).current_plans() == plans == _mixer_plans(model)  # the outer block is intact
    assert adapter_for(model).current_plans() == adapter_for(model).native_plans() == _mixer_plans(model)
    with apply_ablation(model, outer.merge(inner)) as plans:
        assert plans[1].window == 4 and plans[0].pe == "nope"


@pytest.mark.parametrize("text, native", [
    ("window[swa]=4", dict(sliding_window=4)),
    ("window[2]=3", dict(layer_windows=[None, None, 3, None, None, None, None])),
    ("window[1-3]=5;pe[full]=nope",
     dict(sliding_window=5, layer_pe=["nope", None, None, None, "nope", None, None])),
    ("pe[0,3]=nope", dict(layer_pe=["nope", None, None, "nope", None, None, None])),
])
def test_ablation_equals_natively_configured_model(model, ids, text, native):
    other = tiny_model(PATTERN, seed=0, **native)
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)
    want = logits(other, ids)
    assert not torch.allclose(logits(model, ids), want)
    with apply_ablation(model, text) as plans:
        assert plans == adapter_for(other).native_plans()
        assert torch.equal(logits(model, ids), want)


def _out_proj(m, layer: int) -> torch.nn.Linear:
    mixer = m.model.layers[layer].mixer
    return mixer.out_proj if hasattr(mixer, "out_proj") else mixer.o_proj


def test_skip_and_mask_heads_equal_zeroed_projections(model, ids):
    info = adapter_for(model).info()
    zeroed = copy.deepcopy(model)
    skip, heads = [2, 5], [(0, 1), (4, 3), (5, 2), (6, 0), (6, 3)]
    with torch.no_grad():
        for layer in skip:
            _out_proj(zeroed, layer).weight.zero_()
        for layer, head in heads:
            w = _out_proj(zeroed, layer).weight  # [hidden, heads * head_dim]
            d = w.shape[1] // info.num_heads[layer]
            w[:, head * d:(head + 1) * d] = 0
    want = logits(zeroed, ids)
    assert not torch.allclose(logits(model, ids), want)
    text = "skip=2,5;heads=" + ",".join(f"{layer}.{head}" for layer, head in heads)
    with apply_ablation(model, text):
        got = logits(model, ids)
    assert torch.equal(got, want)


def test_apply_ablation_goes_through_the_adapter(monkeypatch):
    """apply_ablation resolves against adapter.info() and applies through ModelAdapter.apply, whose one
    nesting guard holds for every family (here a stand-in family with no layers of its own)."""
    info = ModelInfo(layer_types=("sliding_attention", "full_attention"), num_heads=(2, 2),
                     windows=(16, None), pe=("rope", "rope"))
    calls = []

    class FakeAdapter(ModelAdapter):
        def info(self):
            return info

        def _apply(self, plans, info, stack):
            calls.append(("enter", plans))
            stack.callback(calls.append, ("exit", plans))

    import models.apply

    monkeypatch.setattr(models.apply, "adapter_for", FakeAdapter)
    other = torch.nn.Module()
    other.config = types.SimpleNamespace(model_type="fake")
    a = Ablation.from_text("window[all]=8;sinks=2")
    with apply_ablation(other, a) as plans:
        assert calls == [("enter", tuple(plans))] and plans == a.resolve(info)
        assert FakeAdapter(other).current_plans() == plans
        with pytest.raises(AblationError, match="nesting is not supported"):
            with apply_ablation(other, a):
                pass
    assert calls == [("enter", tuple(plans)), ("exit", tuple(plans))]
    assert FakeAdapter(other).current_plans() == native_plans(info)
