"""Every HF family HybridScope adapts, on tiny random checkpoints: parity with HF's own forward.

Empty ablation = HF logits exactly; the probes' per-token loss = HF's own loss (its head's scaling and
softcapping included); skip / head mask = the zeroed output projection; NoPE = the same weights with a
zero rotation frequency; window override = the same weights configured natively with that window;
retrieval rows = HF eager attention rows; what the kernel cannot do yet is refused with one line.
"""

from __future__ import annotations

import pytest
import torch

from backend.attention_probe import row_probs
from backend.forward import token_nll
from models.adapters import UnsupportedModel, adapter_for, describe
from models.apply import apply_ablation
from tests.hf_families import FAMILIES, build, tokens

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
    twin = build(name, source=model)
    with torch.no_grad():
        for buf_name, buf in twin.named_buffers():
            if buf_name.endswith("inv_freq"):
                buf.zero_()
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


@pytest.mark.parametrize("name", [n for n in NAMES if not FAMILIES[n].kernel])
def test_what_the_kernel_lacks_is_refused_in_one_line(name):
    model, ids = build(name), tokens()
    ref = logits(model, ids)
    for text in ("window[all]=4", "rf[full]=4"):
        with pytest.raises(UnsupportedModel, match="HybridScope's attention kernel does not have yet") as e:
            with apply_ablation(model, text):
                pass
        assert "\n" not in str(e.value)
    assert torch.equal(logits(model, ids), ref)  # nothing was left switched
    with pytest.raises(UnsupportedModel, match="row kernel does not have yet"):
        row_probs(model, ids[:1], [5])
    toggles = describe(model.config)["toggles"]
    assert "window" not in toggles and {"pe", "skip_layers", "mask_heads"} <= set(toggles)


@pytest.mark.parametrize("name", NAMES)
def test_describe_from_the_config_alone(name):
    model = build(name)
    d = describe(model.config)
    assert d["supported"] and d["layer_types"] == list(adapter_for(model).info().layer_types)
    assert ("window" in d["toggles"]) == FAMILIES[name].kernel
