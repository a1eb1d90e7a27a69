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
