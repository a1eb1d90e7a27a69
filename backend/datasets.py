"""Dataset refs -> documents + fingerprint (torch-free).

Refs:
- ``zoo:val`` / ``zoo:test``: held-out long documents bundled in ``precomputed/data/<split>.jsonl``.
- ``stdlib``: modules of this Python's standard library (PSF licence; always on disk), 8-200 KB each.
- ``file:PATH`` or a plain path: a .txt/.jsonl file or a folder of them.
``None`` means ``zoo:test`` when bundled, else ``stdlib``.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from backend.data.text import Doc, fingerprint, load_text_dataset
from backend.paths import bundled_data_root


class DataRefError(ValueError):
    """Unknown or unusable dataset ref."""


def default_ref() -> str:
    return "zoo:test" if (bundled_data_root() / "test.jsonl").is_file() else "stdlib"


def stdlib_docs(n_docs: int | None, seed: int = 0, min_chars: int = 8_000) -> list[Doc]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if min_chars <= p.stat().st_size <= 200_000)
    docs = [Doc(id=f"stdlib/{p.name}", text=p.read_text(encoding="utf-8", errors="replace")) for p in files]
    return docs[:n_docs] if n_docs else docs


def resolve(ref: str | None, n_docs: int | None = None, seed: int = 0) -> tuple[str, list[Doc], str]:
    """(ref actually used, documents, fingerprint)."""
    ref = ref or default_ref()
    if ref == "stdlib":
        docs = stdlib_docs(n_docs, seed)
    elif ref.startswith("zoo:"):
        split = ref[4:]
        path = bundled_data_root() / f"{split}.jsonl"
        if split not in ("val", "test") or not path.is_file():
            raise DataRefError(f"data: unknown bundled dataset {ref!r}; allowed: zoo:val, zoo:test, stdlib, file:PATH")
        docs = load_text_dataset(path, n_docs=n_docs, seed=seed)
    else:
        path = Path(ref.removeprefix("file:")).expanduser()
        if not path.exists():
            raise DataRefError(
                f"data: {ref!r} not found; allowed: zoo:val, zoo:test, stdlib, file:PATH (a .txt/.jsonl file or folder)"
            )
        docs = load_text_dataset(path, n_docs=n_docs, seed=seed)
    if not docs:
        raise DataRefError(f"data: {ref!r} holds no documents")
    return ref, docs, fingerprint(docs, {"ref": ref, "n_docs": n_docs, "seed": seed})
