"""Text datasets from local files: .txt (one document per file) and .jsonl (one document per line).

``load_text_dataset(path, n_docs, seed, min_chars)`` reads a file or a folder (recursively, sorted by
relative path, hidden entries skipped), keeps documents with at least ``min_chars`` characters and, when
``n_docs`` is given, takes the first ``n_docs`` of a permutation seeded by ``seed``, so a smaller sample
is always a prefix of a larger one. ``fingerprint`` hashes the selected documents and the parameters.

Only what a run needs is read: without ``min_chars``, documents are first located (a .txt file; the
byte offset of a non-blank .jsonl line), the sample is drawn over the locations, and only the sampled
documents are read and parsed. ``root`` confines a dataset: every file must lie inside it once
symlinks are resolved. A sampled document that is empty is an error, not an empty run.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.paths import inside

SUFFIXES = (".txt", ".jsonl")


class DatasetError(ValueError):
    """A dataset path cannot be used; the message names the path (and line) and what is expected."""


@dataclass(frozen=True)
class Doc:
    """One document: ``id`` is the .txt file's relative path, or the .jsonl record's "id" field when it
    is a string, else ``<relative path>:<line number>``."""

    id: str
    text: str


def list_files(path: str | Path, root: Path | None = None) -> list[Path]:
    """The .txt/.jsonl files of ``path`` (a file, or a folder searched recursively), sorted; with ``root``,
    a file whose real path (symlinks resolved) is outside ``root`` is an error."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"data: path {str(p)!r} does not exist")
    if p.is_file():
        if p.suffix.lower() not in SUFFIXES:
            raise DatasetError(f"data: {str(p)!r} has suffix {p.suffix!r}; allowed: {', '.join(SUFFIXES)}")
        if root is not None and inside(p, root) is None:
            raise DatasetError(f"data: {p.name!r} links outside the allowed data directory")
        return [p]
    files = [
        f for f in p.rglob("*")
        if f.is_file() and f.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in f.relative_to(p).parts)
    ]
    files = sorted(files, key=lambda f: f.relative_to(p).as_posix())
    if root is not None:
        for f in files:
            if inside(f, root) is None:
                raise DatasetError(f"data: {f.relative_to(p).as_posix()!r} links outside the allowed data directory")
    return files


def _jsonl_doc(line: str, rel: str, lineno: int) -> Doc:
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError) as e:
        raise DatasetError(f"data: {rel}:{lineno}: not valid JSON ({getattr(e, 'msg', 'nested too deeply')})") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
        raise DatasetError(f'data: {rel}:{lineno}: each line must be a JSON object with a string '
                           f'"text" field')
    rid = rec.get("id")
    return Doc(id=rid if isinstance(rid, str) else f"{rel}:{lineno}", text=rec["text"])


def _read_jsonl(f: Path, rel: str) -> list[Doc]:
    with f.open(encoding="utf-8", errors="replace") as fh:
        return [_jsonl_doc(line, rel, lineno) for lineno, line in enumerate(fh, 1) if line.strip()]


@dataclass(frozen=True)
class _Where:
    """Where one document is: a .txt file (``offset`` None) or one line of a .jsonl file."""

    file: Path
    rel: str
    offset: int | None = None
    lineno: int = 0

    def read(self) -> Doc:
        if self.offset is None:
            return Doc(id=self.rel, text=self.file.read_text(encoding="utf-8", errors="replace"))
        with self.file.open("rb") as fh:
            fh.seek(self.offset)
            line = fh.readline().decode("utf-8", errors="replace")
        return _jsonl_doc(line, self.rel, self.lineno)


def _locate(path: str | Path, root: Path | None = None) -> list[_Where]:
    """Every document under ``path`` in listing order, located but not read."""
    p = Path(path).expanduser()
    base = p.parent if p.is_file() else p
    found: list[_Where] = []
    for f in list_files(p, root):
        rel = f.relative_to(base).as_posix()
        if f.suffix.lower() != ".jsonl":
            found.append(_Where(f, rel))
            continue
        offset = 0
        with f.open("rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    found.append(_Where(f, rel, offset, lineno))
                offset += len(line)
    return found


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


def sample_docs(docs: Sequence[Any], n_docs: int | None, seed: int = 0) -> list[Any]:
    """All ``docs`` in order when ``n_docs`` is None, else the first ``n_docs`` of a seeded permutation."""
    if n_docs is None:
        return list(docs)
    if isinstance(n_docs, bool) or not isinstance(n_docs, int) or n_docs < 1:
        raise DatasetError(f"n_docs: must be a positive integer or None, got {n_docs!r}")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    return [docs[i] for i in order[:n_docs]]


def load_text_dataset(path: str | Path, n_docs: int | None = None, seed: int = 0,
                      min_chars: int = 0, root: Path | None = None) -> list[Doc]:
    """Documents of a .txt/.jsonl file or folder: those with >= ``min_chars`` characters, sampled.

    Raises DatasetError when the path is missing, has no .txt/.jsonl files, a .jsonl line (of the
    sample) lacks a string "text" field, no document is left after the ``min_chars`` filter, a sampled
    document is empty, or (with ``root``) a file lies outside ``root``.
    """
    if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 0:
        raise DatasetError(f"min_chars: must be a non-negative integer, got {min_chars!r}")
    if not list_files(path, root):
        raise DatasetError(f"data: no {' or '.join(SUFFIXES)} files under {str(path)!r}")
    if min_chars == 0:  # sample over locations: only the sampled documents are read
        where = _locate(path, root)
        if not where:
            raise DatasetError(f"data: no documents in {str(path)!r}")
        docs = [w.read() for w in sample_docs(where, n_docs, seed)]
        empty = next((d.id for d in docs if not d.text.strip()), None)
        if empty is not None:
            raise DatasetError(f"data: document {empty!r} is empty; every document needs text")
        return docs
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
