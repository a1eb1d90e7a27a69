"""Training data for the zoo trainer: fixed-length rows in memory, epochs mixing natural and fresh
synthetic rows, and a resumable batch stream.

- Natural rows: the corpus's natural training documents (``train.jsonl.gz`` or ``train.jsonl``; sources
  "stdlib" and "pypi/<name>"), tokenized once per run with the saved tokenizer and packed into rows of
  ``seq_len`` tokens separated by <|endoftext|> (:func:`zoo.tokenizer.pack_ids`); cached as
  ``.npy`` keyed by the inputs' hashes. A site corpus (:mod:`zoo.site_corpus`) holds that token stream
  already (``train_tokens.npy``): it is memory-mapped and checked against its manifest's sha256.
  ``Corpus.sha256`` is the sha256 of the stream (uint16 little-endian, every document + EOS) either way:
  a site corpus built with no extra source has its base's hash. ``TrainArgs.corpus_sha256`` (a round's
  plan) must equal it (:func:`check_corpus`).
  The corpus's own synthetic documents are left out: fresh ones replace them every epoch.
- Synthetic rows: ``round(n_natural * frac / (1 - frac))`` rows per epoch from
  :class:`zoo.synthetic_rows.SyntheticMaker` with seed ``(seed, epoch)`` (and its ``long_frac``) —
  built in worker processes ahead of time when ``workers > 0`` (``prefetch`` epochs ahead, default one
  per worker); every epoch's rows are a pure function of the seed (and of ``parts``: with ``parts`` > 1
  an epoch is made of that many independently seeded parts, built in parallel; 1 = v1's rows).
  Making them costs about 40 ms of one CPU core per 4096-token row (measured on the 2-core development
  machine: 1,200 rows in 51 s), while a compiled 5M-parameter model consumes an epoch of ~4,800 rows
  in ~6 s on an H200: long runs need many workers (:func:`default_workers`) and parts, or the first
  epoch alone stalls training for ~50 s.
- Epoch order: a permutation of natural + synthetic rows seeded by ``(seed, epoch)``; a batch is
  ``batch_size`` consecutive rows of it; the last incomplete batch of an epoch is dropped.
Labels are the inputs with <|pad|> positions set to -100 (the model shifts them itself).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zoo import synthetic_rows
from zoo.corpus import read_jsonl, split_path
from zoo.site_corpus import is_site_corpus
from zoo.tokenizer import EOS, PAD, backend_of, encode_many, pack_ids


@dataclass
class Corpus:
    """Everything the trainer reads from a ``build-data`` directory, in memory."""

    data_dir: Path
    seq_len: int
    rows: np.ndarray  # [n, seq_len] uint16 natural training rows
    val_rows: np.ndarray  # [m, seq_len] uint16 rows of the validation split
    val_texts: list[str]  # held-out texts (haystacks of the retrieval-head evaluation)
    eos_id: int
    pad_id: int
    max_docs: int | None = None
    sha256: str = ""  # of the natural training token stream (see the module docstring)
    natural_tokens: int = 0  # its length (before the last partial row is dropped)

    @property
    def tokenizer_dir(self) -> Path:
        return self.data_dir / "tokenizer"


def _hash_files(*paths: Path, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _pack(texts: list[str], tok, seq_len: int, eos_id: int, pad_id: int) -> tuple[np.ndarray, str, int]:
    """Rows of the texts' token stream, its sha256 and its length."""
    ids = encode_many(tok, texts)
    h, eos = hashlib.sha256(), np.asarray([eos_id], dtype="<u2").tobytes()
    for i in ids:
        h.update(np.asarray(i, dtype="<u2").tobytes())
        h.update(eos)
    flat, _ = pack_ids([(i, False) for i in ids], seq_len, eos_id, pad_id)
    n = sum(len(i) + 1 for i in ids)
    return np.asarray(flat, dtype=np.uint16).reshape(-1, seq_len), h.hexdigest(), n


def _site_rows(data_dir: Path, seq_len: int, max_docs: int | None) -> tuple[np.ndarray, str, int]:
    """Rows (a memory map) of a site corpus's token stream, its sha256 and length; ValueError when the
    file does not match its manifest."""
    from zoo.site_corpus import DOC_ENDS_FILE, TOKENS_FILE

    meta = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))["train_tokens"]
    stream = np.load(data_dir / TOKENS_FILE, mmap_mode="r")
    if stream.dtype != np.dtype("<u2") or stream.ndim != 1 or len(stream) != meta["tokens"]:
        raise ValueError(f"data: {data_dir / TOKENS_FILE} is not the {meta['tokens']} uint16 tokens its manifest "
                         "records; rebuild it")
    if max_docs:
        ends = np.load(data_dir / DOC_ENDS_FILE)
        stream = stream[: int(ends[min(max_docs, len(ends)) - 1])] if len(ends) else stream[:0]
    h = hashlib.sha256()
    for i in range(0, len(stream), 1 << 26):
        h.update(stream[i : i + (1 << 26)])
    if not max_docs and h.hexdigest() != meta["sha256"]:
        raise ValueError(f"data: {data_dir / TOKENS_FILE} does not match the sha256 its manifest records; rebuild it")
    n = len(stream) // seq_len
    return stream[: n * seq_len].reshape(n, seq_len), h.hexdigest(), len(stream)


def check_corpus(corpus: Corpus, sha256: str | None) -> None:
    """ValueError (one line) when a plan names a corpus (``sha256``) other than ``corpus``."""
    if sha256 and sha256 != corpus.sha256:
        raise ValueError(
            f"corpus: {corpus.data_dir} has token-stream sha256 {corpus.sha256}, but the plan names {sha256}; "
            "train on the corpus the plan names (rebuild it the same way) or drop --corpus-sha256"
        )


def load_corpus(
    data_dir: Path | str, seq_len: int, cache_dir: Path | str | None = None, max_docs: int | None = None
) -> Corpus:
    """Tokenize and pack ``data_dir``'s train and val splits (cached under ``cache_dir`` if given).

    ``max_docs`` keeps only the first N natural training documents (smoke runs and tests).
    """
    data_dir = Path(data_dir)
    train_file, val_file = split_path(data_dir, "train"), split_path(data_dir, "val")
    if not (data_dir / "tokenizer/tokenizer.json").is_file():
        raise ValueError(
            f"data: {data_dir} has no tokenizer/tokenizer.json; "
            "build it with `python -m zoo build-data`"
        )
    tok = backend_of(data_dir / "tokenizer")
    eos_id, pad_id = tok.token_to_id(EOS), tok.token_to_id(PAD)
    val_texts = [d.text for d in read_jsonl(val_file)]
    if is_site_corpus(data_dir):
        rows, sha, n_tokens = _site_rows(data_dir, seq_len, max_docs)
        val_rows = _pack(val_texts, tok, seq_len, eos_id, pad_id)[0]
        return _checked(Corpus(data_dir, seq_len, rows, val_rows, val_texts, eos_id, pad_id, max_docs, sha, n_tokens))
    key = _hash_files(
        train_file,
        val_file,
        data_dir / "tokenizer" / "tokenizer.json",
        extra=f"{seq_len}:{max_docs}:sha",
    )
    cache = Path(cache_dir) / f"rows-{key}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        z = np.load(cache)
        rows, val_rows, sha, n_tokens = z["rows"], z["val_rows"], str(z["sha256"]), int(z["natural_tokens"])
    else:
        texts = synthetic_rows.natural_texts(train_file, max_docs)
        rows, sha, n_tokens = _pack(texts, tok, seq_len, eos_id, pad_id)
        val_rows = _pack(val_texts, tok, seq_len, eos_id, pad_id)[0]
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, rows=rows, val_rows=val_rows, sha256=np.asarray(sha), natural_tokens=np.asarray(n_tokens))
            tmp.replace(cache)
    return _checked(Corpus(data_dir, seq_len, rows, val_rows, val_texts, eos_id, pad_id, max_docs, sha, n_tokens))


def _checked(corpus: Corpus) -> Corpus:
    if len(corpus.rows) == 0:
        raise ValueError(f"data: fewer than seq_len={corpus.seq_len} natural training tokens in {corpus.data_dir}")
    return corpus


def n_synthetic_rows(n_natural: int, frac: float) -> int:
    """Synthetic rows per epoch so that they are ``frac`` of all rows."""
    if not 0 <= frac < 1:
        raise ValueError(f"synthetic_frac: must be in [0, 1), got {frac}")
    return round(n_natural * frac / (1 - frac))


class SyntheticSource:
    """Synthetic rows per epoch, computed once per (epoch) and cached; ``workers`` > 0 builds the
    next ``prefetch`` epochs in background processes (spawned: safe after CUDA init)."""

    def __init__(
        self,
        corpus: Corpus,
        frac: float,
        seed: int,
        workers: int = 0,
        prefetch: int | None = None,
        min_tokens: int | None = None,
        long_frac: float = 0.0,
        parts: int = 1,
    ) -> None:
        if parts < 1:
            raise ValueError(f"synthetic_parts: must be >= 1, got {parts}")
        self.n_rows = n_synthetic_rows(len(corpus.rows), frac)
        self.seed, self.seq_len, self.parts = seed, corpus.seq_len, parts
        self.prefetch = prefetch if prefetch is not None else max(3, workers)
        self.min_tokens = min_tokens or min(256, corpus.seq_len // 4)
        self._cache: dict[int, np.ndarray] = {}
        self._futures: dict[int, list[cf.Future]] = {}
        args = (
            str(corpus.tokenizer_dir / "tokenizer.json"),
            str(split_path(corpus.data_dir, "train")),
            corpus.seq_len,
            corpus.eos_id,
            corpus.pad_id,
            self.min_tokens,
            corpus.max_docs,
            long_frac,
        )
        self._pool = None
        self._maker = None
        if workers > 0 and self.n_rows > 0:
            self._pool = cf.ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=synthetic_rows.init_worker,
                initargs=args,
            )
        else:
            self._args = args

    def epoch_seed(self, epoch: int) -> int:
        return self.seed * 1_000_003 + epoch

    def _part_sizes(self) -> list[int]:
        q, r = divmod(self.n_rows, self.parts)
        return [q + (i < r) for i in range(self.parts)]

    def _submit(self, epoch: int) -> None:
        if self._pool is not None and epoch not in self._cache and epoch not in self._futures:
            seed = self.epoch_seed(epoch)
            self._futures[epoch] = [
                self._pool.submit(synthetic_rows.worker_rows, n, seed, None if self.parts == 1 else i)
                for i, n in enumerate(self._part_sizes())
            ]

    def get(self, epoch: int) -> np.ndarray:
        """The synthetic rows of ``epoch`` [n_rows, seq_len]; the same for every caller and run."""
        for e in range(epoch, epoch + self.prefetch + 1):
            self._submit(e)
        if self.n_rows == 0:
            return np.zeros((0, self.seq_len), dtype=np.uint16)
        if epoch not in self._cache:
            futs = self._futures.pop(epoch, None)
            if futs is not None:
                self._cache[epoch] = np.concatenate([f.result() for f in futs])
            else:
                if self._maker is None:
                    a = self._args
                    self._maker = synthetic_rows.maker_from_files(Path(a[0]), Path(a[1]), *a[2:])
                seed = self.epoch_seed(epoch)
                self._cache[epoch] = np.concatenate([
                    self._maker.rows(n, seed, None if self.parts == 1 else i) for i, n in enumerate(self._part_sizes())
                ])
        return self._cache[epoch]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def default_workers(device_type: str) -> int:
    """Synthetic-row processes for a device: none on CPU; on CUDA all cores but four (at most 12)."""
    import os

    if device_type != "cuda":
        return 0
    return max(3, min(12, (os.cpu_count() or 4) - 4))


class BatchStream:
    """Batches of ``batch_size`` rows; its position (epoch, index) is its whole state."""

    def __init__(self, corpus: Corpus, synthetic: SyntheticSource, batch_size: int, seed: int) -> None:
        n = len(corpus.rows) + synthetic.n_rows
        if batch_size > n:
            raise ValueError(f"batch_size: {batch_size} exceeds the {n} rows of an epoch")
        self.corpus, self.synthetic, self.batch_size, self.seed = corpus, synthetic, batch_size, seed
        self.epoch, self.index = 0, 0
        self._rows: np.ndarray | None = None
        self._rows_epoch = -1

    def _epoch_rows(self) -> np.ndarray:
        if self._rows_epoch != self.epoch:
            rows = np.concatenate([self.corpus.rows, self.synthetic.get(self.epoch)])
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(rows))
            self._rows, self._rows_epoch = rows[order], self.epoch
        return self._rows

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, labels), both int64 [batch_size, seq_len] on the CPU."""
        rows = self._epoch_rows()
        if self.index + self.batch_size > len(rows):
            self.epoch, self.index = self.epoch + 1, 0
            rows = self._epoch_rows()
        batch = torch.from_numpy(rows[self.index : self.index + self.batch_size].astype(np.int64))
        self.index += self.batch_size
        labels = batch.masked_fill(batch == self.corpus.pad_id, -100)
        return batch, labels

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


def corpus_summary(corpus: Corpus, synthetic: SyntheticSource) -> dict:
    return {
        "natural_rows": int(len(corpus.rows)),
        "synthetic_rows_per_epoch": int(synthetic.n_rows),
        "val_rows": int(len(corpus.val_rows)),
        "seq_len": corpus.seq_len,
        "tokens_per_epoch": int((len(corpus.rows) + synthetic.n_rows) * corpus.seq_len),
        "natural_source": "stdlib + pypi packages (manifest.json lists them)",
        "natural_tokens": corpus.natural_tokens,
        "corpus_sha256": corpus.sha256,
        "corpus_kind": "site" if is_site_corpus(corpus.data_dir) else "bundled",
    }
