"""retrieval_heads probe: per layer x head, how much the model retrieves the needle.

For each synthetic sample the prompt is followed by the expected answer (teacher forcing). The haystack
is fitted so that this whole sequence, prompt + " " + answer, has at most ``length`` tokens
(``make_grid(..., teacher_forced=True)``): every sample of a length then runs at one sequence length
bucket of the compiled GPU attention, whatever its seed or needle. The same prompts serve every
metric (``authors`` feeds the prompt alone, a few tokens shorter). The
*answer rows* are the positions whose next token is an answer token (the last prompt token and
all but the last answer token). Needle tokens are the context tokens overlapping the needle
value's character span(s).

- ``mass`` (the paper's tracing definition): mean over answer rows and samples of the attention
  probability on the needle tokens.
- ``copy`` (Wu et al. 2024): fraction of answer rows whose top-1 key is a needle token carrying
  the very token being predicted, averaged over samples.
- ``authors`` (the paper's released script): the prompt alone (prefill, no teacher forcing), one query
  row (the token before the answer), attention mass on the prompt tokens whose ids match the answer's
  token variants (with and without a leading space), averaged over samples. Token matching also counts
  equal tokens outside the needle (a digit of the haystack), which is why ``mass`` (character spans)
  is the default.

Probabilities come from ``backend.attention_probe.row_probs`` (only the needed rows; never an
L x L matrix). Non-attention layers are reported with a null score and their layer type.
"""

from __future__ import annotations

import numpy as np
import torch

from backend.attention_probe import row_probs
from backend.data.synthetic import Sample, make_grid, teacher_forced_text
from backend.probes.context import ProbeContext
from models.adapters import adapter_for


def samples_for(ctx: ProbeContext) -> list[Sample]:
    """The probe's samples: NIAH / passkey prompts whose teacher-forced sequence fits ``length``."""
    p = ctx.params
    return make_grid(p.task, ctx.lm.codec.count, list(p.lengths), list(p.depths), p.samples, seed=p.seed,
                     haystack=p.haystack, docs=ctx.docs, teacher_forced=True)


def needle_positions(offsets: list[tuple[int, int]], spans) -> list[int]:
    return [i for i, (a, b) in enumerate(offsets) if b > a and any(a < e and b > s for s, e in spans)]


def answer_token_positions(codec, prompt_ids: list[int], answer: str) -> list[int]:
    """The authors' needle tokens: prompt positions whose token id is one of the answer's token ids, over
    its tokenisations with and without a leading space (token matching: equal tokens elsewhere in the
    prompt match too)."""
    variants = {t for text in (answer, " " + answer) for t in codec.encode(text).ids}
    return [i for i, t in enumerate(prompt_ids) if t in variants]


def sample_scores_authors(model, codec, prompt: str, answer: str, device) -> dict[int, np.ndarray]:
    """{layer: score per head}, the paper's script: prefill of the prompt alone, one query row (the last
    prompt token, the one before the answer), attention mass on the matched answer tokens."""
    ids = codec.encode(prompt).ids
    needles = answer_token_positions(codec, ids, answer)
    if not needles:
        raise ValueError("data: no prompt token matches the answer's tokens")
    x = torch.tensor([ids], device=device)
    need = torch.tensor(needles, device=device)
    out = row_probs(model, x, [len(ids) - 1], reduce=lambda layer, probs: probs[:, :, need].sum(-1).mean(-1))
    return {layer: v.cpu().numpy() for layer, v in out.items()}


def sample_scores(model, codec, prompt: str, answer: str, spans, metric: str, device) -> dict[int, np.ndarray]:
    """{layer: score per head} for one sample."""
    if metric == "authors":
        return sample_scores_authors(model, codec, prompt, answer, device)
    enc = codec.encode(teacher_forced_text(prompt, answer))
    ids, offsets = enc.ids, enc.offsets
    start = len(prompt) + 1  # the answer's first character (after the separating space)
    first_answer = next(i for i, (a, b) in enumerate(offsets) if b > start and b > a)
    rows = list(range(first_answer - 1, len(ids) - 1))
    needles = needle_positions(offsets, spans)
    if not needles:
        raise ValueError("data: the needle did not survive tokenisation (no token overlaps its span)")
    x = torch.tensor([ids], device=device)
    need = torch.tensor(needles, device=device)
    targets = torch.tensor([ids[r + 1] for r in rows], device=device)

    def reduce(layer: int, probs: torch.Tensor) -> np.ndarray:  # probs [H, nq, L]
        if metric == "mass":
            return probs[:, :, need].sum(-1).mean(-1)  # stays on the device: no sync per layer
        top = probs.argmax(-1)  # [H, nq]
        is_needle = (top[..., None] == need).any(-1)
        copied = x[0, top] == targets[None, :]
        return (is_needle & copied).float().mean(-1)

    return {layer: v.cpu().numpy() for layer, v in row_probs(model, x, rows, reduce=reduce).items()}


def run(ctx: ProbeContext) -> dict:
    p = ctx.params
    samples = samples_for(ctx)
    adapter = adapter_for(ctx.model)
    plans, heads = adapter.current_plans(), adapter.info().num_heads
    total: dict[int, np.ndarray] = {}
    for n, s in enumerate(samples):
        ctx.progress(n / len(samples), f"retrieval heads: length {s.length} depth {s.depth:.2f}")
        scores = sample_scores(ctx.model, ctx.lm.codec, s.prompt, s.answer, s.answer_spans, p.metric, ctx.lm.device)
        for layer, v in scores.items():
            total[layer] = total.get(layer, 0) + v
    rows = {k: [] for k in ("layer", "head", "layer_type", "score", "n_samples", "metric")}
    for layer, plan in enumerate(plans):
        n_heads = len(total[layer]) if layer in total else heads[layer]
        for h in range(n_heads):
            score = float(total[layer][h] / len(samples)) if layer in total else None
            for k, v in (("layer", layer), ("head", h), ("layer_type", plan.kind), ("score", score),
                         ("n_samples", len(samples)), ("metric", p.metric)):
                rows[k].append(v)
    ctx.meta.update(n_samples=len(samples))
    return {"head_scores": rows}
