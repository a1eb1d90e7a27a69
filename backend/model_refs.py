"""Model refs -> local directories, and their fingerprints (torch-free).

Refs: ``zoo/<name>`` is a bundled checkpoint under ``precomputed/zoo/<name>``; ``tiny/<pattern>``
is a randomly initialised native model built on the fly from a layer pattern (letters F/S/M/G;
seed 0; for tests and the demo before the zoo exists); anything else must be a directory under
one of the model roots (``HYBRIDSCOPE_MODEL_ROOTS``, ``os.pathsep``-separated). Nothing is ever
downloaded: a ref that is not on disk is an error.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from backend.paths import model_roots, zoo_root
from models.plan import LAYER_LETTERS

TINY = re.compile(rf"^tiny/([{''.join(LAYER_LETTERS)}]{{1,32}})$")


class ModelRefError(ValueError):
    """Unknown or unusable model ref."""


@dataclass(frozen=True)
class ModelRef:
    ref: str
    path: Path | None  # None for tiny/<pattern>
    pattern: str | None = None


def resolve(ref: str) -> ModelRef:
    m = TINY.match(ref)
    if m:
        return ModelRef(ref, None, m.group(1))
    if ref.startswith("zoo/"):
        path = zoo_root() / ref[4:]
        if (path / "config.json").is_file():
            return ModelRef(ref, path)
        raise ModelRefError(f"model: unknown zoo model {ref!r}; known: {', '.join(list_models()) or 'none'}")
    for root in model_roots():
        path = (root / ref).resolve()
        if root.resolve() in path.parents and (path / "config.json").is_file():
            return ModelRef(ref, path)
    raise ModelRefError(
        f"model: unknown model {ref!r}; use zoo/<name>, tiny/<FSMG pattern>, or a directory with config.json "
        f"under HYBRIDSCOPE_MODEL_ROOTS (known: {', '.join(list_models()) or 'none'})"
    )


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
    """sha256 over config, weights and tokenizer files: the model part of every run_id."""
    h = hashlib.sha256()
    if ref.path is None:
        h.update(f"tiny:{ref.pattern}:seed0".encode())
        return h.hexdigest()[:20]
    for p in sorted(ref.path.iterdir()):
        if p.is_file() and (p.suffix in {".json", ".safetensors", ".model", ".txt"}):
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
