"""Continued training: what a zoo variant takes over from an earlier zoo root (``TrainArgs.init_from``).

The earlier root is what ``train-all --out`` wrote: ``zoo/<variant>/`` (the export whose weights start
the new run), ``train_summary.json`` (the steps and tokens already seen, counted on in records, logs and
the model card; its ``data`` entry, when recorded, the data-stream position the new run starts from)
and, if present, ``formation.json`` (the earlier formation records, kept in front of the new ones) and
``zoo/<variant>/qk/`` (the earlier Q/K series, see :mod:`zoo.qk`). The optimizer starts fresh, and so
does the LR schedule unless ``TrainArgs.schedule_total`` spans the stages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CHECKED = ("layer_types", "sliding_window", "layer_pe", "hidden_size", "num_hidden_layers")


@dataclass
class Earlier:
    state_dict: dict[str, torch.Tensor]  # float32
    prior: dict[str, Any]  # steps, tokens, synthetic_frac, from
    formation: list[dict]
    data: dict | None = None  # BatchStream position where the earlier run stopped (None: not recorded)


def load_earlier(root: Path, variant: str, config) -> Earlier:
    """The earlier run of ``variant`` under ``root``; FileNotFoundError / ValueError (one line) when the
    root lacks its export or summary, or the export's architecture differs from ``config``."""
    from models.modeling import HybridForCausalLM

    src = root / "zoo" / variant
    summary = root / "train_summary.json"
    if not (src / "config.json").is_file() or not summary.is_file():
        raise FileNotFoundError(f"init_from: {root} needs zoo/{variant}/ (an export) and train_summary.json")
    run = json.loads(summary.read_text(encoding="utf-8"))["variants"].get(variant) or {}
    if "steps" not in run or "tokens_seen" not in run:
        raise ValueError(f"init_from: {summary} has no finished run of {variant!r}")
    loaded = HybridForCausalLM.from_pretrained(src, torch_dtype=torch.float32)
    for key in CHECKED:
        theirs, ours = getattr(loaded.config, key, None), getattr(config, key, None)
        if theirs != ours:
            raise ValueError(f"init_from: {src} differs from variant {variant!r} in {key}: {theirs!r} != {ours!r}")
    prior = {
        "steps": int(run["steps"]),
        "tokens": int(run["tokens_seen"]),
        "synthetic_frac": run.get("synthetic_frac"),
        "from": str(root),
    }
    f = root / "formation.json"
    formation = list(json.loads(f.read_text(encoding="utf-8")).get(variant, [])) if f.is_file() else []
    return Earlier(loaded.state_dict(), prior, formation, run.get("data"))
