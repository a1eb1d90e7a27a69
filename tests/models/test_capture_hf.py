"""capture / current_plans / attention_scale on adapted HF models (tiny random configs, fp32, no downloads).

References that do not use the capture: the attention module's own input (pre-hook) through its
v_proj / o_proj with kernels.attention.attention_reference, and the explicit masked softmax that
transformers' eager attention returns (output_attentions=True) of a model *configured* with the
ablated setting.
"""

from __future__ import annotations

import pytest
import torch

import models.adapters.hf_capture as chf
from backend.attention_probe import row_probs
from kernels.attention import attention_reference
from models.adapters import adapter_for, model_state
from models.apply import apply_ablation
from tests import hf_tiny
from tests.hf_tiny import FAMILIES

ABLATIONS = ("", "window[swa]=3", "pe[full]=nope", "window[all]=5;sinks=2;pe[swa]=nope")


def build(family: str, attn: str = "sdpa", source: torch.nn.Module | None = None, **over) -> torch.nn.Module:
    """``hf_tiny.build``, with Gemma3's query_pre_attn_scalar 9: scaling 1/3, not head_dim ** -0.5."""
    if family == "gemma3":
        over = {"query_pre_attn_scalar": 9, **over}
    return hf_tiny.build(family, attn, source, **over)


def tokens(seed: int = 0, batch: int = 2, length: int = 20) -> torch.Tensor:
    return hf_tiny.tokens(seed, batch, length)


def state(model) -> tuple:
    """Everything a capture may touch: configs' implementations, hooks, the module table, the model's
    state record."""
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    impls = tuple(c._attn_implementation_internal for c in adapter_for(model).configs())
    st = model_state(model)
    return hooks, impls, len(chf._CAPTURES), st.plans, frozenset(st.captured), dict(st.extra)


def module_inputs(model) -> tuple[dict, list]:
    """Record each attention module's hidden_states input (pre-hooks; remove the returned handles)."""
    seen: dict[int, torch.Tensor] = {}
    handles = []
    for i in range(4):
        attn = model.model.layers[i].self_attn

        def hook(m, args, kwargs, i=i):
            seen[i] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

        handles.append(attn.register_forward_pre_hook(hook, with_kwargs=True))
    return seen, handles


# ----------------------------------------------------------------------------- q/k reproduce the layer


@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_captured_qk_reproduce_attention_output(family, attn, ablation):
    model, ids = build(family, attn), tokens()
    seen, handles = module_inputs(model)
    with apply_ablation(model, ablation) as plans:
        assert adapter_for(model).current_plans() == plans
        with adapter_for(model).capture() as cap:
            model(ids)
    for h in handles:
        h.remove()
    B, L = ids.shape
    for i, plan in enumerate(plans):
        attn_mod = model.model.layers[i].self_attn
        q, k = cap[(i, "q")], cap[(i, "k")]
        assert q.shape == (B, 4, L, 16) and k.shape == (B, 2, L, 16)
        v = attn_mod.v_proj(seen[i]).view(B, L, 2, 16).transpose(1, 2)
        scale = adapter_for(model).attention_scale(i)
        assert scale == attn_mod.scaling == (1 / 3 if family == "gemma3" else 0.25)

        def through_o_proj(window, sinks, q=q, k=k, v=v, attn_mod=attn_mod, scale=scale):
            o = attention_reference(q, k, v, window=window, sinks=sinks, scale=scale)
            return attn_mod.o_proj(o.transpose(1, 2).reshape(B, L, 64))

        sinks = plan.sinks if plan.window is not None else 0
        ref = through_o_proj(plan.window, sinks)
        assert (cap[(i, "mixer_out")] - ref).abs().max() < 1e-5, f"layer {i}"
        wrong = through_o_proj(None if plan.window else 2, 0)  # the comparison can tell windows apart
        assert (cap[(i, "mixer_out")] - wrong).abs().max() > 1e-3, f"layer {i}"


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
@torch.no_grad()
def test_nope_queries_are_unrotated(family):
    """Under pe=nope the captured q/k are exactly the normalised projections (no rotation)."""
    model, ids = build(family), tokens()
    seen, handles = module_inputs(model)
    with apply_ablation(model, "pe[1]=nope"), adapter_for(model).capture(names=("q", "k"), layers=[0, 1]) as cap:
        model(ids)
    for h in handles:
        h.remove()
    B, L = ids.shape
    for i in (0, 1):
        m = model.model.layers[i].self_attn
        q = m.q_norm(m.q_proj(seen[i]).view(B, L, 4, 16).transpose(1, 2))
        k = m.k_norm(m.k_proj(seen[i]).view(B, L, 2, 16).transpose(1, 2))
        rotated = i == 0
        assert torch.equal(cap[(i, "q")], q) != rotated and torch.equal(cap[(i, "k")], k) != rotated
        assert torch.allclose(cap[(i, "q")][:, :, 0], q[:, :, 0], atol=1e-6)  # position 0: no rotation


# ----------------------------------------------------------------------------- no side effects


@pytest.mark.parametrize("ablation", ["", "window[swa]=3;pe[full]=nope"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_logits_identical_and_everything_restored(family, attn, ablation):
    model, ids = build(family, attn), tokens()
    with apply_ablation(model, ablation):
        before, st = model(ids).logits, state(model)
        with adapter_for(model).capture() as cap:
            assert chf.is_capture(model.config._attn_implementation)
            during = model(ids).logits
        assert state(model) == st
        after = model(ids).logits
    assert len(cap) == 12
    assert torch.equal(during, before) and torch.equal(after, before)
    assert model.config._attn_implementation == attn
    assert state(model)[2:] == (0, None, frozenset(), {})


def test_padded_batch_and_output_attentions_unchanged():
    """The mask function delegates: a padded 2D mask and eager's weights come out as without capture."""
    model, ids = build("qwen3", "eager"), tokens()
    pad = torch.ones_like(ids)
    pad[0, :4] = 0
    with torch.no_grad():
        ref = model(ids, attention_mask=pad, output_attentions=True)
        with adapter_for(model).capture(names=("k",)):
            out = model(ids, attention_mask=pad, output_attentions=True)
    assert torch.equal(out.logits, ref.logits)
    assert all(torch.equal(a, b) for a, b in zip(out.attentions, ref.attentions))


def test_exception_inside_block_restores():
    model, ids = build("smollm3", "eager"), tokens()
    st = state(model)
    with pytest.raises(KeyError, match="boom"):
        with torch.no_grad(), adapter_for(model).capture(layers=[1, 3]):
            model(ids)
            raise KeyError("boom")
    assert state(model) == st and state(model)[2:] == (0, None, frozenset(), {})


def test_ablation_entered_inside_capture_is_refused():
    model, ids = build("qwen3"), tokens()
    st = state(model)
    with adapter_for(model).capture(names=("q",)) as cap:
        with apply_ablation(model, "window[swa]=3"):
            with pytest.raises(RuntimeError, match=r"enter apply\(\)/apply_ablation\(\) first, then capture"):
                model(ids)
        model(ids)  # fine again once the inner ablation is gone
    assert cap[(0, "q")].shape == (2, 4, 20, 16)
    assert state(model) == st


def test_nested_captures_layers_and_errors():
    model, ids = build("gemma3"), tokens()
    st = state(model)
    with torch.no_grad(), adapter_for(model).capture(names=("q",), layers=[0]) as outer:
        with adapter_for(model).capture(names=("k", "mixer_out"), layers=[1, 2]) as inner:
            ref = model(ids).logits
        assert chf.is_capture(model.config._attn_implementation)  # the outer one still needs it
        with pytest.raises(RuntimeError, match=r"layers: \[0\] are already being captured"):
            with adapter_for(model).capture(layers=[0, 3]):
                pass
    assert sorted(outer) == [(0, "q")]
    assert sorted(inner) == [(1, "k"), (1, "mixer_out"), (2, "k"), (2, "mixer_out")]
    assert state(model) == st
    assert torch.equal(model(ids).logits.detach(), ref)
    with pytest.raises(ValueError, match=r"layers: \[4\] out of range; the model has layers 0\.\.3"):
        with adapter_for(model).capture(layers=[4]):
            pass
    with pytest.raises(ValueError, match=r"layer: 7 out of range"):
        adapter_for(model).attention_scale(7)


@torch.no_grad()
def test_kv_cache_decode_records_cached_keys():
    model, ids = build("qwen3"), tokens()
    out = model(ids[:, :12], use_cache=True)
    with adapter_for(model).capture(names=("q", "k"), layers=[1]) as cap:
        model(ids[:, 12:13], past_key_values=out.past_key_values, use_cache=True)
    assert cap[(1, "q")].shape == (2, 4, 1, 16) and cap[(1, "k")].shape == (2, 2, 13, 16)


# ----------------------------------------------------------------------------- current_plans, probes


def test_current_plans_outside_and_inside_apply():
    model = build("smollm3")
    native = adapter_for(model).native_plans()
    assert adapter_for(model).current_plans() == native
    with apply_ablation(model, "skip=2") as plans:  # hook-only ablation (no kernel switch)
        assert adapter_for(model).current_plans() == plans != native
        with torch.no_grad(), adapter_for(model).capture(names=("mixer_out",), layers=[1, 2]) as cap:
            model(tokens())
    assert not cap[(2, "mixer_out")].any() and cap[(1, "mixer_out")].abs().min() > 0  # after the skip
    assert adapter_for(model).current_plans() == native


EAGER_REFS = {  # ablation -> config edits of a natively configured eager reference
    "": {},
    "window[swa]=3": {"sliding_window": 3},
}


@pytest.mark.parametrize("ablation", list(EAGER_REFS))
@pytest.mark.parametrize("family", FAMILIES)
def test_row_probs_equal_eager_softmax_rows(family, ablation):
    model, ids = build(family), tokens(batch=1)
    ref_model = build(family, "eager", source=model, **EAGER_REFS[ablation])
    with torch.no_grad():
        eager = ref_model(ids, output_attentions=True).attentions  # [1, H, L, L] per layer
    positions = [0, 5, 19]
    with apply_ablation(model, ablation):
        rows = row_probs(model, ids, positions)
    assert sorted(rows) == [0, 1, 2, 3]
    for i in range(4):
        assert rows[i].shape == (4, 3, 20)
        assert (rows[i] - eager[i][0][:, positions]).abs().max() < 1e-5, f"layer {i}"
    assert (rows[0] - rows[1]).abs().max() > 1e-3  # rows differ between layers: the check can fail


def test_smollm3_row_probs_under_nope_equal_native_no_rope_layer():
    model, ids = build("smollm3"), tokens(batch=1)
    ref_model = build("smollm3", "eager", source=model, no_rope_layers=[1, 0, 1, 0])
    with torch.no_grad():
        eager = ref_model(ids, output_attentions=True).attentions
    with apply_ablation(model, "pe[1]=nope"):
        rows = row_probs(model, ids, [7, 19], layers=[1])
    assert list(rows) == [1]
    assert (rows[1] - eager[1][0][:, [7, 19]]).abs().max() < 1e-5
