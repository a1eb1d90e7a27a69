"""Checkpoints of the zoo trainer: bf16 exports (HF ``save_pretrained`` + tokenizer + model card) and
resumable trainer state.

Exports larger than ``SHARD`` are written as safetensors shards (``model-0000k-of-0000n.safetensors`` +
``model.safetensors.index.json``, loaded as usual by ``from_pretrained``), so every file of a v2
``10m`` / ``15m`` model fits the device's 16 MiB per returned file (``zoo.package`` bins files).

A training checkpoint is a directory ``<run>/checkpoints/step-000120/`` holding the bf16 export and
``trainer_state.pt`` (fp32 weights, optimizer, step, schedule, data position, RNG states, formation
records). It is written under a temporary name and renamed, then ``<run>/checkpoints/LATEST`` is
replaced (atomically) with its name, so a run killed at any point resumes from the last complete one.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
STATE = "trainer_state.pt"
LATEST = "LATEST"
SHARD = "12MB"  # max safetensors shard of an export (5m: one file of 10.8 MB)


def export_pretrained(
    model: torch.nn.Module, out_dir: Path, tokenizer_dir: Path, card: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` in bf16 (safetensors, tied weights stored once), the tokenizer files and, if
    ``card`` is given, README.md (the model card). Writes to a temp dir, then renames over ``out_dir``."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    export = copy.deepcopy(model).to(dtype=torch.bfloat16)
    export.save_pretrained(str(tmp), max_shard_size=SHARD)
    del export
    for name in TOKENIZER_FILES:
        src = Path(tokenizer_dir) / name
        if src.is_file():
            shutil.copyfile(src, tmp / name)
    if card is not None:
        (tmp / "README.md").write_text(model_card_markdown(card), encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path, step: int, model: torch.nn.Module, tokenizer_dir: Path, state: dict, keep: int = 1
) -> Path:
    """Write checkpoint ``step`` (bf16 export + ``state`` + RNG), point LATEST at it, keep the newest
    ``keep`` checkpoints. ``state`` must hold everything else the trainer needs to resume."""
    ck_root = Path(run_dir) / "checkpoints"
    final = ck_root / f"step-{step:06d}"
    tmp = ck_root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    export_pretrained(model, tmp, tokenizer_dir)
    full = dict(state, step=step, model=model.state_dict(), rng=rng_state())
    torch.save(full, tmp / STATE)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    latest_tmp = ck_root / f".{LATEST}.tmp"
    latest_tmp.write_text(final.name, encoding="utf-8")
    os.replace(latest_tmp, ck_root / LATEST)
    done = sorted(p for p in ck_root.glob("step-*") if p.is_dir())
    for old in done[: max(0, len(done) - max(1, keep))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The directory LATEST points at, if it is complete; else None."""
    ptr = Path(run_dir) / "checkpoints" / LATEST
    if not ptr.is_file():
        return None
    path = ptr.parent / ptr.read_text(encoding="utf-8").strip()
    return path if (path / STATE).is_file() else None


def load_state(path: Path) -> dict:
    """The trainer state saved in checkpoint directory ``path`` (on the CPU)."""
    return torch.load(Path(path) / STATE, map_location="cpu", weights_only=False)


def model_card_markdown(card: dict[str, Any]) -> str:
    """README.md of a zoo checkpoint from its card dict (also embedded as JSON at the end)."""
    rows = [
        ("variant", card.get("name")),
        ("description", card.get("description")),
        ("layer pattern", f"`{card.get('pattern')}` (F full, S sliding window, M Mamba-2, G Gated DeltaNet)"),
        ("efficient:full ratio", card.get("ratio")),
        ("SWA window", card.get("window") or "n/a"),
        ("full-attention PE", card.get("full_pe")),
        ("parameters", f"{card.get('params', 0):,}"),
        ("training context", card.get("context")),
        ("steps", card.get("steps")),
        ("tokens seen", f"{card.get('tokens_seen', 0):,}"),
        ("batch", card.get("batch")),
        ("final train loss", card.get("final_train_loss")),
        ("final val loss", card.get("final_val_loss")),
        ("training time (s)", card.get("train_seconds")),
        ("device", card.get("device")),
    ]
    earlier = card.get("continued_from")
    synthetic = f"{card.get('synthetic_frac')} of the rows"
    if earlier:  # continued training: say what the totals are made of
        rows.insert(
            9,
            (
                "training stages",
                f"{earlier.get('steps')} steps ({earlier.get('tokens', 0):,} tokens, synthetic fraction "
                f"{earlier.get('synthetic_frac')}), then {earlier.get('stage_steps')} steps continued from "
                "those weights (fresh optimizer and schedule)",
            ),
        )
        rows[-2] = ("training time of the last stage (s)", card.get("train_seconds"))
        synthetic += f" in the last stage ({earlier.get('synthetic_frac')} before)"
    lines = [
        f"# HybridScope zoo: `{card.get('name')}`",
        "",
        "A small native hybrid LM (model_type `hybridscope`) trained from scratch by "
        "`python -m zoo train-all` to show the findings of Qiao et al., *Rethinking the Role "
        "of Efficient Attention in Hybrid Architectures*, at toy scale. Load it as `zoo/"
        f"{card.get('name')}` (HybridScope) or with `AutoModelForCausalLM.from_pretrained` after "
        "`import models`.",
        "",
        "| field | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += [
        "",
        "## Data",
        "",
        "CPython standard-library source (PSF License 2.0) and the Python source of permissively licensed "
        "packages (MIT / BSD / Apache-2.0; names, versions and licences in the corpus manifest and "
        "precomputed/README.md), built by `python -m zoo build-data`, "
        "plus synthetic retrieval documents drawn fresh every epoch (key-value recall and passkey in the "
        f"corpus format; NIAH / passkey prompt templates on code haystacks): {synthetic}. "
        "Byte-level BPE tokenizer (vocab 8192) trained on the training split.",
        "",
        "## Card (JSON)",
        "",
        "```json",
        json.dumps(card, indent=1, sort_keys=True, default=str),
        "```",
        "",
    ]
    return "\n".join(lines)
