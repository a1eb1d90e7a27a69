"""Model refs -> local directories, and their fingerprints (torch-free).

Refs: ``zoo/<name>`` is a bundled checkpoint under ``precomputed/zoo/<name>``; ``tiny/<pattern>``
is a randomly initialised native model built on the fly from a layer pattern (letters F/S/M/G;
seed 0; for tests and the demo before the zoo exists); anything else must be a directory under
one of the model roots (``HYBRIDSCOPE_MODEL_ROOTS``, ``os.pathsep``-separated), inside it once
symlinks are resolved. Nothing is ever downloaded: a ref that is not on disk is an error. Weights are
safetensors (or xz-packed safetensors, ``backend.packed_weights``); pickle checkpoints
(``.bin``/``.pt``...) only with ``HYBRIDSCOPE_ALLOW_PICKLE=1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from backend.params import check_ref
from backend.paths import inside, model_roots, zoo_root
from models.plan import LAYER_LETTERS

TINY = re.compile(rf"tiny/([{''.join(LAYER_LETTERS)}]{{1,32}})")
SAFETENSORS = ".safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class ModelRefError(ValueError):
    """Unknown or unusable model ref."""


@dataclass(frozen=True)
class ModelRef:
    ref: str
    path: Path | None  # None for tiny/<pattern>
    pattern: str | None = None


def resolve(ref: str) -> ModelRef:
    """The local checkpoint of ``ref``; ModelRefError (one line) for anything else.

    A ref resolves to a real directory inside its root (the zoo for ``zoo/``, else one of the model
    roots), symlinks resolved: ``..``/``.``/empty path components, absolute paths and links out of the
    root are refused, whatever the prefix. Pickle-only checkpoints are refused (:func:`check_weights`).
    """
    check_ref(ref, "model")
    m = TINY.fullmatch(ref)
    if m:
        return ModelRef(ref, None, m.group(1))
    parts = ref.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ModelRefError(f"model: {ref!r} is not allowed; a ref is a relative path inside its root "
                            "(no empty, '.' or '..' components)")
    if ref.startswith("zoo/"):
        path = _checkpoint(zoo_root(), ref[4:])
        if path is None:
            raise ModelRefError(f"model: unknown zoo model {ref!r}; known: {', '.join(list_models()) or 'none'}")
        return ModelRef(ref, check_weights(ref, path))
    for root in model_roots():
        path = _checkpoint(root, ref)
        if path is not None:
            return ModelRef(ref, check_weights(ref, path))
    raise ModelRefError(
        f"model: unknown model {ref!r}; use zoo/<name>, tiny/<FSMG pattern>, or a directory with config.json "
        f"under HYBRIDSCOPE_MODEL_ROOTS (known: {', '.join(list_models()) or 'none'})"
    )


def _checkpoint(root: Path, rel: str) -> Path | None:
    """The real directory ``root/rel`` when it lies inside ``root`` and holds a config.json."""
    path = inside(root / rel, root)
    try:
        return path if path is not None and path != root.resolve() and (path / "config.json").is_file() else None
    except OSError:  # a name too long for the file system, a permission error...
        return None


def pickle_allowed() -> bool:
    """Whether the operator allows pickle checkpoints (``HYBRIDSCOPE_ALLOW_PICKLE=1``)."""
    return os.environ.get("HYBRIDSCOPE_ALLOW_PICKLE") == "1"


def check_weights(ref: str, path: Path) -> Path:
    """``path`` unless its weights are pickle files only (loading a pickle runs code) and the operator
    did not allow them."""
    names = [p.name for p in path.iterdir() if p.is_file()]
    if any(n.endswith((SAFETENSORS, SAFETENSORS + ".xz")) for n in names) or pickle_allowed():
        return path
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise ModelRefError(f"model: {ref!r} has only pickle weights ({pickles[0]}); HybridScope loads "
                            "safetensors only unless the operator sets HYBRIDSCOPE_ALLOW_PICKLE=1")
    return path


def list_models() -> list[str]:
    out = []
    if zoo_root().is_dir():
        out += [f"zoo/{p.name}" for p in sorted(zoo_root().iterdir()) if (p / "config.json").is_file()]
    for root in model_roots():
        if root.is_dir():
            out += [str(p.relative_to(root)) for p in sorted(root.iterdir()) if (p / "config.json").is_file()]
    return out


def _file_digest(path: Path) -> str:
    st = path.stat()
    return _digest_cached(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _digest_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(ref: ModelRef) -> str:
    """sha256 over config, weights, tokenizer and code files (a remote-code checkpoint's ``*.py``): the
    model part of every run_id."""
    h = hashlib.sha256()
    if ref.path is None:
        h.update(f"tiny:{ref.pattern}:seed0".encode())
        return h.hexdigest()[:20]
    suffixes = {".json", ".safetensors", ".model", ".txt", ".py"}
    if not any(p.suffix == SAFETENSORS for p in ref.path.iterdir()):
        suffixes |= set(PICKLE_SUFFIXES)  # pickle weights (allowed by the operator) are what gets loaded
    for p in sorted(ref.path.iterdir()):
        if p.is_file() and p.suffix in suffixes:
            if p.name == "README.md":
                continue
            h.update(p.name.encode())
            h.update(_file_digest(p).encode())
    return h.hexdigest()[:20]


def model_card(ref: ModelRef) -> dict:
    if ref.path is None:
        return {"ref": ref.ref, "kind": "random tiny native model", "pattern": ref.pattern}
    cfg = json.loads((ref.path / "config.json").read_text())
    return {"ref": ref.ref, "model_type": cfg.get("model_type"), "layer_types": cfg.get("layer_types")}
