"""Dataset refs -> documents + fingerprint (torch-free).

Refs:
- ``zoo:val`` / ``zoo:test``: held-out long documents bundled in ``precomputed/data/<split>.jsonl``.
- ``stdlib``: modules of this Python's standard library (PSF licence; always on disk), 8-200 KB each.
- ``file:PATH`` or a plain path: a .txt/.jsonl file or a folder of them. ``roots`` (from
  :func:`backend.paths.file_data_roots`) confines them: None = any path (a local command line), else
  only inside one of the directories, symlinks resolved (an empty list turns file data off). A path
  outside gets the same refusal whether or not it exists.
``None`` means ``zoo:test`` when bundled, else ``stdlib``.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from backend.data.text import Doc, fingerprint, load_text_dataset
from backend.params import check_ref
from backend.paths import bundled_data_root, inside

BUILTIN = ("zoo:val", "zoo:test", "stdlib")


class DataRefError(ValueError):
    """Unknown or unusable dataset ref."""


def default_ref() -> str:
    return "zoo:test" if (bundled_data_root() / "test.jsonl").is_file() else "stdlib"


def stdlib_docs(n_docs: int | None, seed: int = 0, min_chars: int = 8_000) -> list[Doc]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if min_chars <= p.stat().st_size <= 200_000)
    files = files[:n_docs] if n_docs else files  # read only the documents the run uses
    return [Doc(id=f"stdlib/{p.name}", text=p.read_text(encoding="utf-8", errors="replace")) for p in files]


def resolve(ref: str | None, n_docs: int | None = None, seed: int = 0,
            roots: list[Path] | None = None) -> tuple[str, list[Doc], str]:
    """(ref actually used, documents, fingerprint)."""
    ref = check_ref(ref, "data") or default_ref()
    if ref == "stdlib":
        docs = stdlib_docs(n_docs, seed)
    elif ref.startswith("zoo:"):
        split = ref[4:]
        path = bundled_data_root() / f"{split}.jsonl"
        if split not in ("val", "test") or not path.is_file():
            raise DataRefError(f"data: unknown bundled dataset {ref!r}; allowed: zoo:val, zoo:test, stdlib, file:PATH")
        docs = load_text_dataset(path, n_docs=n_docs, seed=seed)
    else:
        path, root = _file_path(ref, roots)
        try:
            exists = path.exists()
        except OSError:
            exists = False
        if not exists:
            raise DataRefError(
                f"data: {ref!r} not found; allowed: zoo:val, zoo:test, stdlib, file:PATH (a .txt/.jsonl file or folder)"
            )
        docs = load_text_dataset(path, n_docs=n_docs, seed=seed, root=root)
    if not docs:
        raise DataRefError(f"data: {ref!r} holds no documents")
    return ref, docs, fingerprint(docs, {"ref": ref, "n_docs": n_docs, "seed": seed})


def _file_path(ref: str, roots: list[Path] | None) -> tuple[Path, Path | None]:
    """(path, the allowed directory it lies in) of a file ref; refused when ``roots`` confines it."""
    path = Path(ref.removeprefix("file:")).expanduser()
    if roots is None:
        return path, None
    if not roots:
        raise DataRefError(f"data: file datasets are off on this backend (the operator may allow directories "
                           f"with HYBRIDSCOPE_DATA_ROOTS); allowed: {', '.join(BUILTIN)}")
    for root in roots:
        if inside(path, root) is not None:
            return path, root
    raise DataRefError(f"data: {ref!r} is not inside an allowed data directory (HYBRIDSCOPE_DATA_ROOTS); "
                       f"allowed: {', '.join(BUILTIN)}, or file:PATH under those directories")
