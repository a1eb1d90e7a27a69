"""Training corpus for the zoo: Python source (the CPython standard library and permissively licensed
packages installed from the project's requirements) plus synthetic retrieval documents.

Natural documents are whole ``.py`` modules:

- ``stdlib``: the standard library shipped with the running Python (PSF License 2.0). Test suites,
  site-packages, machine-specific and generated files, and files outside [min_bytes, max_bytes] are
  excluded. Document ids are ``stdlib:<path relative to Lib>``.
- ``pypi/<name>``: the installed files (from the distribution's RECORD) of each package in
  :data:`zoo.packages.DEFAULT_PACKAGES` (or the caller's list), collected by
  :mod:`zoo.packages`. A package must be installed and its metadata licence
  (License-Expression, else License, else the licence classifiers) must consist only of
  ``ALLOWED_LICENCE_TERMS``; otherwise the build fails naming it. Excluded on top of the stdlib rules:
  test files (``test_*.py``, ``*_test.py``, ``conftest.py``), vendored directories (``vendor``,
  ``_vendor``, ``vendored``, ``third_party``, ...), files whose header says they are generated
  (``do not edit``, ``automatically generated``, protobuf output, ...) or names a copyleft licence,
  numeric tables (over 25% digits), and exact duplicates of an earlier document. Ids are
  ``pypi/<name>:<path in site-packages>``.

Files are visited in sorted relative-path order (packages in sorted name order) and assigned to
train / val / test by a hash of their id (:func:`split_of`), so the split does not depend on which
other files exist; package files are held out at a reduced rate (``package_scale``).

Synthetic documents (training split only) teach retrieval:
- ``kv``: many lines ``key_4821 = 93017`` and a final query line ``# what is the value of key_4821? 93017``
- ``passkey``: training-split code with ``# pass key: 48213`` buried at a random depth and a final line
  ``# what is the pass key? 48213``.
In both, the answer occurs exactly once in the text before the query line. Lengths are fitted in tokens
with the corpus tokenizer, so a document never exceeds ``max_tokens``.

Splits are written as JSON lines; a path ending in ``.gz`` is gzip-compressed (header mtime 0, so the
bytes are deterministic). Readers take either form (:func:`split_path`, :func:`read_jsonl`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import sysconfig
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "test")
STDLIB_SOURCE = "stdlib"
PYPI_PREFIX = "pypi/"  # package sources are "pypi/<name>"
SYNTHETIC_PREFIX = "synthetic/"
KV_SOURCE = "synthetic/kv"
PASSKEY_SOURCE = "synthetic/passkey"
KV_QUERY = "# what is the value of {key}? "
PASSKEY_NEEDLE = "# pass key: {key}\n"
PASSKEY_QUERY = "# what is the pass key? "
EXCLUDED_DIR_NAMES = frozenset({"test", "tests", "idle_test", "__pycache__", "site-packages"})
GENERATED_MARKER = "Python Character Mapping Codec"  # encodings/cp*.py etc.: generated lookup tables


@dataclass(frozen=True)
class Doc:
    """One corpus record as written to the JSONL files."""

    id: str
    text: str
    source: str

    def to_json(self) -> str:
        """Compact JSON line with keys in the fixed order id, text, source."""
        return json.dumps({"id": self.id, "text": self.text, "source": self.source}, ensure_ascii=False)


def default_stdlib_root() -> Path:
    """The ``Lib`` directory of the running Python (e.g. ``.../lib/python3.11``)."""
    return Path(sysconfig.get_paths()["stdlib"])


def exclusion_reason(relpath: str, size: int, min_bytes: int, max_bytes: int) -> str | None:
    """Why a stdlib file is left out of the corpus, or None when it is kept (text not yet checked)."""
    parts = relpath.split("/")
    if any(p in EXCLUDED_DIR_NAMES for p in parts[:-1]) or parts[0].startswith("config-"):
        return "tests_or_build"
    if parts[-1].startswith("_sysconfigdata"):
        return "machine_specific"
    if size > max_bytes:
        return "too_large"
    if size < min_bytes:
        return "too_small"
    return None


def read_utf8(path: Path) -> str | None:
    """A source file's text, or None when it is not valid UTF-8."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return None


def _walk_py(root: Path) -> Iterator[Path]:
    """All ``.py`` files under root, not descending into excluded directories (tests, site-packages)."""
    for dirpath, dirnames, filenames in os.walk(root):
        top = Path(dirpath) == root
        dirnames[:] = [
            d for d in dirnames if d not in EXCLUDED_DIR_NAMES and not (top and d.startswith("config-"))
        ]
        yield from (Path(dirpath) / f for f in filenames if f.endswith(".py"))


def collect_stdlib(
    root: Path | None = None,
    min_bytes: int = 2_000,
    max_bytes: int = 200_000,
    max_files: int | None = None,
) -> tuple[list[Doc], dict[str, int]]:
    """Kept stdlib modules as Docs (sorted by relative path) and counts of excluded files by reason.

    Excluded directories (test suites, site-packages, build config) are not walked, so their files
    are not counted.

    ``max_files`` keeps only the first N kept files in sorted order (for quick tests).
    """
    root = Path(root) if root is not None else default_stdlib_root()
    if not root.is_dir():
        raise ValueError(f"stdlib_root: {root} is not a directory")
    if max_files is not None and max_files < 1:
        raise ValueError(f"max_files: must be a positive int or None, got {max_files}")
    paths = sorted((p.relative_to(root).as_posix(), p) for p in _walk_py(root))
    docs: list[Doc] = []
    excluded: dict[str, int] = {}
    for rel, path in paths:
        if max_files is not None and len(docs) >= max_files:
            break
        reason = exclusion_reason(rel, path.stat().st_size, min_bytes, max_bytes)
        text = read_utf8(path) if reason is None else ""
        if text is None:
            text, reason = "", "not_utf8"
        if reason is None and GENERATED_MARKER in text[:500]:
            reason = "generated_table"
        if reason is not None:
            excluded[reason] = excluded.get(reason, 0) + 1
            continue
        docs.append(Doc(id=f"stdlib:{rel}", text=text, source=STDLIB_SOURCE))
    return docs, dict(sorted(excluded.items()))


def is_synthetic(source: str) -> bool:
    """True for the synthetic retrieval sources, False for natural text (stdlib and packages)."""
    return source.startswith(SYNTHETIC_PREFIX)


def split_of(key: str, val_frac: float, test_frac: float) -> str:
    """Deterministic split for a document key: sha256(key) mapped to [0, 1) against the fractions."""
    if not (0 <= val_frac and 0 <= test_frac and val_frac + test_frac < 1):
        raise ValueError(f"val_frac/test_frac: need 0 <= each and sum < 1, got {val_frac}, {test_frac}")
    u = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    if u < val_frac:
        return "val"
    if u < val_frac + test_frac:
        return "test"
    return "train"


def split_docs(
    docs: Iterable[Doc], val_frac: float, test_frac: float, package_scale: float = 1.0
) -> dict[str, list[Doc]]:
    """Group docs into train/val/test by ``split_of(doc.id)``, keeping their order.

    Package documents (source ``pypi/...``) use the fractions times ``package_scale`` (in [0, 1]).
    """
    if not 0 <= package_scale <= 1:
        raise ValueError(f"package_scale: must be in [0, 1], got {package_scale}")
    out: dict[str, list[Doc]] = {s: [] for s in SPLITS}
    for d in docs:
        k = package_scale if d.source.startswith(PYPI_PREFIX) else 1.0
        out[split_of(d.id, val_frac * k, test_frac * k)].append(d)
    return out


def split_query(text: str) -> tuple[str, str, str]:
    """Split a synthetic document into (context, query prompt, answer).

    The query is the last line; the prompt is that line up to and including ``"? "``; the answer is
    the rest of the line. ``context + prompt + answer + "\\n" == text``.
    """
    body = text[:-1] if text.endswith("\n") else text
    cut = body.rfind("\n") + 1
    context, last = body[:cut], body[cut:]
    q = last.rfind("? ")
    if not last.startswith("# ") or q < 0:
        raise ValueError("text: last line is not a synthetic query line ('# ...? ANSWER')")
    return context, last[: q + 2], last[q + 2 :]


def _fit_units(
    build: Callable[[int], str], max_units: int, max_tokens: int, count: Callable[[str], int]
) -> str:
    """Longest ``build(n)`` (n in [1, max_units]) whose token count is <= max_tokens (binary search)."""
    lo, hi = 1, max_units
    if count(build(lo)) > max_tokens:
        raise ValueError(f"max_tokens: {max_tokens} is too small for even one unit of a synthetic document")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(build(mid)) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return build(lo)


def make_kv_doc(rng: random.Random, n_tokens: int, count: Callable[[str], int]) -> str:
    """A key-value recall document of at most ``n_tokens`` tokens (keys 4 digits, values 5 digits, unique).

    The queried key sits at a uniformly random depth of the table.
    """
    n_max = max(2, n_tokens // 4)
    keys = rng.sample(range(1000, 10000), min(n_max, 9000))
    values = rng.sample(range(10000, 100000), len(keys))
    depth = rng.random()

    def build(n: int) -> str:
        lines = [f"key_{k} = {v}\n" for k, v in zip(keys[:n], values[:n], strict=True)]
        i = min(n - 1, int(depth * n))
        query = KV_QUERY.format(key=f"key_{keys[i]}") + f"{values[i]}\n"
        return "# key-value table\n" + "".join(lines) + query

    return _fit_units(build, len(keys), n_tokens, count)


def _filler_lines(rng: random.Random, sources: Sequence[str], n_lines: int) -> list[str]:
    """``n_lines`` consecutive source lines starting at a random line of a random source (wrapping on)."""
    i = rng.randrange(len(sources))
    lines = sources[i].splitlines(keepends=True)
    start = rng.randrange(len(lines))
    out = lines[start:]
    while len(out) < n_lines:
        i = (i + 1) % len(sources)
        out.extend(sources[i].splitlines(keepends=True))
    out = out[:n_lines]
    if out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    return out


def make_passkey_doc(
    rng: random.Random, sources: Sequence[str], n_tokens: int, count: Callable[[str], int]
) -> str:
    """Code from ``sources`` with ``# pass key: NNNNN`` at a random line depth, then the query line.

    The pass key is redrawn until it does not occur in the filler, so it occurs once before the query.
    """
    if not sources:
        raise ValueError("sources: need at least one training document for passkey filler")
    pool = _filler_lines(rng, sources, max(4, 2 * n_tokens))
    depth = rng.random()
    filler_all = "".join(pool)
    key = rng.randrange(10000, 100000)
    while str(key) in filler_all:
        key = rng.randrange(10000, 100000)

    def build(n: int) -> str:
        at = int(depth * n)
        lines = pool[:at] + [PASSKEY_NEEDLE.format(key=key)] + pool[at:n]
        return "".join(lines) + PASSKEY_QUERY + f"{key}\n"

    return _fit_units(build, len(pool), n_tokens, count)


def make_synthetic(
    n_target_tokens: int,
    sources: Sequence[str],
    count: Callable[[str], int],
    seed: int,
    min_tokens: int = 256,
    max_tokens: int = 4000,
) -> list[Doc]:
    """Alternating kv / passkey documents until their total token count reaches ``n_target_tokens``.

    Each document's length is drawn uniformly in [min_tokens, max_tokens] tokens (seeded).
    """
    if not 16 <= min_tokens <= max_tokens:
        raise ValueError(f"min_tokens/max_tokens: need 16 <= min <= max, got {min_tokens}, {max_tokens}")
    rng = random.Random(seed)
    docs: list[Doc] = []
    total = 0
    while total < n_target_tokens:
        n = rng.randint(min_tokens, max_tokens)
        i = len(docs)
        if i % 2 == 0:
            doc = Doc(f"synthetic:kv-{i:05d}", make_kv_doc(rng, n, count), KV_SOURCE)
        else:
            doc = Doc(f"synthetic:passkey-{i:05d}", make_passkey_doc(rng, sources, n, count), PASSKEY_SOURCE)
        docs.append(doc)
        total += count(doc.text)
    return docs


def write_jsonl(path: Path | str, docs: Iterable[Doc]) -> str:
    """Write docs as UTF-8 JSON lines (``\\n`` line ends); gzip (mtime 0, level 6) when ``path`` ends
    in ``.gz``. Returns the sha256 hex of the uncompressed bytes."""
    path = Path(path)
    h = hashlib.sha256()
    with open(path, "wb") as raw:
        gz = path.suffix == ".gz"
        f = gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=raw, mtime=0) if gz else raw
        try:
            for d in docs:
                line = (d.to_json() + "\n").encode("utf-8")
                h.update(line)
                f.write(line)
        finally:
            if f is not raw:
                f.close()
    return h.hexdigest()


def read_jsonl(path: Path | str) -> Iterator[Doc]:
    """Read docs written by ``write_jsonl`` (plain or ``.gz``)."""
    path = Path(path)
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    with raw, io.TextIOWrapper(raw, encoding="utf-8", newline="\n") as f:
        for line in f:
            r = json.loads(line)
            yield Doc(id=r["id"], text=r["text"], source=r["source"])


def split_path(data_dir: Path | str, split: str) -> Path:
    """``data_dir/<split>.jsonl.gz`` or ``data_dir/<split>.jsonl``, whichever exists.

    ValueError when neither exists or both do (a stale file from an older build would be ambiguous).
    """
    data_dir = Path(data_dir)
    plain, gz = data_dir / f"{split}.jsonl", data_dir / f"{split}.jsonl.gz"
    if plain.is_file() and gz.is_file():
        raise ValueError(f"data: {data_dir} has both {plain.name} and {gz.name}; remove the stale one")
    if gz.is_file():
        return gz
    if plain.is_file():
        return plain
    raise ValueError(
        f"data: {data_dir} has no {split}.jsonl or {split}.jsonl.gz; "
        "build it with `python -m zoo build-data`"
    )
