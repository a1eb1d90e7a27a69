"""Byte-level BPE tokenizer for the zoo (trained locally with `tokenizers`) and token-stream packing.

The tokenizer is saved HF-style (tokenizer.json, tokenizer_config.json, special_tokens_map.json) so
``AutoTokenizer.from_pretrained(dir)`` loads it offline. Byte-level BPE without prefix space is
lossless: ``decode(encode(text)) == text`` for any string.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.corpus import is_synthetic, read_jsonl
from zoo.envvar import scoped_env

EOS = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (EOS, PAD)  # ids 0 and 1
MODEL_MAX_LENGTH = 1 << 20


def train_bpe(texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2) -> Any:
    """Train a byte-level BPE (`tokenizers.Tokenizer`) with <|endoftext|>=0 and <|pad|>=1.

    Training runs single-threaded so the result is byte-identical across runs and machines.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if not 258 <= vocab_size <= 65535:
        raise ValueError(
            f"vocab_size: must be in [258, 65535] (256 bytes + 2 specials, uint16), got {vocab_size}"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    with scoped_env("TOKENIZERS_PARALLELISM", "false"):  # single-threaded: byte-identical results
        tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_hf(tok: Any, out_dir: Path | str) -> list[Path]:
    """Save a trained `tokenizers.Tokenizer` HF-style; returns the written files (sorted)."""
    from transformers import PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        clean_up_tokenization_spaces=False,
        model_max_length=MODEL_MAX_LENGTH,
    )
    saved = {Path(f) for f in hf.save_pretrained(str(out_dir))}
    # transformers 5 no longer writes special_tokens_map.json; write it for older loaders and readers.
    smap_path = out_dir / "special_tokens_map.json"
    smap = {"eos_token": EOS, "pad_token": PAD}
    smap_path.write_text(json.dumps(smap, indent=2) + "\n", encoding="utf-8")
    return sorted(saved | {smap_path})


def load_tokenizer(path: Path | str) -> Any:
    """The HF tokenizer saved in ``path`` (offline)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def backend_of(tokenizer: Any) -> Any:
    """The underlying `tokenizers.Tokenizer` of an HF fast tokenizer, a path to one, or itself."""
    if isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(tokenizer)
    return getattr(tokenizer, "backend_tokenizer", tokenizer)


def encode_many(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens added."""
    tok = backend_of(tokenizer)
    return [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=False)]


def pack_ids(
    docs: Sequence[tuple[list[int], bool]], seq_len: int, eos_id: int, pad_id: int
) -> tuple[list[int], dict]:
    """Pack token docs into a stream of rows of ``seq_len``, each doc followed by ``eos_id``.

    ``docs`` is a list of (ids, aligned). Unaligned docs flow across row boundaries. An aligned doc
    (with its EOS) that fits in one row is deferred to the start of the next row, so it is never split:
    at each row start at most one pending aligned doc is placed, and the unaligned flow continues right
    after it. Aligned docs still pending when the flow ends are placed at row starts after padding
    the current row with ``pad_id``. The last partial row is dropped.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len: must be >= 2, got {seq_len}")
    out: list[int] = []
    pending: deque[list[int]] = deque()
    stats = {"docs": 0, "aligned_docs": 0, "aligned_too_long": 0, "pad_tokens": 0}

    def place_pending_at_row_start() -> None:
        if pending and len(out) % seq_len == 0:
            out.extend(pending.popleft())

    for ids, aligned in docs:
        stats["docs"] += 1
        seq = list(ids) + [eos_id]
        if aligned and len(seq) <= seq_len:
            stats["aligned_docs"] += 1
            pending.append(seq)
            continue
        stats["aligned_too_long"] += int(aligned)
        pos = 0
        while pos < len(seq):
            place_pending_at_row_start()
            room = seq_len - len(out) % seq_len
            out.extend(seq[pos : pos + room])
            pos += room
    while pending:
        used = len(out) % seq_len
        if used:
            out.extend([pad_id] * (seq_len - used))
            stats["pad_tokens"] += seq_len - used
        out.extend(pending.popleft())
    n_rows = len(out) // seq_len
    stats.update(rows=n_rows, tokens=n_rows * seq_len, dropped_tokens=len(out) - n_rows * seq_len)
    return out[: n_rows * seq_len], stats


def pack_tokens(jsonl: Path | str, tokenizer: Any, seq_len: int, out_path: Path | str) -> dict:
    """Tokenize a corpus JSONL (plain or ``.gz``) and write a uint16 ``.npy`` stream of ``rows * seq_len`` tokens.

    Documents are separated by <|endoftext|> (see ``pack_ids``); synthetic retrieval documents are
    row-aligned so needle and query stay in one row. Read it as ``np.load(out).reshape(-1, seq_len)``.
    Also writes ``out_path`` with suffix ``.json`` holding the stats, which are returned.
    """
    tok = backend_of(tokenizer)
    eos_id, pad_id = tok.token_to_id(EOS), tok.token_to_id(PAD)
    if eos_id is None or pad_id is None:
        raise ValueError(f"tokenizer: must define {EOS} and {PAD}")
    if tok.get_vocab_size() > 65536:
        raise ValueError(f"tokenizer: vocab size {tok.get_vocab_size()} does not fit uint16")
    docs = list(read_jsonl(jsonl))
    ids = encode_many(tok, [d.text for d in docs])
    flat, stats = pack_ids(
        [(i, is_synthetic(d.source)) for i, d in zip(ids, docs, strict=True)], seq_len, eos_id, pad_id
    )
    out_path = Path(out_path)
    if out_path.suffix != ".npy":
        raise ValueError(f"out_path: must end with .npy, got {out_path}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "wb") as f:
        np.save(f, np.asarray(flat, dtype=np.uint16))
    stats = {"seq_len": seq_len, "eos_id": eos_id, "pad_id": pad_id, **stats}
    out_path.with_suffix(".json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats
