"""Evaluation during training: retrieval-head formation and validation loss.

At each evaluation point the trainer scores a fixed set of synthetic NIAH samples (same prompts for
every variant and step) with :func:`mass_scores` (``backend.probes.retrieval_heads.sample_scores``
with metric "mass": attention probability from the answer rows onto the needle tokens, per layer x
head; averaged over samples), and records the strongest full-attention head (``max_full``) and the
mean of the five strongest (``top5_full``). Attention runs on the SDPA path here
(``attention_backend``) so that evaluation (other lengths, no grad) never triggers FlexAttention
recompiles.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.plan import FULL, SWA


@dataclass
class EvalSet:
    codec: Any  # backend.codec.HFCodec
    samples: list  # backend.data.synthetic.Sample
    val_rows: torch.Tensor  # [n, seq_len] int64 (CPU)
    pad_id: int


def make_eval_set(
    tokenizer_dir: Path,
    haystack_texts: list[str],
    val_rows: np.ndarray,
    pad_id: int,
    lengths: tuple[int, ...] = (1024, 2048),
    depths: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9),
    task: str = "niah",
    seed: int = 0,
    n_val_rows: int = 8,
) -> EvalSet:
    """Samples over lengths x depths (one each) on a held-out text haystack, and the first val rows."""
    from transformers import AutoTokenizer

    from backend.codec import HFCodec
    from backend.data.synthetic import make_grid

    codec = HFCodec(AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True))
    samples = make_grid(
        task, codec.count, list(lengths), list(depths), 1, seed=seed, haystack="text", docs=haystack_texts
    )
    rows = torch.from_numpy(val_rows[:n_val_rows].astype(np.int64))
    return EvalSet(codec, samples, rows, pad_id)


@contextmanager
def attention_backend(model: torch.nn.Module, backend: str) -> Iterator[None]:
    """Temporarily set the kernel backend of every native attention mixer (e.g. "sdpa")."""
    from models.attention_mixer import HybridAttention

    mods = [m for m in model.modules() if isinstance(m, HybridAttention)]
    old = [m.backend for m in mods]
    try:
        for m in mods:
            m.backend = backend
        yield
    finally:
        for m, b in zip(mods, old, strict=True):
            m.backend = b


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def mass_scores(model: torch.nn.Module, codec: Any, prompt: str, answer: str, spans, device) -> dict:
    """{attention layer: per-head attention mass on the needle tokens, averaged over the answer rows}.

    The same numbers as ``backend.probes.retrieval_heads.sample_scores(..., metric="mass")`` (a test
    checks it), without importing the probe package: that pulls in pydantic (RunSpec), which the
    device image lacks, and training must not depend on it.
    """
    from backend.attention_probe import row_probs

    enc = codec.encode(prompt + " " + answer)
    ids, offsets = enc.ids, enc.offsets
    start = len(prompt) + 1  # the answer's first character (after the separating space)
    first_answer = next(i for i, (a, b) in enumerate(offsets) if b > start and b > a)
    rows = list(range(first_answer - 1, len(ids) - 1))
    needles = [i for i, (a, b) in enumerate(offsets) if b > a and any(a < e and b > s for s, e in spans)]
    if not needles:
        raise ValueError("samples: the needle did not survive tokenisation (no token overlaps its span)")
    need = torch.tensor(needles, device=device)

    def reduce(layer: int, probs: torch.Tensor) -> np.ndarray:  # probs [H, nq, L]
        return probs[:, :, need].sum(-1).mean(-1).cpu().numpy()

    return row_probs(model, torch.tensor([ids], device=device), rows, reduce=reduce)


@torch.no_grad()
def retrieval_scores(model: torch.nn.Module, ev: EvalSet, device: torch.device) -> dict:
    """Per-layer mean head scores and the summary numbers over full-attention (and SWA) heads."""
    kinds = list(model.config.layer_types)
    total: dict[int, np.ndarray] = {}
    was_training = model.training
    model.eval()
    try:
        with attention_backend(model, "sdpa"), _autocast(device):
            for s in ev.samples:
                scores = mass_scores(model, ev.codec, s.prompt, s.answer, s.answer_spans, device)
                for layer, v in scores.items():
                    total[layer] = total.get(layer, 0) + np.asarray(v, dtype=np.float64)
    finally:
        model.train(was_training)
    per_layer = {int(k): (v / len(ev.samples)).tolist() for k, v in sorted(total.items())}
    out: dict[str, Any] = {"per_layer": per_layer}
    for name, kind in (("full", FULL), ("swa", SWA)):
        heads = sorted((x for i, v in per_layer.items() if kinds[i] == kind for x in v), reverse=True)
        if heads:
            out[f"max_{name}"] = float(heads[0])
            out[f"top5_{name}"] = float(np.mean(heads[:5]))
    return out


@torch.no_grad()
def val_loss(model: torch.nn.Module, ev: EvalSet, device: torch.device, batch: int = 4) -> float | None:
    """Mean next-token loss over the eval's validation rows (pads ignored); None without rows."""
    if len(ev.val_rows) == 0:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with attention_backend(model, "sdpa"), _autocast(device):
            for i in range(0, len(ev.val_rows), batch):
                x = ev.val_rows[i : i + batch].to(device)
                y = x.masked_fill(x == ev.pad_id, -100)
                n = int((y[:, 1:] != -100).sum())
                total += float(model(input_ids=x, labels=y).loss) * n
                count += n
    finally:
        model.train(was_training)
    return total / max(1, count)
