"""Tokenizer wrapper the probes use: ids with character offsets, so key spans survive a tokenizer change.

``CharCodec`` serves the random ``tiny/<pattern>`` models (vocab 256: one id per character,
non-Latin-1 characters map to '?'). ``HFCodec`` wraps any fast HF tokenizer.

``encode(text, max_tokens)`` reads only what the first ``max_tokens`` tokens need: a prefix of the text,
grown until it holds ``PREFIX_MARGIN`` tokens more than asked (tokens that far before the cut do not
depend on it), so a huge document costs memory and time in ``max_tokens``, not in its length.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX_MARGIN = 16  # extra tokens a prefix must hold beyond max_tokens (the cut can only change the last few)
CHARS_PER_TOKEN = 8  # the first prefix tried: max_tokens * 8 characters, then 4x longer each try


@dataclass
class Encoded:
    ids: list[int]
    offsets: list[tuple[int, int]]  # character [start, end) of each token in the source text


class CharCodec:
    vocab_size = 256
    eos_id = 0

    def encode(self, text: str, max_tokens: int | None = None) -> Encoded:
        text = text if max_tokens is None else text[:max_tokens]
        ids = [ord(c) if ord(c) < 256 else ord("?") for c in text]
        return Encoded(ids, [(i, i + 1) for i in range(len(text))])

    def count(self, text: str) -> int:
        return len(text)

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)

    def tokens(self, ids: list[int]) -> list[str]:
        return [chr(i) for i in ids]


class HFCodec:
    def __init__(self, tokenizer) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("tokenizer: a fast (Rust) tokenizer is required for character offsets")
        self.tok = tokenizer
        self.vocab_size = len(tokenizer)
        self.eos_id = tokenizer.eos_token_id
        self._token_text: dict[int, str] = {}  # id -> decode([id]), filled by tokens()

    def encode(self, text: str, max_tokens: int | None = None) -> Encoded:
        if max_tokens is None:
            return self._encode(text)
        n = CHARS_PER_TOKEN * (max_tokens + PREFIX_MARGIN)
        while n < len(text):
            enc = self._encode(text[:n])
            if len(enc.ids) >= max_tokens + PREFIX_MARGIN:
                return Encoded(enc.ids[:max_tokens], enc.offsets[:max_tokens])
            n *= 4
        enc = self._encode(text)
        return Encoded(enc.ids[:max_tokens], enc.offsets[:max_tokens])

    def _encode(self, text: str) -> Encoded:
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return Encoded(list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]])

    def count(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def tokens(self, ids: list[int]) -> list[str]:
        """``decode([i])`` for each id; every distinct id is decoded once per codec (not once per token)."""
        known = self._token_text
        for i in dict.fromkeys(ids):
            if i not in known:
                known[i] = self.tok.decode([i])
        return [known[i] for i in ids]
