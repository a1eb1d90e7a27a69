"""Checkpoint series of a model directory: Q/K weights of the full-attention layers over training
(torch-free: the app asks whether a model has a series; the qk_distance probe reads it).

The format is the one the zoo's trainer records (``zoo/qk.py`` defines it; written here by
:func:`backend.probes.qk_distance.save_qk_checkpoint` for any model):

* ``<model dir>/qk/``: one safetensors file per evaluation point, ``step_<step>.safetensors`` (step =
  optimizer steps, an integer, zero-padded to 6 digits by the writers: the integer is what counts);
  the highest step is the final checkpoint, the reference of every distance,
* tensors ``layers.<i>.q_proj.weight`` ([num_heads * head_dim, hidden]) and
  ``layers.<i>.k_proj.weight`` ([num_kv_heads * head_dim, hidden]) of each full-attention layer i (the
  layout of ``nn.Linear`` weights: output rows per head, heads in order), any float dtype,
* header metadata (strings): ``step``, and optionally ``tokens`` (tokens seen so far); the zoo also
  writes ``qk/index.json``, which is not needed here.

``head_dim`` is not assumed to be hidden / heads: it is the q rows over the model's query heads, and
the kv heads are the k rows over ``head_dim`` (GQA: query head h reads kv head h // (heads / kv heads)).
The series is the qk_distance run's data (:func:`digest` is its data fingerprint, so a new point makes
a new run); it changes no other run's identity.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

DIR = "qk"
FILE = re.compile(r"step_(\d{1,12})\.safetensors")
KEY = re.compile(r"layers\.(\d{1,5})\.(q_proj|k_proj)\.weight")
MAX_HEADER = 100 << 20


class SeriesError(ValueError):
    """A checkpoint series that does not follow the format (the message names the file)."""


@dataclass(frozen=True)
class Checkpoint:
    step: int
    tokens: int | None
    path: Path
    layers: tuple[int, ...]  # layers with both q_proj and k_proj weights


def header(path: Path) -> dict:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes, ``__metadata__``)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise SeriesError(f"{path.name}: not a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if not 0 < n <= MAX_HEADER:
            raise SeriesError(f"{path.name}: not a safetensors file (header of {n} bytes)")
        try:
            return json.loads(f.read(n))
        except ValueError:
            raise SeriesError(f"{path.name}: not a safetensors file (header is not JSON)") from None


def series(model_dir: str | Path | None) -> list[Checkpoint]:
    """The checkpoints of ``model_dir`` sorted by step (empty when it has no ``qk/`` folder)."""
    if model_dir is None:
        return []
    root = Path(model_dir) / DIR
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir()):
        m = FILE.fullmatch(p.name)
        if not m or not p.is_file():
            continue
        h = header(p)
        meta = h.get("__metadata__") or {}
        step = int(m.group(1))
        if "step" in meta and str(meta["step"]) != str(step):
            raise SeriesError(f"{p.name}: metadata step {meta['step']!r} differs from the file name")
        kinds: dict[int, set] = {}
        for name in h:
            k = KEY.fullmatch(name)
            if k:
                kinds.setdefault(int(k.group(1)), set()).add(k.group(2))
        tokens = meta.get("tokens")
        out.append(Checkpoint(step, int(tokens) if tokens not in (None, "") else None, p,
                              tuple(sorted(i for i, s in kinds.items() if s == {"q_proj", "k_proj"}))))
    return sorted(out, key=lambda c: c.step)


def has_series(model_dir: str | Path | None) -> bool:
    """Whether the model directory holds a usable series (two or more checkpoints)."""
    try:
        return len(series(model_dir)) >= 2
    except (OSError, SeriesError):
        return False


def describe(model_dir: str | Path | None) -> str:
    """One line for the dashboard: what series the model directory has, or plainly that it has none."""
    try:
        s = series(model_dir)
    except (OSError, SeriesError) as e:
        return f"its checkpoint series is unreadable: {e}"
    if len(s) < 2:
        return (f"it has no checkpoint series (a {DIR}/ folder of step_<N>.safetensors files with the "
                "full-attention layers' q_proj/k_proj weights, two or more)")
    return f"{len(s)} checkpoints, steps {s[0].step}..{s[-1].step}, full-attention layers {list(s[-1].layers)}"


def digest(model_dir: str | Path | None) -> str:
    """A content digest of the series (file names and bytes, in step order): the qk_distance run's data
    fingerprint. Empty when there is no series."""
    points = series(model_dir)
    if not points:
        return ""
    h = hashlib.sha256()
    for c in points:
        h.update(c.path.name.encode())
        with open(c.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:20]
