"""HybridScope's forwards of HF models keep no KV cache (``models.adapters.no_cache``, issue 10): an HF
decoder called without ``use_cache`` takes ``config.use_cache`` and keeps every layer's k / v (4 GiB at
131,072 tokens for the bench's 16-layer Qwen3, bf16). Inside ``adapter.apply`` / ``adapter.capture`` and in
``own_logits`` no cache object is created, the logits are HF's own bit for bit, a caller that asks for a
cache (``use_cache`` / ``past_key_values``, HF ``generate``) still gets one, and the model is as before after.
"""

from __future__ import annotations

import pytest
import torch
from transformers import cache_utils

from backend.forward import hidden_states, token_nll
from models.adapters import adapter_for, own_logits
from models.apply import apply_ablation
from tests import hf_families, hf_hybrids, hf_tiny


@pytest.fixture
def caches(monkeypatch) -> list[object]:
    """Every DynamicCache constructed while the test runs."""
    made: list[object] = []
    real = cache_utils.DynamicCache.__init__

    def counting(self, *args, **kwargs):
        made.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(cache_utils.DynamicCache, "__init__", counting)
    return made


def test_probe_forwards_make_no_cache_and_equal_hfs_own_forward_bit_for_bit(caches):
    model, ids = hf_tiny.build("qwen3"), hf_tiny.tokens()
    assert model.config.use_cache  # HF's default: a plain call keeps a cache
    with torch.no_grad():
        own = model(ids)
        last = model(ids, logits_to_keep=1, use_cache=False).logits  # HF's own head on the last position only
    assert isinstance(own.past_key_values, cache_utils.DynamicCache) and len(caches) == 1
    ref = own.logits
    caches.clear()
    adapter = adapter_for(model)
    with torch.no_grad(), apply_ablation(model, None):  # what the runner enters for the empty ablation
        hidden = hidden_states(model, ids)  # the probes' decoder forward (token_loss, LongPPL, NIAH)
        assert torch.equal(adapter.logits(hidden), ref)
        out = model(ids)
        assert out.past_key_values is None and torch.equal(out.logits, ref)
        dec = adapter.decoder()(input_ids=ids)
        assert dec.past_key_values is None and torch.equal(dec.last_hidden_state, hidden)
        nll = token_nll(model, ids)
        assert torch.equal(nll, torch.nn.functional.cross_entropy(
            ref[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten(), reduction="none").view_as(nll))
    with torch.no_grad(), adapter.capture(names=("q", "k"), layers=[0, 1]) as cap:  # capture alone, no apply
        out = model(ids)
    assert out.past_key_values is None and torch.equal(out.logits, ref) and len(cap) == 4
    with torch.no_grad():
        assert torch.equal(own_logits(model, ids), ref) and torch.equal(own_logits(model, ids, last=1), last)
    assert caches == []
    with torch.no_grad():  # outside: the model is HF's again
        assert model(ids).past_key_values is not None and len(caches) == 1


def test_a_caller_that_asks_for_a_cache_still_gets_one(caches):
    model, ids = hf_tiny.build("qwen3"), hf_tiny.tokens(length=12)
    with torch.no_grad():
        ref = model(ids, use_cache=False).logits
        greedy = model.generate(ids, max_new_tokens=3, do_sample=False)
    adapter = adapter_for(model)
    dec = adapter.decoder()
    with torch.no_grad(), adapter.apply(adapter.native_plans()):
        past = model(ids[:, :-1], use_cache=True).past_key_values
        assert isinstance(past, cache_utils.DynamicCache) and past.get_seq_length() == 11
        step = model(ids[:, -1:], past_key_values=past)  # a decoding step: the caller's cache is kept
        assert step.past_key_values is past and past.get_seq_length() == 12
        torch.testing.assert_close(step.logits[:, -1], ref[:, -1], rtol=1e-5, atol=1e-5)
        assert dec(input_ids=ids, use_cache=True).past_key_values is not None
        assert dec(input_ids=ids, use_cache=None).past_key_values is None  # None: not asked, so no cache
        assert torch.equal(model.generate(ids, max_new_tokens=3, do_sample=False), greedy)  # passes use_cache


def _all_families():
    return ([pytest.param(hf_families.build, n, id=n) for n in sorted(hf_families.FAMILIES)]
            + [pytest.param(hf_hybrids.build, n, id=n) for n in sorted(hf_hybrids.HYBRIDS)])


@pytest.mark.parametrize("build, name", _all_families())
def test_every_family_inside_apply_returns_no_cache_and_hfs_logits(build, name):
    model, ids = build(name), hf_families.tokens(length=16)
    with torch.no_grad():
        ref = model(ids, use_cache=False).logits
        adapter = adapter_for(model)
        with adapter.apply(adapter.native_plans()):
            out = model(ids)
            dec = adapter.decoder()(input_ids=ids)
    assert out.past_key_values is None and dec.past_key_values is None
    assert torch.equal(out.logits, ref)
