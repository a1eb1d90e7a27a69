"""xz-packed checkpoints: safetensors weights stored as ``<name>.safetensors.xz`` (torch-free).

bf16 weights compress losslessly to ~0.71x with xz (their exponent bytes are low-entropy), which is what
lets seven 15M-parameter zoo models fit the bundle's size cap. A packed checkpoint directory is an
ordinary HF export whose ``*.safetensors`` files are replaced by ``*.safetensors.xz`` (config, tokenizer,
model card and ``model.safetensors.index.json`` stay plain, so listing and config checks never unpack);
its fingerprint (the run_id's model part) is that of the packed files as stored.

:func:`unpacked` gives the directory to load from: the checkpoint itself when nothing is packed, else a
copy under :func:`backend.paths.weights_cache_root` keyed by the fingerprint, unpacked once (written to a
temporary directory and renamed, so a crash or a concurrent load never leaves a half copy) and reused
after. :func:`pack` writes a packed copy of an export.
"""

from __future__ import annotations

import lzma
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

from backend.paths import weights_cache_root

PACKED = ".safetensors.xz"
DONE = ".unpacked"
_CHUNK = 1 << 20


class PackedWeightsError(ValueError):
    """A packed weight file that does not unpack (truncated, corrupt)."""


def is_packed(path: Path) -> bool:
    return any(p.name.endswith(PACKED) for p in Path(path).iterdir() if p.is_file())


def _copy_stream(src, dst) -> None:
    while chunk := src.read(_CHUNK):
        dst.write(chunk)


def unpacked(path: Path, fingerprint: str) -> Path:
    """The directory to load ``path``'s weights from (see the module docstring)."""
    path = Path(path)
    if not is_packed(path):
        return path
    target = weights_cache_root() / fingerprint[:32] / path.name
    if (target / DONE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    t0 = time.perf_counter()
    try:
        for f in sorted(path.iterdir()):
            if not f.is_file():
                continue  # e.g. qk/: a series, not weights to load
            if f.name.endswith(PACKED):
                try:
                    with lzma.open(f, "rb") as src, open(tmp / f.name[: -len(".xz")], "wb") as dst:
                        _copy_stream(src, dst)
                except (lzma.LZMAError, EOFError) as e:
                    raise PackedWeightsError(f"model: {f} does not unpack ({e}); the checkpoint is damaged") from e
            else:
                shutil.copyfile(f, tmp / f.name)
        (tmp / DONE).write_text(f"{path}\n", encoding="utf-8")
        try:
            os.replace(tmp, target)  # atomic; fails if another process finished first
        except OSError:
            if not (target / DONE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"[hybridscope] unpacked {path.name} into {target} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return target


def pack(src: Path, dst: Path, preset: int = 6) -> dict[str, int]:
    """Write ``dst``: ``src``'s top-level files, every ``*.safetensors`` xz-compressed; returns
    {file: bytes written}. Subdirectories (a qk/ series) are left out."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    out = {}
    for f in sorted(src.iterdir()):
        if not f.is_file():
            continue
        if f.name.endswith(".safetensors"):
            name = f.name + ".xz"
            with open(f, "rb") as s, lzma.open(dst / name, "wb", preset=preset) as d:
                _copy_stream(s, d)
        else:
            name = f.name
            shutil.copyfile(f, dst / name)
        out[name] = (dst / name).stat().st_size
    return out
