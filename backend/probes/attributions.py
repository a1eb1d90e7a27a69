"""attributions probe: Integrated Gradients over the input embeddings for the answer of a synthetic
prompt (which context tokens make the model predict the passkey / magic number).

One sample of ``backend.data.synthetic`` (task, length, depth, sample, seed, haystack). The input is the
prompt up to the token before the answer's first token; the target F(e) = log p(answer's first token)
at the last position. Attribution of token i (captum ``IntegratedGradients``, Gauss-Legendre with
``n_steps`` points) = sum over the embedding dimensions of (e_i - b_i) * integral of dF/de_i along the
straight path from the baseline b; the attributions sum to F(e) - F(b) up to the convergence delta
recorded in the manifest. Baseline ``mean`` (default): the mean row of the input embedding matrix at
every position; ``zero``: zero embeddings (the path then crosses the pre-norm's singular point at 0,
where F jumps, and few steps miss the jump: completeness fails). :func:`integrated_gradients_naive` is the by-hand
reference (right Riemann sum) the tests compare captum with.
"""

from __future__ import annotations

import numpy as np
import torch

from backend.data.synthetic import make_sample
from backend.probes.context import ProbeContext
from backend.probes.retrieval_heads import needle_positions
from models.adapters import adapter_for


def target_function(model: torch.nn.Module, target: int):
    """F(embeds [B, L, H]) = log p(target) at the last position, per batch row (what IG explains)."""
    adapter = adapter_for(model)
    dtype = next(model.parameters()).dtype

    def f(embeds: torch.Tensor) -> torch.Tensor:
        h = adapter.decoder()(inputs_embeds=embeds.to(dtype)).last_hidden_state[:, -1]
        return torch.log_softmax(adapter.lm_head()(h).float(), -1)[:, target]

    return f


def embeddings(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return adapter_for(model).decoder().get_input_embeddings()(ids).detach().float()


def baseline_for(model: torch.nn.Module, x: torch.Tensor, kind: str) -> torch.Tensor:
    """The IG baseline of ``x`` [1, L, H]: zeros, or the mean embedding row at every position."""
    if kind == "zero":
        return torch.zeros_like(x)
    mean = adapter_for(model).decoder().get_input_embeddings().weight.detach().float().mean(0)
    return mean.expand_as(x).clone()


def integrated_gradients(f, x: torch.Tensor, n_steps: int, method: str = "gausslegendre", batch: int = 1,
                         baseline: torch.Tensor | None = None):
    """(attributions [L] summed over the embedding dimension, convergence delta), by captum."""
    from captum.attr import IntegratedGradients

    base = torch.zeros_like(x) if baseline is None else baseline
    with torch.enable_grad():
        attr, delta = IntegratedGradients(f).attribute(
            x, baselines=base, n_steps=n_steps, method=method, internal_batch_size=batch,
            return_convergence_delta=True)
    return attr[0].sum(-1).detach().cpu().numpy().astype(np.float64), float(delta.abs().max())


def integrated_gradients_naive(f, x: torch.Tensor, n_steps: int, baseline: torch.Tensor | None = None) -> np.ndarray:
    """Reference: right Riemann sum, (x - b) * mean_k dF/dx at b + (x - b) * k / n_steps, k = 1..n_steps."""
    base = torch.zeros_like(x) if baseline is None else baseline
    total = torch.zeros_like(x)
    for k in range(1, n_steps + 1):
        xk = (base + (x - base) * k / n_steps).requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(f(xk).sum(), xk)
        total += g
    return ((x - base) * total / n_steps)[0].sum(-1).detach().cpu().numpy().astype(np.float64)


def run(ctx: ProbeContext) -> dict:
    p = ctx.params
    codec = ctx.lm.codec
    s = make_sample(p.task, codec.count, p.length, p.depth, sample=p.sample, seed=p.seed, haystack=p.haystack,
                    docs=ctx.docs)
    enc = codec.encode(s.prompt + " " + s.answer)
    start = len(s.prompt) + 1  # the answer's first character
    first = next(i for i, (a, b) in enumerate(enc.offsets) if b > start and b > a)
    ids, offsets, target = enc.ids[:first], enc.offsets[:first], enc.ids[first]
    ctx.progress(0.0, f"integrated gradients: {len(ids)} tokens, {p.n_steps} steps")
    x = embeddings(ctx.model, ctx.ids(ids))
    f = target_function(ctx.model, target)
    base = baseline_for(ctx.model, x, p.baseline)
    attr, delta = integrated_gradients(f, x, p.n_steps, baseline=base)
    with torch.no_grad():
        logp, logp0 = float(f(x)[0]), float(f(base)[0])
    needles = set(needle_positions(offsets, s.answer_spans))
    n = len(ids)
    rows = {
        "pos": list(range(n)), "token_id": ids, "token": codec.tokens(ids),
        "char_start": [o[0] for o in offsets], "char_end": [o[1] for o in offsets],
        "attribution": attr.tolist(), "is_needle": [i in needles for i in range(n)],
        "is_target": [i == n - 1 for i in range(n)],
    }
    ctx.meta.update(target_token=codec.tokens([target])[0], target_id=int(target), logp=logp, logp_baseline=logp0,
                    convergence_delta=delta, answer=s.answer, n_tokens=n,
                    needle_share=float(np.abs(attr[sorted(needles)]).sum() / max(np.abs(attr).sum(), 1e-30)))
    return {"attributions": rows}
