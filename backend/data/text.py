"""Text datasets from local files: .txt (one document per file) and .jsonl (one document per line).

``load_text_dataset(path, n_docs, seed, min_chars)`` reads a file or a folder (recursively, sorted by
relative path, hidden entries skipped), keeps documents with at least ``min_chars`` characters and, when
``n_docs`` is given, takes the first ``n_docs`` of a permutation seeded by ``seed``, so a smaller sample
is always a prefix of a larger one. ``fingerprint`` hashes the selected documents and the parameters.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUFFIXES = (".txt", ".jsonl")


class DatasetError(ValueError):
    """A dataset path cannot be used; the message names the path (and line) and what is expected."""


@dataclass(frozen=True)
class Doc:
    """One document: ``id`` is the .txt file's relative path, or the .jsonl record's "id" field when it
    is a string, else ``<relative path>:<line number>``."""

    id: str
    text: str


def list_files(path: str | Path) -> list[Path]:
    """The .txt/.jsonl files of ``path`` (a file, or a folder searched recursively), sorted."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"data: path {str(p)!r} does not exist")
    if p.is_file():
        if p.suffix.lower() not in SUFFIXES:
            raise DatasetError(f"data: {str(p)!r} has suffix {p.suffix!r}; allowed: {', '.join(SUFFIXES)}")
        return [p]
    files = [
        f for f in p.rglob("*")
        if f.is_file() and f.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in f.relative_to(p).parts)
    ]
    return sorted(files, key=lambda f: f.relative_to(p).as_posix())


def _read_jsonl(f: Path, rel: str) -> list[Doc]:
    docs = []
    with f.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise DatasetError(f"data: {rel}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise DatasetError(f'data: {rel}:{lineno}: each line must be a JSON object with a string '
                                   f'"text" field')
            rid = rec.get("id")
            docs.append(Doc(id=rid if isinstance(rid, str) else f"{rel}:{lineno}", text=rec["text"]))
    return docs


def read_docs(path: str | Path) -> list[Doc]:
    """All documents under ``path`` in listing order (no filtering, no sampling)."""
    p = Path(path).expanduser()
    base = p.parent if p.is_file() else p
    docs: list[Doc] = []
    for f in list_files(p):
        rel = f.relative_to(base).as_posix()
        if f.suffix.lower() == ".jsonl":
            docs.extend(_read_jsonl(f, rel))
        else:
            docs.append(Doc(id=rel, text=f.read_text(encoding="utf-8", errors="replace")))
    return docs


def sample_docs(docs: Sequence[Doc], n_docs: int | None, seed: int = 0) -> list[Doc]:
    """All ``docs`` in order when ``n_docs`` is None, else the first ``n_docs`` of a seeded permutation."""
    if n_docs is None:
        return list(docs)
    if isinstance(n_docs, bool) or not isinstance(n_docs, int) or n_docs < 1:
        raise DatasetError(f"n_docs: must be a positive integer or None, got {n_docs!r}")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    return [docs[i] for i in order[:n_docs]]


def load_text_dataset(path: str | Path, n_docs: int | None = None, seed: int = 0,
                      min_chars: int = 0) -> list[Doc]:
    """Documents of a .txt/.jsonl file or folder: those with >= ``min_chars`` characters, sampled.

    Raises DatasetError when the path is missing, has no .txt/.jsonl files, a .jsonl line lacks a
    string "text" field, or no document is left after the ``min_chars`` filter.
    """
    if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 0:
        raise DatasetError(f"min_chars: must be a non-negative integer, got {min_chars!r}")
    if not list_files(path):
        raise DatasetError(f"data: no {' or '.join(SUFFIXES)} files under {str(path)!r}")
    all_docs = read_docs(path)
    docs = [d for d in all_docs if len(d.text) >= min_chars]
    if not docs:
        raise DatasetError(f"data: no documents in {str(path)!r}"
                           + (f" with at least {min_chars} characters ({len(all_docs)} shorter)"
                              if all_docs else ""))
    return sample_docs(docs, n_docs, seed)


def fingerprint(docs: Sequence[Doc], params: Mapping[str, Any] | None = None) -> str:
    """sha256 (hex) of the documents' ids and texts, in order, and of ``params`` (canonical JSON)."""
    h = hashlib.sha256()
    h.update(json.dumps(dict(params or {}), sort_keys=True, separators=(",", ":"), default=str).encode())
    for d in docs:
        for part in (d.id, d.text):
            b = part.encode("utf-8", errors="surrogatepass")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    return h.hexdigest()
