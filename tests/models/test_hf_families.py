"""Every HF family HybridScope adapts, on tiny random checkpoints: parity with HF's own forward.

Empty ablation = HF logits exactly; the probes' per-token loss = HF's own loss (its head's scaling and
softcapping included); skip / head mask = the zeroed output projection; NoPE = the same weights with a
zero rotation frequency; window override = the same weights configured natively with that window;
retrieval rows = HF eager attention rows; the empty ablation through HybridScope's kernel (forced, or
for long full-sequence forwards) = HF logits within float rounding; a receptive field is exact (tokens
outside it change nothing); what the kernel cannot do is refused with one line.
"""

from __future__ import annotations

import pytest
import torch

import kernels.attention as kattn
from backend.attention_probe import row_probs
from backend.forward import token_nll
from models.adapters import UnsupportedModel, adapter_for, describe
from models.adapters.hf import HFAdapter
from models.adapters.hf_attention import LONG_CONTEXT_TOKENS
from models.apply import apply_ablation
from tests.hf_families import FAMILIES, build, tokens, zero_rotation

NAMES = sorted(FAMILIES)
KERNEL = [n for n in NAMES if FAMILIES[n].kernel]
WINDOWED = [n for n in KERNEL if FAMILIES[n].window]


@torch.no_grad()
def logits(model, ids, **kw) -> torch.Tensor:
    return model(ids, **kw).logits


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = 2e-5) -> None:
    assert a.shape == b.shape
    err = (a - b).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), err


@pytest.mark.parametrize("name", NAMES)
def test_empty_ablation_is_bit_identical_and_loss_is_the_models_own(name):
    model, ids = build(name), tokens()
    ref = logits(model, ids)
    with apply_ablation(model, "") as plans:
        assert len(plans) == 4
        assert torch.equal(logits(model, ids), ref)
        nll = token_nll(model, ids)
    with torch.no_grad():
        hf_loss = model(ids, labels=ids).loss
    assert abs(nll.mean().item() - hf_loss.item()) < 1e-5


def _zero_o_proj(model, layer: int, heads: list[int] | None = None) -> None:
    w = adapter_for(model).attention_module(layer).o_proj.weight
    with torch.no_grad():
        if heads is None:
            w.zero_()
        for h in heads or []:
            w[:, h * 16 : (h + 1) * 16] = 0


@pytest.mark.parametrize("name", NAMES)
def test_skip_and_head_mask_equal_zeroed_projections(name):
    model, ids = build(name), tokens()
    for text, layer, heads in (("skip=1", 1, None), ("heads=2.1,2.3", 2, [1, 3])):
        twin = build(name, source=model)
        _zero_o_proj(twin, layer, heads)
        want = logits(twin, ids)
        assert not torch.allclose(want, logits(model, ids), atol=1e-3)
        with apply_ablation(model, text):
            assert_close(logits(model, ids), want)


@pytest.mark.parametrize("name", NAMES)
def test_nope_equals_zero_rotation_frequencies(name):
    model, ids = build(name), tokens()
    twin = zero_rotation(build(name, source=model))
    want = logits(twin, ids)
    assert not torch.allclose(want, logits(model, ids), atol=1e-3)
    with apply_ablation(model, "pe[all]=nope"):
        assert_close(logits(model, ids), want)


@pytest.mark.parametrize("name", WINDOWED)
def test_window_override_equals_the_natively_configured_window(name):
    model, ids = build(name), tokens()
    twin = build(name, source=model, **{FAMILIES[name].window: 5})
    want = logits(twin, ids)
    assert not torch.allclose(want, logits(model, ids), atol=1e-3)
    with apply_ablation(model, "window[swa]=5"):
        assert_close(logits(model, ids), want)


@pytest.mark.parametrize("name", KERNEL)
def test_retrieval_rows_equal_hf_eager_attention(name):
    model, ids = build(name, attn="eager"), tokens(batch=1, length=20)
    queries = [3, 11, 19]
    with torch.no_grad():
        eager = model(ids, output_attentions=True).attentions
    rows = row_probs(model, ids, queries)
    assert sorted(rows) == [0, 1, 2, 3]
    for layer, probs in rows.items():
        assert_close(probs, eager[layer][0, :, queries].float(), 1e-5)


def test_retrieval_rows_keep_no_kv_cache():
    """row_probs runs the decoder with use_cache=False: an HF decoder otherwise keeps every layer's k/v in a
    DynamicCache (4 GiB at 131,072 tokens for the bench's 16-layer Qwen3, bf16)."""
    model, ids = build(KERNEL[0], attn="eager"), tokens(batch=1, length=20)
    seen = []
    dec = model.model
    handle = dec.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("use_cache")), with_kwargs=True)
    try:
        row_probs(model, ids, [19])
    finally:
        handle.remove()
    assert seen == [False]


def _counting(monkeypatch) -> list[dict]:
    calls: list[dict] = []
    real = kattn.attention
    monkeypatch.setattr(kattn, "attention", lambda *a, **k: calls.append(k) or real(*a, **k))
    return calls


@pytest.mark.parametrize("name", KERNEL)
def test_empty_ablation_through_the_kernel_equals_hf(name, monkeypatch):
    model, ids = build(name), tokens()
    ref = logits(model, ids)
    calls, adapter = _counting(monkeypatch), adapter_for(model)
    with adapter.apply(adapter.native_plans(), force_kernel=True):
        out = logits(model, ids)
    attention = [i for i, k in enumerate(adapter.info().layer_types) if k != "linear_attention"]
    assert len(calls) >= len(attention)  # every attention layer ran the kernel
    assert_close(out, ref)


@pytest.mark.parametrize("name", ["qwen3", "gemma2", "gpt_oss", "llama4_text"])
def test_long_forwards_run_the_kernel_shorter_ones_hf_bit_for_bit(name, monkeypatch):
    model, ids = build(name), tokens(length=24)
    ref = logits(model, ids)
    calls, adapter = _counting(monkeypatch), adapter_for(model)
    with adapter.apply(adapter.native_plans(), long_context=25):  # 24 tokens: below the threshold
        assert torch.equal(logits(model, ids), ref)
    assert calls == []
    with adapter.apply(adapter.native_plans(), long_context=24):  # at the threshold: the kernel, no dense mask
        out = logits(model, ids)
        with torch.no_grad():  # a KV-cache decode step is never routed: HF's own path
            past = model(ids[:, :-1], use_cache=True).past_key_values
            step = model(ids[:, -1:], past_key_values=past).logits
    assert len(calls) == 4 and {c.get("chunk") for c in calls} == set(adapter.info().chunks or [None])
    assert_close(out, ref)
    assert_close(step[:, -1], ref[:, -1], 1e-4)
    assert model.config._attn_implementation == build(name).config._attn_implementation
    assert LONG_CONTEXT_TOKENS == 16384  # the documented default


@pytest.mark.parametrize("name", ["gemma2", "gpt_oss", "llama4_text"])
def test_retrieval_rows_under_long_routing_equal_hf_eager_attention(name):
    model, ids = build(name, attn="eager"), tokens(batch=1, length=20)
    with torch.no_grad():
        eager = model(ids, output_attentions=True).attentions
    adapter = adapter_for(model)
    with adapter.apply(adapter.native_plans(), long_context=20):
        rows = row_probs(model, ids, [4, 19])
    for layer, probs in rows.items():
        assert_close(probs, eager[layer][0, :, [4, 19]].float(), 1e-5)


@pytest.mark.parametrize("name", ["gemma2", "gpt_oss", "llama4_text"])
def test_receptive_field_is_exact_on_softcapped_sink_logit_and_chunked_families(name):
    model, ids = build(name), tokens(batch=1, length=30)
    oldest = 29 - 4 * (3 - 1)  # rf 3 on each of the 4 attention layers: the last token sees the last 9 tokens
    chunk = model.config.get_text_config().to_dict().get("attention_chunk_size")
    if chunk:  # Llama 4's chunked layers 0-2 (chunk 8): nothing before the last token's chunk (24..31)
        oldest = max(oldest, 29 - 29 % chunk)
    outside, inside = ids.clone(), ids.clone()
    outside[0, oldest - 1] = (ids[0, oldest - 1] + 1 - 3) % 125 + 3
    inside[0, oldest] = (ids[0, oldest] + 1 - 3) % 125 + 3
    with apply_ablation(model, "rf[all]=3"):
        base, out, moved = (logits(model, x)[0, -1] for x in (ids, outside, inside))
    assert_close(out, base, 1e-6)
    assert not torch.allclose(moved, base, atol=1e-3)
    assert not torch.allclose(base, logits(model, ids)[0, -1], atol=1e-3)


@pytest.mark.parametrize("name", ["gemma2", "gpt_oss"])
def test_sinks_reach_the_kernel_on_softcapped_and_sink_logit_families(name, monkeypatch):
    model, ids = build(name), tokens()
    with apply_ablation(model, "window[swa]=4"):
        windowed = logits(model, ids)
    calls = _counting(monkeypatch)
    with apply_ablation(model, "window[swa]=4;sinks=2"):
        with_sinks = logits(model, ids)
    assert [c["sinks"] for c in calls if c["window"] == 4] == [2, 2]
    feature = "softcap" if name == "gemma2" else "sink_logits"
    assert all(c[feature] is not None for c in calls)
    assert not torch.allclose(with_sinks, windowed, atol=1e-3)


def test_what_the_kernel_lacks_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(HFAdapter, "kernel_gaps", classmethod(lambda cls, config: ["a feature (config.x)"]))
    model, ids = build("qwen3"), tokens()
    ref = logits(model, ids)
    for text in ("window[all]=4", "rf[full]=4"):
        with pytest.raises(UnsupportedModel, match="HybridScope's attention kernel does not have yet") as e:
            with apply_ablation(model, text):
                pass
        assert "\n" not in str(e.value) and "a feature (config.x)" in str(e.value)
    assert torch.equal(logits(model, ids), ref)  # nothing was left switched
    with pytest.raises(UnsupportedModel, match="row kernel does not have yet"):
        row_probs(model, ids[:1], [5])
    adapter = adapter_for(model)
    with adapter.apply(adapter.native_plans(), long_context=24):  # nothing is routed either
        assert torch.equal(logits(model, ids), ref)
    toggles = describe(model.config)["toggles"]
    assert "window" not in toggles and {"pe", "skip_layers", "mask_heads"} <= set(toggles)


@pytest.mark.parametrize("name", NAMES)
def test_describe_from_the_config_alone(name):
    model = build(name)
    d = describe(model.config)
    assert d["supported"] and d["layer_types"] == list(adapter_for(model).info().layer_types)
    assert ("window" in d["toggles"]) == FAMILIES[name].kernel
