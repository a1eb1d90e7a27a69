"""Plans drive the native hybrid at forward time: each plan equals a natively configured/edited model."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from models.adapters import adapter_for
from models.modeling import HybridForCausalLM
from models.plan import LayerPlan
from models.tiny import tiny_config, tiny_model

PATTERN = "SSMGF"  # layers: 0,1 SWA (window 8), 2 Mamba-2, 3 GDN, 4 full attention
HEAD = 16  # head_dim == linear_head_dim in the tiny config


def _ids(length: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (2, length), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _with_plan(model, layer: int, **changes) -> list[LayerPlan]:
    plans = adapter_for(model).native_plans()
    plans[layer] = dataclasses.replace(plans[layer], **changes)
    return plans


def _twin(model, **config_overrides) -> HybridForCausalLM:
    """Same weights, differently configured."""
    twin = HybridForCausalLM(tiny_config(PATTERN, **config_overrides)).eval()
    twin.load_state_dict(model.state_dict())
    return twin


@pytest.fixture(scope="module")
def model():
    return tiny_model(PATTERN, seed=11)


def test_native_plans_reset_is_bit_identical(model):
    ids = _ids()
    adapter = adapter_for(model)
    assert adapter.current_plans() == adapter.native_plans()
    base = _logits(model, ids)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plans = _with_plan(model, 0, window=3, pe="nope", skip=True)
    with adapter.apply(plans):
        assert adapter.current_plans() == plans
        assert not torch.equal(_logits(model, ids), base)
    assert torch.equal(_logits(model, ids), base)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_model_info(model):
    info = adapter_for(model).info()
    assert info.layer_types == (
        "sliding_attention",
        "sliding_attention",
        "mamba2",
        "gated_deltanet",
        "full_attention",
    )
    assert info.num_heads == (4, 4, 4, 4, 4)
    assert info.windows == (8, 8, None, None, None)
    assert info.pe == ("rope", "rope", None, None, "rope")
    assert info.conv_kernel == 4


@pytest.mark.parametrize("w", [1, 3, 20])
def test_window_override_equals_native_layer_windows(model, w):
    ids = _ids()
    twin = _twin(model, layer_windows=[None, w, None, None, None])
    with adapter_for(model).apply(_with_plan(model, 1, window=w)):
        assert torch.equal(_logits(model, ids), _logits(twin, ids))


def test_window_none_on_swa_equals_full_attention_layer(model):
    ids = _ids()
    twin = HybridForCausalLM(tiny_config("FSMGF")).eval()
    twin.load_state_dict(model.state_dict())
    with adapter_for(model).apply(_with_plan(model, 0, window=None)):
        assert torch.equal(_logits(model, ids), _logits(twin, ids))
    assert not torch.allclose(_logits(model, ids), _logits(twin, ids))  # the window mattered


@pytest.mark.parametrize("layer", [1, 4])
def test_pe_nope_equals_native_layer_pe(model, layer):
    ids = _ids()
    pe = [None] * 5
    pe[layer] = "nope"
    twin = _twin(model, layer_pe=pe)
    with adapter_for(model).apply(_with_plan(model, layer, pe="nope")):
        assert torch.equal(_logits(model, ids), _logits(twin, ids))


def _out_weight(model, layer: int) -> torch.Tensor:
    mixer = model.model.layers[layer].mixer
    return (mixer.out_proj if hasattr(mixer, "out_proj") else mixer.o_proj).weight


@pytest.mark.parametrize("layer", [0, 2, 3, 4])
def test_skip_equals_zeroed_output_projection(model, layer):
    ids = _ids()
    twin = _twin(model)
    with torch.no_grad():
        _out_weight(twin, layer).zero_()
    with adapter_for(model).apply(_with_plan(model, layer, skip=True)):
        assert torch.allclose(_logits(model, ids), _logits(twin, ids), atol=1e-6, rtol=0)


@pytest.mark.parametrize("layer, heads", [(0, (1,)), (4, (0, 3)), (2, (2,)), (3, (0, 1))])
def test_masked_heads_equal_zeroed_projection_columns(model, layer, heads):
    ids = _ids()
    twin = _twin(model)
    with torch.no_grad():
        for h in heads:
            _out_weight(twin, layer)[:, h * HEAD : (h + 1) * HEAD] = 0
    with adapter_for(model).apply(_with_plan(model, layer, masked_heads=heads)):
        masked = _logits(model, ids)
        assert torch.allclose(masked, _logits(twin, ids), atol=1e-6, rtol=0)
    assert not torch.allclose(masked, _logits(model, ids), atol=1e-4)


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda p: p[:-1], "plans:"),
        (lambda p: [dataclasses.replace(p[0], kind="full_attention")] + p[1:], r"plans\[0\].kind"),
        (
            lambda p: p[:2] + [dataclasses.replace(p[2], receptive_field=3)] + p[3:],
            r"plans\[2\].receptive_field",
        ),
        (
            lambda p: p[:3] + [dataclasses.replace(p[3], masked_heads=(4,))] + p[4:],
            r"plans\[3\].masked_heads",
        ),
        (lambda p: p[:3] + [dataclasses.replace(p[3], pe="nope")] + p[4:], r"plans\[3\].window/pe"),
        (lambda p: p[:4] + [dataclasses.replace(p[4], pe="alibi")] + p[5:], r"plans\[4\].pe"),
        (lambda p: [dataclasses.replace(p[0], window=0)] + p[1:], r"plans\[0\].window"),
    ],
)
def test_apply_validates_before_changing_anything(model, change, field):
    bad = change(_with_plan(model, 1, skip=True))  # a valid change next to the invalid one
    adapter = adapter_for(model)
    with pytest.raises(ValueError, match=field):
        with adapter.apply(bad):
            pass
    assert [layer.mixer.plan for layer in model.model.layers] == adapter.native_plans()


# ---------------------------------------------------------------- receptive field, mixer level

L = 40


def _slow_decay(model) -> HybridForCausalLM:
    """Set A = -0.1 and dt ~ 1 in the recurrent layers so that old tokens still matter visibly (> 1e-5)
    after k steps; the receptive-field property is structural and must hold for any parameters."""
    with torch.no_grad():
        for layer in model.model.layers:
            if hasattr(layer.mixer, "A_log"):
                layer.mixer.A_log.fill_(math.log(0.1))
                layer.mixer.dt_bias.fill_(0.5)
    return model


def _mixer_input(seed: int) -> torch.Tensor:
    return torch.randn(1, L, 64, generator=torch.Generator().manual_seed(seed))


def _mixer_out(model, layer: int, x: torch.Tensor) -> torch.Tensor:
    mixer = model.model.layers[layer].mixer
    from models.layers import rope_cos_sin

    cos, sin = rope_cos_sin(torch.arange(x.shape[1]), 16, float(model.config.rope_theta))
    with torch.no_grad():
        return mixer(x, cos, sin)[0]  # [L, hidden]


def _influence(model, layer: int, p: int) -> torch.Tensor:
    """max |change| of the mixer output at every t when the mixer input at position p is perturbed."""
    x = _mixer_input(0)
    y = _mixer_out(model, layer, x)
    x2 = x.clone()
    x2[0, p] += torch.randn(64, generator=torch.Generator().manual_seed(1))
    return (_mixer_out(model, layer, x2) - y).abs().amax(-1)


def _assert_receptive_field(diff: torch.Tensor, p: int, k: int) -> None:
    """Output at t changes iff p <= t <= p + k - 1 (nothing older than t-k+1 matters; t-k+1 does)."""
    assert torch.all(diff[:p] == 0)  # causal
    assert diff[p : p + k].min() > 1e-5, diff[p : p + k]
    assert diff[p + k :].max() <= 1e-6, diff[p + k :]


@pytest.mark.parametrize("layer", [0, 2, 3, 4])  # SWA, Mamba-2, GDN, full
@pytest.mark.parametrize("k", [4, 7, 17])
@pytest.mark.parametrize("backend", ["auto", "recurrent"])
def test_receptive_field_is_exactly_k(layer, k, backend):
    attn_backend = "sdpa" if backend == "auto" else "reference"
    model = _slow_decay(tiny_model(PATTERN, seed=12, linear_backend=backend, attn_backend=attn_backend))
    if model.model.layers[layer].mixer.plan.is_attention:
        plans = _with_plan(model, layer, window=k, receptive_field=k)
    else:
        plans = _with_plan(model, layer, receptive_field=k)
    with adapter_for(model).apply(plans):
        for p in (0, 5, 13):
            _assert_receptive_field(_influence(model, layer, p), p, k)


@pytest.mark.parametrize("layer", [0, 2, 3, 4])
def test_native_receptive_field(layer):
    """Unrestricted recurrent / full layers reach back to position 0; the native SWA layer sees 8 tokens."""
    model = _slow_decay(tiny_model(PATTERN, seed=12))
    diff = _influence(model, layer, 0)
    if layer == 0:
        _assert_receptive_field(diff, 0, 8)
    else:
        assert diff.min() > 1e-7


def test_sinks_stay_visible():
    model = tiny_model(PATTERN, seed=12)
    with adapter_for(model).apply(_with_plan(model, 4, window=5, sinks=2)):
        sink = _influence(model, 4, 1)
        assert sink[0] == 0 and sink[1:].min() > 1e-5  # sink token 1 reaches every later position
        _assert_receptive_field(_influence(model, 4, 9), 9, 5)


def test_receptive_field_below_conv_kernel_is_refused_by_the_mixer():
    model = tiny_model(PATTERN, seed=12)
    mixer = model.model.layers[3].mixer
    mixer.plan = dataclasses.replace(mixer.plan, receptive_field=3)  # bypass the adapter's validation
    with pytest.raises(ValueError, match="receptive_field: 3 is shorter than the short-conv width"):
        _mixer_out(model, 3, _mixer_input(0))
