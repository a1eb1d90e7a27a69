"""Evaluation during training: retrieval-head formation, validation loss, passkey accuracy and key tokens.

At each evaluation point the trainer scores a fixed set of synthetic NIAH samples (same prompts for
every variant and step) with :func:`mass_scores` (``backend.probes.retrieval_heads.sample_scores``
with metric "mass": attention probability from the answer rows onto the needle tokens, per layer x
head; averaged over samples), and records the strongest full-attention head (``max_full``) and the
mean of the five strongest (``top5_full``). Attention runs on the SDPA path here
(``attention_backend``) so that evaluation (other lengths, no grad) never triggers FlexAttention
recompiles.

Optional (``make_eval_set(passkey_length=..., key_chunks=...)``; the v2 zoo and the pilot use both):

* ``passkey_acc``: greedy passkey accuracy exactly as the ``niah`` probe computes it (prompts from
  :func:`backend.data.synthetic.make_grid` on a text haystack, ``models.generate.greedy_generate``,
  exact match by :func:`backend.data.synthetic.first_word`), at one length (4096 = the training
  context) over depths x samples; it shows when retrieval forms;
* ``n_key`` / ``longppl_self``: LongPPL key tokens (Fang et al.: log p_long - log p_short > ALPHA and
  log p_long > BETA, the short context ``trunc_len`` tokens slid by ``stride``, the longppl probe's
  maths in ``backend.probes.longppl_math``) that the model itself finds in ``key_chunks`` held-out
  windows of ``seq_len`` tokens, and exp(mean NLL) over them: whether this model could serve as the
  LongPPL evaluator (issue 12 wants >= 1,000 key tokens at trunc_len >= 1024).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.plan import FULL, SWA

ALPHA, BETA = 2.0, -2.0  # the longppl probe's key-token thresholds (backend.params.LongPPLParams; tested)
PASSKEY_NEW_TOKENS = 8  # what precompute's passkey grid decodes


@dataclass
class EvalSet:
    codec: Any  # backend.codec.HFCodec
    samples: list  # backend.data.synthetic.Sample
    val_rows: torch.Tensor  # [n, seq_len] int64 (CPU)
    pad_id: int
    passkey: list = field(default_factory=list)  # passkey Samples (empty: no passkey_acc)
    key_chunks: list = field(default_factory=list)  # token-id lists of held-out windows (empty: no n_key)
    trunc_len: int = 1024
    stride: int = 256


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
    passkey_length: int | None = None,
    passkey_depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
    passkey_samples: int = 2,
    key_chunks: int = 0,
    seq_len: int = 4096,
    trunc_len: int = 1024,
    stride: int = 256,
) -> EvalSet:
    """Samples over lengths x depths (one each) on a held-out text haystack, and the first val rows;
    with ``passkey_length`` passkey samples (depths x samples, seed 0 like the niah probe's default),
    with ``key_chunks`` > 0 that many held-out windows of ``seq_len`` tokens for key-token counts."""
    from transformers import AutoTokenizer

    from backend.codec import HFCodec
    from backend.data.synthetic import make_grid

    codec = HFCodec(AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True))
    samples = make_grid(
        task, codec.count, list(lengths), list(depths), 1, seed=seed, haystack="text", docs=haystack_texts
    )
    rows = torch.from_numpy(val_rows[:n_val_rows].astype(np.int64))
    passkey = []
    if passkey_length:
        passkey = make_grid("passkey", codec.count, [passkey_length], list(passkey_depths), passkey_samples,
                            haystack="text", docs=haystack_texts)
    chunks = held_out_windows(codec, haystack_texts, seq_len, key_chunks) if key_chunks else []
    return EvalSet(codec, samples, rows, pad_id, passkey, chunks, trunc_len, stride)


def held_out_windows(codec: Any, texts: list[str], seq_len: int, n: int) -> list[list[int]]:
    """Up to ``n`` consecutive, non-overlapping ``seq_len``-token windows of the texts (longest texts
    first; whole windows only): long-context evaluation material from held-out documents."""
    out: list[list[int]] = []
    for text in sorted(texts, key=len, reverse=True):
        ids = codec.encode(text).ids
        out += [ids[i : i + seq_len] for i in range(0, len(ids) - seq_len + 1, seq_len)]
        if len(out) >= n:
            break
    return out[:n]


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
def passkey_accuracy(model: torch.nn.Module, ev: EvalSet, device: torch.device) -> float | None:
    """Greedy passkey accuracy over ``ev.passkey`` (as the niah probe scores it); None without samples."""
    from backend.data.synthetic import first_word
    from models.generate import greedy_generate

    if not ev.passkey:
        return None
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with attention_backend(model, "sdpa"), _autocast(device):
            for s in ev.passkey:
                x = torch.tensor([ev.codec.encode(s.prompt).ids], device=device)
                out = greedy_generate(model, x, PASSKEY_NEW_TOKENS, eos_id=ev.codec.eos_id)[0, x.shape[1] :]
                correct += first_word(ev.codec.decode(out.tolist())) == s.answer
    finally:
        model.train(was_training)
    return correct / len(ev.passkey)


@torch.no_grad()
def key_token_stats(model: torch.nn.Module, ev: EvalSet, device: torch.device) -> dict:
    """{n_key, n_targets, longppl_self}: the model's own LongPPL key tokens in ``ev.key_chunks`` (see the
    module docstring); {} without chunks."""
    from backend.forward import token_nll
    from backend.probes.longppl_math import key_mask, short_logprobs

    if not ev.key_chunks:
        return {}
    was_training = model.training
    model.eval()
    n_key = n_targets = 0
    nll_sum = 0.0
    try:
        with attention_backend(model, "sdpa"), _autocast(device):
            for ids in ev.key_chunks:
                x = torch.tensor([ids], device=device)
                nll = token_nll(model, x)[0].float().cpu().numpy().astype(np.float64)
                short = short_logprobs(model, x, ev.trunc_len, ev.stride)
                key = key_mask(-nll, short, ALPHA, BETA)
                n_key += int(key.sum())
                n_targets += int(np.isfinite(short).sum())
                nll_sum += float(nll[key].sum())
    finally:
        model.train(was_training)
    return {"n_key": n_key, "n_targets": n_targets,
            "longppl_self": float(np.exp(nll_sum / n_key)) if n_key else None}


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
