"""HF adapters on tiny randomly initialised transformers models (built from configs, never downloaded).

Every ablation is checked against a reference that does not use the adapter: the same weights
loaded into a model *configured* natively with the ablated setting (window, layer type, NoPE
layer), an o_proj with zeroed weights/columns, a rotary embedding with inv_freq = 0, or a
hand-built 4D mask passed to the stock SDPA path.
"""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import kernels.attention as kattn
from models.ablation import AblationError
from models.adapters import ATTN_NAME, adapter_for, supported_model_types
from models.plan import FULL, SWA, LayerPlan
from tests.hf_families import zero_rotation
from tests.hf_tiny import BASE, FAMILIES, LAYER_TYPES, build, tokens

TOL = 1e-5


@torch.no_grad()
def logits(model: torch.nn.Module, ids: torch.Tensor, **kw) -> torch.Tensor:
    return model(ids, **kw).logits


def edit(plans: list[LayerPlan], layers, **changes) -> list[LayerPlan]:
    return [dataclasses.replace(p, **changes) if i in layers else p for i, p in enumerate(plans)]


def ablated(model, plans, ids, **kw) -> torch.Tensor:
    with adapter_for(model).apply(plans, **kw):
        return logits(model, ids)


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> None:
    """max |a - b| <= tol * max(1, max |b|): fp32 rounding of logits of size ~10 is ~1e-6 each."""
    diff, scale = (a - b).abs().max().item(), max(1.0, b.abs().max().item())
    assert diff <= tol * scale, f"max |diff| = {diff:.3g} > {tol} * {scale:.3g}"


def assert_moved(a: torch.Tensor, b: torch.Tensor) -> None:
    """The ablation must matter, or the parity check above it proves nothing."""
    assert (a - b).abs().max().item() > 1e-2


# ----------------------------------------------------------------------------- info / registry


def test_info_reads_config():
    info = adapter_for(build("smollm3")).info()
    assert info.layer_types == tuple(LAYER_TYPES)
    assert info.num_heads == (4, 4, 4, 4)
    assert info.windows == (8, None, 8, None)
    assert info.pe == ("rope", "rope", "rope", "nope")
    assert adapter_for(build("qwen3")).info().pe == ("rope",) * 4


def test_a_family_without_a_file_uses_the_generic_adapter():
    cfg = LlamaConfig(**{k: v for k, v in BASE.items() if k != "initializer_range"})
    adapter = adapter_for(LlamaForCausalLM(cfg))
    assert type(adapter).__name__ == "HFAdapter" and adapter.info().layer_types == ("full_attention",) * 4
    assert "llama" not in supported_model_types() and "hybridscope" in supported_model_types()


# ----------------------------------------------------------------------------- native parity


@pytest.mark.parametrize("family", FAMILIES)
def test_native_plans_are_exact_noop(family):
    model, ids = build(family), tokens()
    before = logits(model, ids)
    assert torch.equal(ablated(model, adapter_for(model).native_plans(), ids), before)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_native_plans_through_kernel(family, attn, monkeypatch):
    model, ids = build(family, attn), tokens()
    calls = []
    real = kattn.attention
    monkeypatch.setattr(kattn, "attention", lambda *a, **k: calls.append(k) or real(*a, **k))
    out = ablated(model, adapter_for(model).native_plans(), ids, force_kernel=True)
    assert len(calls) == 4 and [c["window"] for c in calls] == [8, None, 8, None]
    assert_close(out, logits(model, ids))


# ----------------------------------------------------------------------------- windows


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_window_override_equals_native_window(family, attn):
    model, ids = build(family, attn), tokens()
    plans = edit(adapter_for(model).native_plans(), {0, 2}, window=5)
    ref = logits(build(family, attn, source=model, sliding_window=5), ids)
    out = ablated(model, plans, ids)
    assert_close(out, ref)
    assert_moved(out, logits(model, ids))
    assert model.config._attn_implementation == attn


# Gemma 3 gives sliding and full layers different RoPE bases; a window ablation keeps a layer's
# RoPE, so the reference (which changes the layer type) needs one base for both types.
SAME_ROPE = {
    "gemma3": {"rope_parameters": {t: {"rope_type": "default", "rope_theta": 1e4} for t in (SWA, FULL)}}
}


@pytest.mark.parametrize("family", FAMILIES)
def test_window_none_on_sliding_layer_equals_full_layer(family):
    model, ids = build(family, **SAME_ROPE.get(family, {})), tokens()
    plans = edit(adapter_for(model).native_plans(), {2}, window=None)
    ref = logits(
        build(family, source=model, layer_types=[SWA, FULL, FULL, FULL], **SAME_ROPE.get(family, {})), ids
    )
    out = ablated(model, plans, ids)
    assert_close(out, ref)
    assert_moved(out, logits(model, ids))


def test_window_on_full_layer_equals_sliding_layer():
    model, ids = build("qwen3"), tokens()
    plans = edit(adapter_for(model).native_plans(), {1, 3}, window=8)
    assert_close(ablated(model, plans, ids), logits(build("qwen3", source=model, layer_types=[SWA] * 4), ids))


def test_window_and_sinks_equal_hand_built_4d_mask():
    """Independent reference: stock SDPA attention given an explicit 4D boolean mask."""
    model, ids = build("qwen3"), tokens()
    n = ids.shape[1]
    q, k = torch.arange(n)[:, None], torch.arange(n)[None, :]
    mask = (k <= q) & ((q - k < 4) | (k < 2))
    ref = logits(build("qwen3", source=model), ids, attention_mask=mask.expand(2, 1, n, n))
    plans = edit(adapter_for(model).native_plans(), {0, 1, 2, 3}, window=4, sinks=2)
    out = ablated(model, plans, ids)
    assert_close(out, ref)
    assert_moved(out, ablated(model, edit(plans, {0, 1, 2, 3}, sinks=0), ids))


def test_window_one_reaches_the_computation():
    model, ids = build("qwen3"), tokens()
    plans = edit(adapter_for(model).native_plans(), {0, 1, 2, 3}, window=1)
    out = ablated(model, plans, ids)
    assert_moved(out, logits(model, ids))
    assert_close(out, logits(build("qwen3", source=model, layer_types=[SWA] * 4, sliding_window=1), ids))


# ----------------------------------------------------------------------------- positional encoding


def test_smollm3_nope_toggle_equals_native_no_rope_layer():
    model, ids = build("smollm3"), tokens()
    plans = edit(adapter_for(model).native_plans(), {1}, pe="nope")
    ref = logits(build("smollm3", source=model, no_rope_layers=[1, 0, 1, 0]), ids)
    out = ablated(model, plans, ids)
    assert_close(out, ref)
    assert_moved(out, logits(model, ids))


def test_smollm3_rope_on_native_nope_layer():
    model, ids = build("smollm3"), tokens()
    plans = edit(adapter_for(model).native_plans(), {3}, pe="rope")
    ref = logits(build("smollm3", source=model, no_rope_layers=[1, 1, 1, 1]), ids)
    out = ablated(model, plans, ids)
    assert_close(out, ref)
    assert_moved(out, logits(model, ids))
    assert model.model.layers[3].self_attn.use_rope == 0


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
def test_nope_everywhere_equals_zero_rotary_frequencies(family):
    """Reference: the model's own rotary embedding with inv_freq = 0 gives cos = 1, sin = 0."""
    model, ids = build(family), tokens()
    ref_model = zero_rotation(build(family, source=model))
    plans = edit(adapter_for(model).native_plans(), {0, 1, 2, 3}, pe="nope")
    out = ablated(model, plans, ids)
    assert_close(out, logits(ref_model, ids))
    assert_moved(out, logits(model, ids))


def test_nope_with_window_override_combines():
    model, ids = build("smollm3"), tokens()
    plans = edit(adapter_for(model).native_plans(), {0, 2}, window=3, pe="nope")
    ref = logits(build("smollm3", source=model, sliding_window=3, no_rope_layers=[0, 1, 0, 0]), ids)
    assert_close(ablated(model, plans, ids), ref)


# ----------------------------------------------------------------------------- skips and heads


@pytest.mark.parametrize("family", FAMILIES)
def test_skip_equals_zeroed_o_proj(family):
    model, ids = build(family), tokens()
    ref_model = build(family, source=model)
    with torch.no_grad():
        ref_model.model.layers[1].self_attn.o_proj.weight.zero_()
    out = ablated(model, edit(adapter_for(model).native_plans(), {1}, skip=True), ids)
    assert_close(out, logits(ref_model, ids), tol=1e-6)
    assert_moved(out, logits(model, ids))


@pytest.mark.parametrize("family", FAMILIES)
def test_masked_heads_equal_zeroed_o_proj_columns(family):
    model, ids = build(family), tokens()
    ref_model = build(family, source=model)
    with torch.no_grad():
        ref_model.model.layers[2].self_attn.o_proj.weight[:, 16:32].zero_()  # head 1
        ref_model.model.layers[2].self_attn.o_proj.weight[:, 48:64].zero_()  # head 3
    plans = edit(adapter_for(model).native_plans(), {2}, masked_heads=(3, 1))
    out = ablated(model, plans, ids)
    assert_close(out, logits(ref_model, ids), tol=1e-6)
    assert_moved(out, logits(model, ids))


# ----------------------------------------------------------------------------- restoration


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _everything(model) -> list[LayerPlan]:
    plans = adapter_for(model).native_plans()
    plans = edit(plans, {0}, window=2, sinks=1, pe="nope")
    plans = edit(plans, {1}, skip=True)
    plans = edit(plans, {2}, masked_heads=(0,))
    return edit(plans, {3}, pe="rope") if plans[3].pe == "nope" else plans


@pytest.mark.parametrize("attn, fail", [("sdpa", False), ("eager", False), ("sdpa", True)])
def test_exit_restores_model_exactly(attn, fail):
    model, ids = build("smollm3", attn), tokens()
    before, hooks = logits(model, ids), _hook_count(model)
    with pytest.raises(KeyError, match="boom") if fail else contextlib.nullcontext():
        with adapter_for(model).apply(_everything(model)):
            assert model.config._attn_implementation == ATTN_NAME
            assert_moved(logits(model, ids), before)
            if fail:
                raise KeyError("boom")
    assert model.config._attn_implementation == attn
    assert _hook_count(model) == hooks
    assert torch.equal(logits(model, ids), before)


def test_failure_during_setup_restores_model():
    model, ids = build("qwen3"), tokens()
    before, hooks = logits(model, ids), _hook_count(model)
    plans = _everything(model)  # hooks on layers 0-1 and the kernel switch happen before layer 2 fails
    adapter = adapter_for(model)
    adapter.info = lambda: dataclasses.replace(
        type(adapter).info(adapter), pe=("rope", "rope", "nope", "rope")
    )
    with pytest.raises(ValueError, match=r"plans\[2\]\.pe: layer 2 .* natively NoPE"):
        with adapter.apply(plans):
            pass
    assert model.config._attn_implementation == "sdpa" and _hook_count(model) == hooks
    assert torch.equal(logits(model, ids), before)


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p[:3], r"plans: expected 4 LayerPlans"),
        (lambda p: edit(p, {1}, kind=SWA), r"plans\[1\]\.kind: expected 'full_attention'"),
        (lambda p: edit(p, {0}, window=0), r"plans\[0\]\.window"),
        (lambda p: edit(p, {0}, pe="alibi"), r"plans\[0\]\.pe: expected one of rope, nope"),
        (lambda p: edit(p, {2}, masked_heads=(4,)), r"plans\[2\]\.masked_heads: head 4 out of range 0\.\.3"),
        (lambda p: edit(p, {0}, sinks=-1), r"plans\[0\]\.sinks"),
    ],
)
def test_bad_plans_are_refused(change, message):
    model = build("qwen3")
    with pytest.raises(ValueError, match=message):
        with adapter_for(model).apply(change(adapter_for(model).native_plans())):
            pass


def test_padding_and_nesting_are_refused():
    model, ids = build("qwen3"), tokens()
    plans = edit(adapter_for(model).native_plans(), {0}, window=3)
    padding = torch.ones_like(ids)
    padding[0, :3] = 0
    with adapter_for(model).apply(plans):
        with pytest.raises(ValueError, match="attention_mask: padded batches"):
            logits(model, ids, attention_mask=padding)
        assert torch.equal(logits(model, ids, attention_mask=torch.ones_like(ids)), logits(model, ids))
        with pytest.raises(AblationError, match="nesting is not supported"):
            with adapter_for(model).apply(plans):
                pass


@torch.no_grad()
def _decode(model, ids: torch.Tensor, prefill: int) -> torch.Tensor:
    """Logits of the last token after a cached prefill and one-token decode steps."""
    out = model(ids[:, :prefill], use_cache=True)
    for t in range(prefill, ids.shape[1]):
        out = model(ids[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
    return out.logits[:, -1]


def test_kv_cache_decoding_matches_full_forward():
    """Full-attention caches keep every key; sliding caches suffice for windows <= native."""
    model, ids = build("qwen3"), tokens()
    plans = edit(adapter_for(model).native_plans(), {0, 1, 3}, window=5, sinks=0)
    plans = edit(plans, {1}, sinks=2)
    with adapter_for(model).apply(plans):
        assert_close(_decode(model, ids, prefill=20), logits(model, ids)[:, -1])


def test_kv_cache_decoding_that_needs_dropped_keys_is_refused():
    model, ids = build("qwen3"), tokens()
    plans = edit(adapter_for(model).native_plans(), {0}, window=None)  # sliding cache keeps 7 keys
    with adapter_for(model).apply(plans):
        with pytest.raises(NotImplementedError, match="layer 0: the KV cache holds keys from position 13"):
            _decode(model, ids[:, :21], prefill=20)


def test_custom_attention_outside_apply_is_refused():
    model, ids = build("qwen3"), tokens()
    with adapter_for(model).apply(edit(adapter_for(model).native_plans(), {0}, window=3)):
        pass
    model.set_attn_implementation(ATTN_NAME)
    with pytest.raises(RuntimeError, match="outside HFAdapter.apply"):
        logits(model, ids)


def test_gemma3_bidirectional_is_refused():
    with pytest.raises(ValueError, match="use_bidirectional_attention"):
        adapter_for(build("gemma3", use_bidirectional_attention=True))
