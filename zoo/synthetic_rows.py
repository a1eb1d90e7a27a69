"""Fresh synthetic retrieval rows for training: drawn anew every epoch from a seed, so retrieval is
learned rather than memorised.

Four document kinds, chosen uniformly per document:

- ``kv``: the corpus's key-value table (``key_4821 = 93017`` lines) followed by queries
  ``# what is the value of key_4821? 93017`` for a random quarter of its keys (distinct keys, random
  order: multi-query associative recall, so every query line is a retrieval target; one final query
  per document gave too sparse a signal for retrieval to form in the first zoo runs);
- ``passkey``: training-split code with ``# pass key: 48213`` at a random line depth and the query
  line ``# what is the pass key? 48213`` (the corpus's passkey format);
- ``niah_text`` / ``passkey_text``: the NIAH / passkey *prompt templates* of
  :mod:`backend.data.synthetic` (preamble, needle sentence, query) on a code haystack, followed by
  `` <answer>\\n`` (the text the probes score). Keys are word pairs taken from the training code
  (never the probes' adjective-noun list); haystacks are training code, while the probes use
  held-out documents.

In every document each answer occurs exactly once before its query. Documents are fitted to a token
budget with one or two tokenizer calls (not a binary search) and packed, whole, into rows of
``seq_len`` tokens: each followed by <|endoftext|>, the row's tail padded with <|pad|>. Document
lengths are drawn uniformly between ``min_tokens`` and the room left in the row, so few documents are
near ``seq_len`` long; ``long_frac`` > 0 makes that fraction of rows *long rows*, whose documents each
take all the room left (one document of ~``seq_len`` tokens, the needle up to a whole context back:
what passkey retrieval at 4K needs). ``long_frac = 0`` (the v1 zoo) draws exactly what it always drew.

The ``passkey_text`` documents are the niah probe's passkey prompts followed by their answer: the
probe's prompt is ``PASSKEY_PREAMBLE + haystack-with-needle + "\n" + PASSKEY_QUERY`` and it scores the
first word of the greedy continuation, here `` <key>`` (tests/zoo check that the prompt tokens are a
prefix of the training document's tokens).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from backend.data.synthetic import (
    NIAH_NEEDLE,
    NIAH_PREAMBLE,
    NIAH_QUERY,
    PASSKEY_NEEDLE,
    PASSKEY_PREAMBLE,
    PASSKEY_QUERY,
    split_units,
)
from zoo.corpus import KV_QUERY
from zoo.corpus import PASSKEY_NEEDLE as CODE_PASSKEY_NEEDLE
from zoo.corpus import PASSKEY_QUERY as CODE_PASSKEY_QUERY

KINDS = ("kv", "passkey", "niah_text", "passkey_text")
KV_QUERY_EVERY = 4  # kv documents query one key in four
CHARS_PER_TOKEN = 3.9  # stdlib code with the zoo tokenizer (9.17M chars / 2.32M tokens)
_WORD = re.compile(r"[a-z]{4,9}")


class SyntheticMaker:
    """Builds synthetic documents and rows with one tokenizer (a `tokenizers.Tokenizer`).

    ``sources``: natural training texts (filler and haystacks; key words are drawn from them).
    """

    def __init__(
        self,
        tokenizer,
        sources: Sequence[str],
        seq_len: int,
        eos_id: int,
        pad_id: int,
        min_tokens: int = 256,
        kinds: Sequence[str] = KINDS,
        long_frac: float = 0.0,
    ) -> None:
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise ValueError(f"kinds: {bad or 'empty'} not allowed; allowed: {list(KINDS)}")
        if not sources:
            raise ValueError("sources: need at least one natural training text")
        if not 16 <= min_tokens < seq_len:
            raise ValueError(f"min_tokens: must be in [16, seq_len={seq_len}), got {min_tokens}")
        if not 0 <= long_frac <= 1:
            raise ValueError(f"long_frac: must be in [0, 1], got {long_frac}")
        self.long_frac = long_frac
        self.tok, self.seq_len, self.eos_id, self.pad_id = tokenizer, seq_len, eos_id, pad_id
        self.min_tokens, self.kinds = min_tokens, tuple(kinds)
        self.sources = [s for s in sources if s.strip()]
        self.words = sorted({w for s in self.sources[:200] for w in _WORD.findall(s)}) or ["alpha", "beta"]

    # ------------------------------------------------------------------ tokens
    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def _fit(self, build: Callable[[int], str], n_tokens: int, n_max: int, n_guess: int) -> list[int] | None:
        """ids of ``build(n)`` for an n in [0, n_max] with at most ``n_tokens`` tokens, aiming close to
        it: start at ``n_guess``, rescale by the measured tokens per unit (a few encodes at most)."""
        n = max(0, min(n_max, n_guess))
        best: list[int] | None = None
        for _ in range(6):
            ids = self.encode(build(n))
            if len(ids) <= n_tokens:
                best = ids if best is None or len(ids) > len(best) else best
                if len(ids) >= 0.9 * n_tokens or n >= n_max:
                    return best
                grow = min(n_max, int(n * n_tokens / max(1, len(ids)) * 0.97))
                if grow <= n:
                    return best
                n = grow
            else:
                if n == 0:
                    return best
                n = min(n - 1, int(n * n_tokens / len(ids) * 0.97))
        return best

    def _code_lines(self, rng: random.Random, n_chars: int) -> list[str]:
        """Consecutive source lines (wrapping on to the next text) totalling >= n_chars characters."""
        i = rng.randrange(len(self.sources))
        lines = self.sources[i].splitlines(keepends=True)
        out = lines[rng.randrange(len(lines)) :]
        total = sum(map(len, out))
        while total < n_chars:
            i = (i + 1) % len(self.sources)
            more = self.sources[i].splitlines(keepends=True)
            out.extend(more)
            total += sum(map(len, more))
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        return out

    @staticmethod
    def _unique_number(rng: random.Random, lo: int, hi: int, haystack: str) -> str:
        for _ in range(1000):
            v = str(rng.randrange(lo, hi))
            if v not in haystack:
                return v
        raise ValueError("sources: could not draw a needle value absent from the haystack")

    # ------------------------------------------------------------------ documents
    def doc(self, kind: str, rng: random.Random, n_tokens: int) -> list[int] | None:
        """Token ids of one ``kind`` document with at most ``n_tokens`` tokens (None if none fits)."""
        if kind == "kv":  # multi-query: every query line is a retrieval target (dense supervision)
            n_max = max(2, min(9000, n_tokens // 4))
            keys = rng.sample(range(1000, 10000), n_max)
            values = rng.sample(range(10000, 100000), n_max)
            order = rng.sample(range(n_max), n_max)

            def build(n: int) -> str:
                n = max(1, n)
                lines = [f"key_{k} = {v}\n" for k, v in zip(keys[:n], values[:n], strict=True)]
                asked = [i for i in order if i < n][: max(1, n // KV_QUERY_EVERY)]
                queries = [KV_QUERY.format(key=f"key_{keys[i]}") + f"{values[i]}\n" for i in asked]
                return "# key-value table\n" + "".join(lines) + "".join(queries)

            return self._fit(build, n_tokens, n_max, int(n_tokens / 12.0))
        if kind == "passkey":
            pool = self._code_lines(rng, int(n_tokens * CHARS_PER_TOKEN * 1.3))
            key = self._unique_number(rng, 10000, 100000, "".join(pool))
            depth = rng.random()

            def build(n: int) -> str:
                at = int(depth * n)
                body = pool[:at] + [CODE_PASSKEY_NEEDLE.format(key=key)] + pool[at:n]
                return "".join(body) + CODE_PASSKEY_QUERY + f"{key}\n"

            mean_line = max(1.0, sum(map(len, pool)) / len(pool))
            return self._fit(build, n_tokens, len(pool), int(n_tokens * CHARS_PER_TOKEN / mean_line))
        if kind in ("niah_text", "passkey_text"):
            text = "".join(self._code_lines(rng, int(n_tokens * CHARS_PER_TOKEN * 1.3)))
            units = split_units(text)
            niah = kind == "niah_text"
            value = (
                self._unique_number(rng, 1_000_000, 10_000_000, text)
                if niah
                else self._unique_number(rng, 10_000, 100_000, text)
            )
            key = f"{rng.choice(self.words)}-{rng.choice(self.words)}"
            preamble = NIAH_PREAMBLE if niah else PASSKEY_PREAMBLE
            needle = NIAH_NEEDLE.format(key=key, value=value) if niah else PASSKEY_NEEDLE.format(key=value)
            query = NIAH_QUERY.format(key=key) if niah else PASSKEY_QUERY
            depth = rng.random()

            def build(n: int) -> str:
                cut = round(depth * n)
                before, after = "".join(units[:cut]).strip(), "".join(units[cut:n]).strip()
                before = before + " " if before else ""
                after = " " + after if after else ""
                return preamble + before + needle + after + "\n" + query + " " + value + "\n"

            mean_unit = max(1.0, len(text) / max(1, len(units)))
            return self._fit(build, n_tokens, len(units), int(n_tokens * CHARS_PER_TOKEN / mean_unit))
        raise ValueError(f"kind: {kind!r} is not one of {list(KINDS)}")

    def row(self, rng: random.Random) -> np.ndarray:
        """One row of ``seq_len`` tokens: whole documents, each + EOS, then PAD up to ``seq_len``."""
        out: list[int] = []
        long = self.long_frac > 0 and rng.random() < self.long_frac  # no draw at 0: v1 rows unchanged
        while True:
            room = self.seq_len - len(out) - 1  # minus the EOS
            if room < self.min_tokens:
                break
            target = room if long else rng.randint(self.min_tokens, room)
            if room - target < self.min_tokens + 1:
                target = room  # fill the rest rather than leave a gap too small for another document
            ids = self.doc(rng.choice(self.kinds), rng, target) or self.doc("kv", rng, target)
            if not ids:
                break
            out.extend(ids)
            out.append(self.eos_id)
        out.extend([self.pad_id] * (self.seq_len - len(out)))
        return np.asarray(out, dtype=np.uint16)

    def rows(self, n_rows: int, seed: int, part: int | None = None) -> np.ndarray:
        """``n_rows`` rows [n_rows, seq_len] uint16, a pure function of ``seed`` (and ``part``: one of
        several independently seeded parts of an epoch)."""
        rng = random.Random(f"zoo-synthetic:{seed}" if part is None else f"zoo-synthetic:{seed}:{part}")
        if n_rows == 0:
            return np.zeros((0, self.seq_len), dtype=np.uint16)
        return np.stack([self.row(rng) for _ in range(n_rows)])


# ---------------------------------------------------------------------- worker-process plumbing
_WORKER: SyntheticMaker | None = None


def init_worker(
    tokenizer_json: str,
    train_jsonl: str,
    seq_len: int,
    eos_id: int,
    pad_id: int,
    min_tokens: int,
    max_sources: int | None,
    long_frac: float = 0.0,
) -> None:
    """Process-pool initializer: build this process's SyntheticMaker once."""
    global _WORKER
    _WORKER = maker_from_files(
        Path(tokenizer_json), Path(train_jsonl), seq_len, eos_id, pad_id, min_tokens, max_sources, long_frac
    )


def worker_rows(n_rows: int, seed: int, part: int | None = None) -> np.ndarray:
    """Rows from the process's maker (see :func:`init_worker`)."""
    if _WORKER is None:
        raise RuntimeError("worker_rows: init_worker was not run in this process")
    return _WORKER.rows(n_rows, seed, part)


def natural_texts(train_jsonl: Path, max_docs: int | None = None) -> list[str]:
    """Texts of the natural (stdlib and package) training documents of a ``train.jsonl[.gz]``, in file
    order."""
    from zoo.corpus import is_synthetic, read_jsonl

    texts = [d.text for d in read_jsonl(train_jsonl) if not is_synthetic(d.source)]
    return texts[:max_docs] if max_docs else texts


def maker_from_files(
    tokenizer_json: Path,
    train_jsonl: Path,
    seq_len: int,
    eos_id: int,
    pad_id: int,
    min_tokens: int,
    max_sources: int | None = None,
    long_frac: float = 0.0,
) -> SyntheticMaker:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    texts = natural_texts(train_jsonl, max_sources)
    return SyntheticMaker(tok, texts, seq_len, eos_id, pad_id, min_tokens, long_frac=long_frac)
