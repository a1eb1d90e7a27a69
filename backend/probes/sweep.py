"""sweep probe: the receptive-field sweep of finding 2.

Each point is its own cached ``longppl`` run: the spec's ablation plus ``rf[<layers>]=k`` where <layers>
are the full-attention layers (``restrict_full``) or the efficient ones, SWA and recurrent
(``restrict_efficient``), plus one unrestricted baseline. The layer groups come from the loaded model's
layer types (its adapter's ``info()``) and are mixer-aware: layers without a token mixer (Nemotron-H's
mlp / moe blocks) belong to neither group, and a model with hybrid layers (Falcon-H1: attention and
Mamba-2 in each layer) is restricted by branch through selector words (``rf[full]=k``: attention
branches and full layers; ``rf[linear]=k`` plus ``swa`` / ``chunked`` where present: the efficient
mixers), since an index would restrict both branches of a layer. This probe only collects the points:
one row per point and metric, ``metric`` = ``longppl`` (undefined, so absent, when the evaluator finds
no key tokens) or ``ppl`` (all tokens; always present), by the reference's corpus definition (Fang et
al.'s script: weighted arithmetic means of the per-document values), and ``longppl_pooled`` /
``ppl_pooled`` (exp of the mean NLL over all key tokens / all tokens).
"""

from __future__ import annotations

from backend.probes.context import ProbeContext
from backend.spec import RunSpec
from models.ablation import Ablation
from models.plan import FULL, HYBRID, SELECTOR_WORDS, ModelInfo, branches

_LONGPPL = ("n_docs", "max_tokens", "trunc_len", "stride", "alpha", "beta", "evaluator")
# (metric, key of the longppl run's manifest meta): the reference's corpus definition, then pooled
METRICS = (("longppl", "longppl"), ("ppl", "ppl"), ("longppl_pooled", "longppl_pooled"), ("ppl_pooled", "ppl_pooled"))


def _selector(idx: list[int]) -> str:
    return ",".join(str(i) for i in idx)


def groups(info: ModelInfo) -> dict[str, list[str]]:
    """group -> the receptive-field selectors that restrict it (empty: the model has no such layer)."""
    kinds = info.layer_types
    if HYBRID in kinds:
        words = {"full": ["full"], "efficient": ["swa", "chunked", "linear"]}
        return {g: [w for w in ws if any(SELECTOR_WORDS[w](t) for t in kinds)] for g, ws in words.items()}
    full = [i for i, t in enumerate(kinds) if t == FULL]
    efficient = [i for i, t in enumerate(kinds) if t != FULL and branches(t)]
    return {"full": [_selector(full)] if full else [], "efficient": [_selector(efficient)] if efficient else []}


def points(spec: RunSpec, info: ModelInfo) -> list[tuple[str, int | None, RunSpec]]:
    """(series name, k, longppl spec) for every point, the baseline (k None) first."""
    p = spec.typed_params
    selectors = groups(info)
    params = {k: getattr(p, k) for k in _LONGPPL if getattr(p, k) is not None}
    out = [("baseline", None, RunSpec.build(model=spec.model, probe="longppl", data=spec.data,
                                            ablation=spec.ablation, params=params))]
    for r in p.restrict:
        if not selectors[r]:
            continue
        for k in p.ks:
            extra = Ablation(receptive_field=dict.fromkeys(selectors[r], k))
            out.append((f"restrict_{r}", k, RunSpec.build(model=spec.model, probe="longppl", data=spec.data,
                                                          ablation=spec.ablation.merge(extra), params=params)))
    return out


def dependencies(spec: RunSpec, info: ModelInfo) -> list[RunSpec]:
    return [s for _, _, s in points(spec, info)]


def run(ctx: ProbeContext) -> dict:
    rows = {"name": [], "metric": [], "x": [], "y": [], "label": []}
    for (name, k, s), dep in zip(points(ctx.spec, ctx.adapter.info()), ctx.deps, strict=True):
        meta = dep.manifest["meta"]
        x = float(k if k is not None else ctx.params.max_tokens)
        for metric, key in METRICS:
            if meta.get(key) is None:
                continue
            for col, v in (("name", name), ("metric", metric), ("x", x), ("y", float(meta[key])),
                           ("label", s.ablation.to_text() or "unrestricted")):
                rows[col].append(v)
    ctx.meta.update(points=len(rows["x"]))
    return {"sweep": rows}
