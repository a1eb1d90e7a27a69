"""Deterministic build of the zoo corpus (train/val/test JSONL), tokenizer and manifest.

``build_data(out)`` writes:
  out/train.jsonl.gz                  {"id", "text", "source"} per line, gzip (mtime 0)
  out/val.jsonl, out/test.jsonl       the same, uncompressed
  out/tokenizer/                      HF-style byte-level BPE
  out/manifest.json                   counts, chars, tokens per split and source; every package with
                                      version and licence; sha256 of every output (and of the
                                      uncompressed training JSONL)
Natural text: the stdlib plus ``packages`` (default ``packages.DEFAULT_PACKAGES``; ``()`` for the stdlib
only); see :mod:`zoo.corpus`. Running it twice with the same arguments on the same Python with
the same installed package versions gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import platform
import random
from collections.abc import Sequence
from pathlib import Path

from zoo.corpus import (
    KV_SOURCE,
    PASSKEY_SOURCE,
    SPLITS,
    STDLIB_SOURCE,
    Doc,
    collect_stdlib,
    make_synthetic,
    split_docs,
    write_jsonl,
)
from zoo.packages import (
    DEFAULT_PACKAGES,
    check_packages,
    collect_package,
)
from zoo.tokenizer import EOS, PAD, backend_of, encode_many, save_hf, train_bpe

MANIFEST_FORMAT = 2
MIN_BYTES = 2_000
MAX_BYTES = 200_000
SPLIT_FILES = {"train": "train.jsonl.gz", "val": "val.jsonl", "test": "test.jsonl"}
LICENCE = {
    "stdlib": "Python Software Foundation License Version 2 (PSF-2.0); source of the CPython "
    "standard library shipped with the Python used for the build",
    "synthetic": "generated locally by zoo/corpus.py (project licence)",
}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _split_stats(docs: list[Doc], lengths: list[int]) -> dict:
    by_source: dict[str, dict[str, int]] = {}
    for d, n in zip(docs, lengths, strict=True):
        s = by_source.setdefault(d.source, {"docs": 0, "chars": 0, "tokens": 0})
        s["docs"] += 1
        s["chars"] += len(d.text)
        s["tokens"] += n
    return {
        "docs": len(docs),
        "chars": sum(len(d.text) for d in docs),
        "tokens": sum(lengths),
        "docs_ge_4096_tokens": sum(1 for n in lengths if n >= 4096),
        "by_source": dict(sorted(by_source.items())),
    }


def build_data(
    out: Path | str,
    stdlib_root: Path | str | None = None,
    max_files: int | None = None,
    val_frac: float = 0.015,
    test_frac: float = 0.015,
    vocab_size: int = 8192,
    synthetic_frac: float = 0.03,
    synthetic_min_tokens: int = 256,
    synthetic_max_tokens: int = 4000,
    seed: int = 0,
    packages: Sequence[str] | None = None,
    package_holdout_scale: float = 0.25,
) -> dict:
    """Build corpus + tokenizer into ``out``; returns the manifest (also written to manifest.json).

    ``packages``: installed packages whose Python source joins the stdlib (None: ``DEFAULT_PACKAGES``,
    empty: stdlib only); each must be installed with an allowed licence (ValueError naming it).
    ``max_files`` keeps the first N kept files of the stdlib and of each package (quick builds).
    ``package_holdout_scale`` multiplies val_frac/test_frac for package files, so the held-out splits
    stay mostly standard library.
    ``synthetic_frac`` is the share of synthetic tokens in the training split (0 disables them).
    The tokenizer is trained on the natural training documents only.
    """
    if not 0 <= synthetic_frac < 1:
        raise ValueError(f"synthetic_frac: must be in [0, 1), got {synthetic_frac}")
    infos = check_packages(DEFAULT_PACKAGES if packages is None else packages)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(stdlib_root) if stdlib_root is not None else None
    natural, excluded_std = collect_stdlib(root, MIN_BYTES, MAX_BYTES, max_files)
    excluded = {STDLIB_SOURCE: excluded_std}
    seen = {hashlib.sha256(d.text.encode("utf-8")).hexdigest() for d in natural}
    package_docs: dict[str, int] = {}
    for info in infos:
        docs, excluded[info.source] = collect_package(info, MIN_BYTES, MAX_BYTES, max_files, seen)
        natural.extend(docs)
        package_docs[info.name] = len(docs)
    splits = split_docs(natural, val_frac, test_frac, package_holdout_scale)
    if not splits["train"]:
        raise ValueError("max_files: no training documents selected; use more files")

    tok = train_bpe([d.text for d in splits["train"]], vocab_size=vocab_size)
    written = [out / SPLIT_FILES[name] for name in SPLITS] + save_hf(tok, out / "tokenizer")
    tok = backend_of(tok)

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    n_tokens = {
        d.id: len(i) for d, i in zip(natural, encode_many(tok, [d.text for d in natural]), strict=True)
    }
    natural_train_tokens = sum(n_tokens[d.id] for d in splits["train"])
    target = round(synthetic_frac / (1 - synthetic_frac) * natural_train_tokens)
    synthetic = (
        make_synthetic(
            target,
            [d.text for d in splits["train"]],
            count,
            seed=seed,
            min_tokens=synthetic_min_tokens,
            max_tokens=synthetic_max_tokens,
        )
        if target > 0
        else []
    )
    n_tokens.update((d.id, count(d.text)) for d in synthetic)
    train = splits["train"] + synthetic
    random.Random(seed + 1).shuffle(train)
    splits["train"] = train

    stats = {}
    content_sha256 = {}
    for name in SPLITS:
        for stale in (out / f"{name}.jsonl", out / f"{name}.jsonl.gz"):  # the other form, from older builds
            if stale.name != SPLIT_FILES[name]:
                stale.unlink(missing_ok=True)
        content_sha256[f"{name}.jsonl"] = write_jsonl(out / SPLIT_FILES[name], splits[name])
        stats[name] = _split_stats(splits[name], [n_tokens[d.id] for d in splits[name]])

    licence = dict(LICENCE)
    for info in infos:
        licence[info.source] = (
            f"{info.licence} (from the package metadata's {info.licence_from}); Python source of "
            f"{info.name} {info.version} as installed for the build"
        )
    manifest = {
        "format": MANIFEST_FORMAT,
        "python_version": platform.python_version(),
        "licence": licence,
        "packages": {
            i.name: {
                "version": i.version,
                "licence": i.licence,
                "licence_from": i.licence_from,
                "docs": package_docs[i.name],
            }
            for i in infos
        },
        "params": {
            "max_files": max_files,
            "min_bytes": MIN_BYTES,
            "max_bytes": MAX_BYTES,
            "val_frac": val_frac,
            "test_frac": test_frac,
            "package_holdout_scale": package_holdout_scale,
            "vocab_size": vocab_size,
            "synthetic_frac": synthetic_frac,
            "synthetic_min_tokens": synthetic_min_tokens,
            "synthetic_max_tokens": synthetic_max_tokens,
            "seed": seed,
        },
        "sources": {
            "natural": [STDLIB_SOURCE] + [i.source for i in infos],
            "synthetic": [KV_SOURCE, PASSKEY_SOURCE],
        },
        "excluded_files": excluded,
        "tokenizer": {
            "vocab_size": tok.get_vocab_size(),
            "eos_id": tok.token_to_id(EOS),
            "pad_id": tok.token_to_id(PAD),
        },
        "splits": stats,
        "sha256": {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(written)},
        "content_sha256": content_sha256,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
