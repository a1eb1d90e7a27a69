"""What makes a user's run cost more than its forwards (issue 11), with results unchanged:
token strings decoded once per distinct id, the haystack fitted with a few tokenisations."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.codec import HFCodec

ZOO_TOKENIZER = Path(__file__).resolve().parents[2] / "precomputed" / "zoo" / "swa64"


@pytest.fixture(scope="module")
def zoo_tokenizer():
    if not (ZOO_TOKENIZER / "tokenizer.json").is_file():
        pytest.skip("no bundled zoo tokenizer")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ZOO_TOKENIZER, local_files_only=True)


def test_token_strings_equal_one_decode_per_token_and_decode_each_id_once(zoo_tokenizer, monkeypatch):
    codec = HFCodec(zoo_tokenizer)
    text = "def f(x):\n    return x ** 2  # héllo, wörld — ✓ 123456 The pass key is 90210.\n" * 20
    ids = codec.encode(text).ids + [codec.eos_id, 0, 1]
    want = [zoo_tokenizer.decode([i]) for i in ids]
    calls = []
    real = zoo_tokenizer.decode
    monkeypatch.setattr(zoo_tokenizer, "decode", lambda x, *a, **k: calls.append(x) or real(x, *a, **k))
    assert codec.tokens(ids) == want
    assert len(calls) == len(set(ids)) < len(ids)
    assert codec.tokens(ids[:50]) == want[:50] and len(calls) == len(set(ids))  # cached per codec


def _fit_reference(count, build, length, hint=None, stream=None):
    """The fit by scanning n upwards: the largest n whose prompt fits (prompt tokens grow with n)."""
    if count(build(0)["prompt"]) > length:
        raise ValueError("too short")
    n = 0
    while count(build(n + 1)["prompt"]) <= length:
        n += 1
    return n


def _grid(task, count, lengths, haystack, docs, seed):
    from backend.data.synthetic import make_grid

    return [(s.prompt, s.n_tokens, s.answer_spans, s.needle_sentence_span, s.context_span, s.depth_actual)
            for s in make_grid(task, count, lengths, [0.0, 0.3, 1.0], 2, seed=seed, haystack=haystack, docs=docs)]


DOCS = ["Alpha beta gamma. Delta epsilon!\nZeta eta theta? " * 7 + "x" * 900 + ". Iota kappa.", "Lambda mu nu. " * 30]


@pytest.mark.parametrize("task", ["niah", "passkey"])
@pytest.mark.parametrize("haystack", ["repeat", "text"])
def test_fitted_haystacks_equal_the_scanning_reference(task, haystack, monkeypatch):
    """Character counts (one token per character) and a word-ish counter with uneven units."""
    from backend.data import synthetic

    def words(text: str) -> int:
        return len(text.split()) + text.count(".") + len(text) // 97

    for count, lengths in ((len, [420, 900]), (words, [70, 150, 333])):
        fast = _grid(task, count, lengths, haystack, DOCS, seed=5)
        with monkeypatch.context() as m:
            m.setattr(synthetic, "_fit", _fit_reference)
            slow = _grid(task, count, lengths, haystack, DOCS, seed=5)
        assert fast == slow


def test_fit_needs_few_tokenisations_of_the_whole_prompt(zoo_tokenizer):
    """A 4K-token NIAH prompt over a text haystack, 3 depths x 2 samples: 18 tokenisations of more than
    1000 tokens (the doubling search from 16 units it replaces needed 38, its last count repeated per
    sample); the result is the reference's."""
    from backend.data import synthetic

    codec = HFCodec(zoo_tokenizer)
    long_counts = []

    def count(text: str) -> int:
        n = codec.count(text)
        long_counts.append(n) if n > 1000 else None
        return n

    docs = [" ".join(f"Sentence {i} of the haystack, with words." for i in range(3000))]
    got = _grid("niah", count, [4096], "text", docs, seed=2)
    assert len(long_counts) <= 20, long_counts
    import unittest.mock as mock

    with mock.patch.object(synthetic, "_fit", _fit_reference):
        assert got == _grid("niah", codec.count, [4096], "text", docs, seed=2)


def _forwards(model):
    """A list that gets one entry per decoder forward of ``model``."""
    calls = []
    model.model.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_token_nll_repeats_come_from_the_cache_with_identical_values():
    import torch

    from backend.forward import hidden_states, nll_from_hidden, token_nll
    from models.adapters import adapter_for
    from models.apply import apply_ablation
    from models.tiny import tiny_model

    model = tiny_model("SSFM", seed=0)
    calls = _forwards(model)
    ids = torch.randint(0, 256, (1, 120), generator=torch.Generator().manual_seed(0))
    want = nll_from_hidden(model, hidden_states(model, ids), ids)
    n = len(calls)
    with apply_ablation(model, ""):
        a = token_nll(model, ids)
    with apply_ablation(model, ""):  # another run of the same document: no forward
        b = token_nll(model, ids)
    assert len(calls) == n + 1 and torch.equal(a, want) and torch.equal(b, want)
    b += 1  # a caller's tensor is its own
    with apply_ablation(model, ""):
        assert torch.equal(token_nll(model, ids), want)
    for change in ("ablation", "ids", "outside apply", "capture", "weights", "train"):
        before = len(calls)
        if change == "ablation":
            with apply_ablation(model, "window[swa]=4"):
                token_nll(model, ids)
        elif change == "ids":
            token_nll(model, ids.flip(-1))
        elif change == "outside apply":
            token_nll(model, ids)
            token_nll(model, ids)  # (this one is cached)
        elif change == "capture":
            with adapter_for(model).capture(names=("q",), layers=[0]) as cap:
                token_nll(model, ids)
            assert cap[(0, "q")] is not None
        elif change == "weights":
            with torch.no_grad():
                model.model.norm.weight.mul_(1.5)
            with apply_ablation(model, ""):
                assert not torch.equal(token_nll(model, ids), want)
        else:
            model.train()
            token_nll(model, ids)
            token_nll(model, ids)
            model.eval()
        assert len(calls) == before + (2 if change == "train" else 1), change
