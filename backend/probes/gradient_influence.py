"""gradient_influence probe: how strongly each input position drives the last positions' predictions.

Target (the paper's definition): T = mean over the last ``last`` positions t of sum_v logits[t, v].
Score of input position i: s_i = ||dT / d e_i||_2, with e_i the input embedding of token i (the
ablation applied). Scores are binned by distance from the end, d = L - 1 - i, into log-spaced bins
(``bins_per_octave`` per doubling; the first bins are [0, 1), [1, 2), ...); per bin the mean and max.

Fast path: sum_v logits[t, v] = h_t . (sum_v W_v) (+ sum_v b_v), so the LM head runs on the last
positions only (:func:`target_fast`); the naive reference (:func:`influence_naive`) takes the full
logits. Long inputs on a GPU re-run each decoder layer in the backward pass (activation
checkpointing per layer: :func:`checkpointed_layers`), so 32K tokens fit one card.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from backend.probes.context import ProbeContext, encode_doc
from models.adapters import adapter_for

CHECKPOINT_FROM = 8192  # tokens: from here on (on a GPU) decoder layers are checkpointed


def distance_bins(n: int, per_octave: int) -> list[tuple[int, int]]:
    """Log-spaced bins [a, b) covering distances 0..n-1: edges 0 and round(2**(k / per_octave)) - 1 for
    k = 1, 2, ... (each at least one more than the one before), so distance + 1 is binned by octaves."""
    edges, k = [0], 0
    while edges[-1] < n:
        k += 1
        e = min(n, max(edges[-1] + 1, int(round(2 ** (k / per_octave))) - 1))
        edges.append(e)
    return list(zip(edges[:-1], edges[1:], strict=True))


def bin_scores(scores: np.ndarray, per_octave: int) -> dict[str, list]:
    """Scores per input position -> rows per distance bin (distance from the last position)."""
    by_distance = scores[::-1]  # index d = distance from the end
    out: dict[str, list] = {"bin_start": [], "bin_end": [], "mean": [], "max": [], "n": []}
    for a, b in distance_bins(len(scores), per_octave):
        seg = by_distance[a:b]
        for k, v in (("bin_start", a), ("bin_end", b), ("mean", float(seg.mean())), ("max", float(seg.max())),
                     ("n", b - a)):
            out[k].append(v)
    return out


@contextlib.contextmanager
def checkpointed_layers(model: torch.nn.Module, on: bool) -> Iterator[None]:
    """Inside the block, every decoder layer (``adapter.layers()``) recomputes its activations in the
    backward pass instead of keeping them (nothing changes when ``on`` is false)."""
    if not on:
        yield
        return
    layers = list(adapter_for(model).layers())
    for layer in layers:
        inner = layer.forward
        layer.forward = lambda *a, _f=inner, **k: checkpoint(_f, *a, use_reentrant=False, **k)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward  # the instance attribute: the class's forward is back


def _embeds(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    emb = adapter_for(model).decoder().get_input_embeddings()
    return emb(ids).detach().float().requires_grad_(True)


def target_fast(model: torch.nn.Module, embeds: torch.Tensor, last: int) -> torch.Tensor:
    """T(embeds): the decoder on all positions, the summed LM head on the last ``last`` only."""
    adapter = adapter_for(model)
    dtype = next(model.parameters()).dtype
    h = adapter.decoder()(inputs_embeds=embeds.to(dtype)).last_hidden_state[0, -last:]
    head = adapter.lm_head()
    w = head.weight.sum(0)
    t = h.float() @ w.float()
    if getattr(head, "bias", None) is not None:
        t = t + head.bias.float().sum()
    return t.mean()


def influence_scores(model: torch.nn.Module, ids: torch.Tensor, last: int, checkpointing: bool = False) -> np.ndarray:
    """||dT/de_i||_2 for every input position i (fast path)."""
    emb = _embeds(model, ids)
    with torch.enable_grad(), checkpointed_layers(model, checkpointing):
        (grad,) = torch.autograd.grad(target_fast(model, emb, last), emb)
    return grad[0].float().norm(dim=-1).cpu().numpy().astype(np.float64)


def influence_naive(model: torch.nn.Module, ids: torch.Tensor, last: int) -> np.ndarray:
    """Reference: the full forward with full-vocabulary logits, T = logits[-last:].sum(-1).mean()."""
    emb = _embeds(model, ids)
    dtype = next(model.parameters()).dtype
    with torch.enable_grad():
        logits = model(inputs_embeds=emb.to(dtype)).logits[0].float()
        (grad,) = torch.autograd.grad(logits[-last:].sum(-1).mean(), emb)
    return grad[0].norm(dim=-1).cpu().numpy().astype(np.float64)


def run(ctx: ProbeContext) -> dict:
    p = ctx.params
    rows: dict[str, list] = {k: [] for k in ("doc", "bin_start", "bin_end", "mean", "max", "n")}
    lengths = []
    for i, doc in enumerate(ctx.docs):
        ctx.progress(i / len(ctx.docs), f"gradient influence: document {i + 1}/{len(ctx.docs)}")
        ids, _, _ = encode_doc(ctx.lm, doc.text, p.max_tokens)
        if len(ids) <= p.last:
            continue
        on_gpu = ctx.lm.device.type == "cuda"
        scores = influence_scores(ctx.model, ctx.ids(ids), p.last, checkpointing=on_gpu and len(ids) >= CHECKPOINT_FROM)
        b = bin_scores(scores, p.bins_per_octave)
        rows["doc"] += [i] * len(b["n"])
        for k, v in b.items():
            rows[k] += v
        lengths.append(len(ids))
    ctx.meta.update(n_docs=len(lengths), lengths=lengths, last=p.last,
                    octaves=math.log2(max(lengths)) if lengths else None)
    return {"influence": rows}
