"""qk_distance probe: how far each full-attention head's Q and K weights are from their final values,
over the checkpoints of the model directory (format: :mod:`backend.checkpoints`).

Per full-attention layer, query head h and checkpoint t: q_dist = ||Q_h(t) - Q_h(final)||_F /
||Q_h(final)||_F on the head's rows of q_proj, and k_dist the same on the rows of its kv head
(h // (heads / kv heads), shared under GQA). head_dim = q rows / query heads (the loaded config's
heads, through the adapter), never hidden / heads. Distances are exact functions of the stored
weights (no data, no ablation: an ablation changes no weight).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from backend.checkpoints import DIR, series
from backend.probes.context import ProbeContext, ProbeInputError
from models.adapters import adapter_for
from models.plan import FULL


def head_slices(q: torch.Tensor, k: torch.Tensor, n_heads: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """q [H*D, hidden], k [Hkv*D, hidden] -> ([H, D, hidden], [Hkv, D, hidden], group size H / Hkv)."""
    if q.shape[0] % n_heads:
        raise ValueError(f"q_proj: {q.shape[0]} rows do not split into {n_heads} heads")
    d = q.shape[0] // n_heads
    if k.shape[0] % d or n_heads % (k.shape[0] // d):
        raise ValueError(f"k_proj: {k.shape[0]} rows are not a whole number of kv heads of head_dim {d} "
                         f"dividing {n_heads} query heads")
    n_kv = k.shape[0] // d
    return q.reshape(n_heads, d, -1), k.reshape(n_kv, d, -1), n_heads // n_kv


def distances(w: torch.Tensor, final: torch.Tensor) -> np.ndarray:
    """||w_h - final_h||_F / ||final_h||_F per head (first dim), float64."""
    w, final = w.double(), final.double()
    return ((w - final).flatten(1).norm(dim=1) / final.flatten(1).norm(dim=1)).numpy()


def distances_naive(q, k, q_final, k_final, n_heads: int) -> list[tuple[int, int, float, float]]:
    """Reference: (head, kv_head, q_dist, k_dist) by explicit row slices, one head at a time."""
    d = q_final.shape[0] // n_heads
    group = n_heads // (k_final.shape[0] // d)
    out = []
    for h in range(n_heads):
        g = h // group
        qs, qf = q[h * d:(h + 1) * d].double(), q_final[h * d:(h + 1) * d].double()
        ks, kf = k[g * d:(g + 1) * d].double(), k_final[g * d:(g + 1) * d].double()
        out.append((h, g, float(torch.linalg.norm(qs - qf) / torch.linalg.norm(qf)),
                    float(torch.linalg.norm(ks - kf) / torch.linalg.norm(kf))))
    return out


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def run(ctx: ProbeContext) -> dict:
    info = adapter_for(ctx.model).info()
    ckpts = series(ctx.lm.ref.path)
    if len(ckpts) < 2:
        raise ProbeInputError(f"model: {ctx.spec.model} has no checkpoint series ({DIR}/step_<N>.safetensors "
                              "with the full-attention layers' q_proj/k_proj weights, two or more)")
    full = [i for i, t in enumerate(info.layer_types) if t == FULL]
    layers = list(ctx.params.layers) or [i for i in full if i in ckpts[-1].layers]
    bad = [i for i in layers if i not in full or any(i not in c.layers for c in ckpts)]
    if bad or not layers:
        raise ProbeInputError(f"params.layers: {bad or layers} must be full-attention layers present in every "
                              f"checkpoint; full-attention layers: {full}, in the final checkpoint: "
                              f"{list(ckpts[-1].layers)}")
    final = _load(ckpts[-1].path)
    rows: dict[str, list] = {k: [] for k in ("layer", "head", "kv_head", "step", "tokens", "q_dist", "k_dist")}
    for n, c in enumerate(ckpts):
        ctx.progress(n / len(ckpts), f"Q/K distance: step {c.step}")
        w = final if c is ckpts[-1] else _load(c.path)
        for i in layers:
            key_q, key_k = f"layers.{i}.q_proj.weight", f"layers.{i}.k_proj.weight"
            qf, kf, group = head_slices(final[key_q], final[key_k], info.num_heads[i])
            q, k, _ = head_slices(w[key_q], w[key_k], info.num_heads[i])
            dq, dk = distances(q, qf), distances(k, kf)
            for h in range(info.num_heads[i]):
                for col, v in (("layer", i), ("head", h), ("kv_head", h // group), ("step", c.step),
                               ("tokens", c.tokens), ("q_dist", float(dq[h])), ("k_dist", float(dk[h // group]))):
                    rows[col].append(v)
    ctx.meta.update(steps=[c.step for c in ckpts], layers=layers)
    return {"qk_distance": rows}


def save_qk_checkpoint(model: torch.nn.Module, directory: str | Path, step: int, tokens: int | None = None) -> Path:
    """Write the full-attention layers' q_proj/k_proj weights of ``model`` as ``<directory>/qk/
    step_<step>.safetensors`` (the series format of :mod:`backend.checkpoints`, the zoo trainer's; what a
    trainer of any model calls at each evaluation point). The attention modules come from the adapter;
    their ``q_proj``/``k_proj`` (the projection names of every supported family) are read."""
    from safetensors.torch import save_file

    adapter = adapter_for(model)
    tensors = {}
    for i, kind in enumerate(adapter.info().layer_types):
        if kind != FULL:
            continue
        attn = adapter.attention_module(i)
        for name in ("q_proj", "k_proj"):
            proj = getattr(attn, name, None)
            if proj is None:
                raise ValueError(f"model: layer {i}'s attention has no {name} (fused projections are not supported)")
            tensors[f"layers.{i}.{name}.weight"] = proj.weight.detach().float().cpu().contiguous()
    out = Path(directory) / DIR / f"step_{int(step):06d}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"step": str(int(step)), **({"tokens": str(int(tokens))} if tokens is not None else {})}
    tmp = out.with_name(out.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(out)
    return out
