"""Q/K weight series: the full-attention layers' query and key projections at every evaluation point.

Written by the trainer so that a later analysis can compute, per head, how far the weights are from
their final value over training (``||W_t - W_final||_F / ||W_final||_F``). On-disk format (the one
place that defines it; precomputed/README.md repeats it for readers):

* A model directory (``zoo/<variant>/``, an HF ``save_pretrained`` export) holds its series in
  ``qk/``: one file per evaluation point, ``qk/step_<n>.safetensors``, ``n`` the global optimizer
  step (counted over all training stages), zero-padded to 6 digits (parse the integer; do not rely on
  the padding). Step 0 is the initialisation (fresh runs); the highest step is the exported model
  itself (``W_final``: the same bf16 values as ``model.safetensors``).
* Each file holds, for every full-attention layer ``i`` (``config.layer_types[i] ==
  "full_attention"``), the tensors ``layers.<i>.q_proj.weight`` [num_attention_heads * head_dim,
  hidden_size] and ``layers.<i>.k_proj.weight`` [num_key_value_heads * head_dim, hidden_size], bf16,
  exactly the model's ``model.layers.<i>.mixer.{q,k}_proj.weight``. Head ``h``'s rows are
  ``h * head_dim : (h + 1) * head_dim`` (query head ``h`` reads KV head ``h // (num_attention_heads /
  num_key_value_heads)``). Its safetensors metadata (str -> str): ``format`` (``hybridscope-qk-1``),
  ``step``, ``tokens`` (training tokens seen), ``layers`` (comma-separated indices), ``num_attention_heads``,
  ``num_key_value_heads``, ``head_dim``.
* ``qk/index.json``: ``{"format", "layers", "num_attention_heads", "num_key_value_heads", "head_dim",
  "points": [{"step", "tokens", "file"}, ...]}`` sorted by step (rewritten with every file).

Size per point: 2 bytes x n_full_layers x hidden x (q_heads + kv_heads) x head_dim, e.g. 0.33 MB for a
v2 ``5m`` hybrid (2 full layers), 1.3 MB for its all-full variant (8). The model fingerprint reads only
the directory's top-level files, so ``qk/`` changes no run_id but the qk_distance probe's (the series is
its data: ``backend.checkpoints`` reads this format).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

FORMAT = "hybridscope-qk-1"
DIR = "qk"
INDEX = "index.json"
_FILE = re.compile(r"^step_(\d+)\.safetensors$")


def file_name(step: int) -> str:
    return f"step_{step:06d}.safetensors"


def full_layers(config: Any) -> list[int]:
    return [i for i, t in enumerate(config.layer_types) if t == "full_attention"]


def qk_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """{``layers.<i>.q_proj.weight`` / ``k_proj``: bf16 CPU copy} for every full-attention layer."""
    out = {}
    for i in full_layers(model.config):
        mixer = model.model.layers[i].mixer
        for name in ("q_proj", "k_proj"):
            w = getattr(mixer, name).weight.detach()
            out[f"layers.{i}.{name}.weight"] = w.to(device="cpu", dtype=torch.bfloat16).contiguous()
    return out


def _header(config: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "layers": full_layers(config),
        "num_attention_heads": int(config.num_attention_heads),
        "num_key_value_heads": int(config.num_key_value_heads),
        "head_dim": int(config.head_dim),
    }


def save_point(model: torch.nn.Module, series_dir: Path, step: int, tokens: int) -> Path:
    """Write ``series_dir/step_<step>.safetensors`` (atomically) and refresh the index."""
    from safetensors.torch import save_file

    series_dir = Path(series_dir)
    series_dir.mkdir(parents=True, exist_ok=True)
    head = _header(model.config)
    meta = {k: (",".join(map(str, v)) if isinstance(v, list) else str(v)) for k, v in head.items()}
    meta.update(step=str(step), tokens=str(tokens))
    path = series_dir / file_name(step)
    tmp = path.with_name(path.name + ".tmp")
    save_file(qk_tensors(model), str(tmp), metadata=meta)
    tmp.replace(path)
    write_index(series_dir)
    return path


def points(series_dir: Path) -> list[tuple[int, Path]]:
    """(step, file) of every point in ``series_dir``, sorted by step."""
    d = Path(series_dir)
    if not d.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in d.iterdir() if (m := _FILE.match(p.name)))


def write_index(series_dir: Path) -> dict:
    """Rebuild ``index.json`` from the files' metadata."""
    from safetensors import safe_open

    series_dir = Path(series_dir)
    index: dict[str, Any] = {}
    pts = []
    for step, path in points(series_dir):
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if not index:
            index = {
                "format": meta.get("format", FORMAT),
                "layers": [int(x) for x in meta.get("layers", "").split(",") if x],
                **{k: int(meta[k]) for k in ("num_attention_heads", "num_key_value_heads", "head_dim") if k in meta},
            }
        pts.append({"step": step, "tokens": int(meta.get("tokens", 0)), "file": path.name})
    index = {**(index or {"format": FORMAT}), "points": pts}
    tmp = series_dir / (INDEX + ".tmp")
    tmp.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    tmp.replace(series_dir / INDEX)
    return index


def drop_after(series_dir: Path, step: int) -> None:
    """Remove points past ``step`` (a resumed run rewrites them)."""
    gone = [p for s, p in points(series_dir) if s > step]
    for p in gone:
        p.unlink()
    if gone:
        write_index(series_dir)


def copy_series(src: Path, dst: Path, up_to: int | None = None) -> int:
    """Copy the points of series ``src`` (up to step ``up_to``) into ``dst``; returns how many."""
    n = 0
    for step, path in points(src):
        if up_to is None or step <= up_to:
            Path(dst).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(dst) / path.name)
            n += 1
    if n:
        write_index(dst)
    return n


def load_point(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of one point (bf16, CPU)."""
    from safetensors.torch import load_file

    return load_file(str(path))


def keep_layers(series_dir: Path, layers: list[int]) -> int:
    """Rewrite every point of ``series_dir`` with only ``layers`` (e.g. an all-full variant's series cut
    to the hybrids' full-attention positions, 4x smaller); metadata ``layers`` follows; returns points."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    pts = points(series_dir)
    for _, path in pts:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
            have = [int(x) for x in meta.get("layers", "").split(",") if x]
            missing = sorted(set(layers) - set(have))
            if missing:
                raise ValueError(f"layers: {missing} not in the series ({have})")
            tensors = {k: f.get_tensor(k) for k in f.keys() if int(k.split(".")[1]) in layers}
        meta["layers"] = ",".join(map(str, sorted(layers)))
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)
    if pts:
        write_index(series_dir)
    return len(pts)
