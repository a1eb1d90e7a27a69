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
