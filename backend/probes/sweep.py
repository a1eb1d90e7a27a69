"""sweep probe: the receptive-field sweep of finding 2.

Each point is its own cached ``longppl`` run: the spec's ablation plus ``rf[<layers>]=k`` where
<layers> are the full-attention layers (``restrict_full``) or the efficient ones, SWA and recurrent
(``restrict_efficient``), plus one unrestricted baseline. This probe only collects the points:
LongPPL under the series names above, and PPL (all tokens) under the same names + ``PPL_SUFFIX``
(LongPPL is undefined when the evaluator finds no key tokens; PPL always exists, and the dashboard
charts the two separately).
"""

from __future__ import annotations

from backend import model_refs
from backend.probes.context import ProbeContext
from backend.spec import RunSpec
from models.ablation import Ablation
from models.plan import FULL

PPL_SUFFIX = " (PPL)"  # app/data.py keeps the same literal (the app never imports the backend's probes)
_LONGPPL = ("n_docs", "max_tokens", "trunc_len", "stride", "alpha", "beta", "evaluator")


def _selector(idx: list[int]) -> str:
    return ",".join(str(i) for i in idx)


def points(spec: RunSpec) -> list[tuple[str, int | None, RunSpec]]:
    """(series name, k, longppl spec) for every point, the baseline (k None) first."""
    p = spec.typed_params
    kinds = model_refs.layer_types(model_refs.resolve(spec.model))
    groups = {
        "full": [i for i, t in enumerate(kinds) if t == FULL],
        "efficient": [i for i, t in enumerate(kinds) if t != FULL],
    }
    params = {k: getattr(p, k) for k in _LONGPPL if getattr(p, k) is not None}
    out = [("baseline", None, RunSpec.build(model=spec.model, probe="longppl", data=spec.data,
                                            ablation=spec.ablation, params=params))]
    for r in p.restrict:
        if not groups[r]:
            continue
        for k in p.ks:
            extra = Ablation(receptive_field={_selector(groups[r]): k})
            out.append((f"restrict_{r}", k, RunSpec.build(model=spec.model, probe="longppl", data=spec.data,
                                                          ablation=spec.ablation.merge(extra), params=params)))
    return out


def dependencies(spec: RunSpec) -> list[RunSpec]:
    return [s for _, _, s in points(spec)]


def run(ctx: ProbeContext) -> dict:
    deps = ctx.meta.pop("_deps")
    rows = {"name": [], "x": [], "y": [], "label": []}
    for (name, k, s), dep in zip(points(ctx.spec), deps, strict=True):
        meta = dep.manifest["meta"]
        for series, value in ((name, meta.get("longppl")), (name + PPL_SUFFIX, meta.get("ppl"))):
            if value is None:
                continue
            rows["name"].append(series)
            rows["x"].append(float(k if k is not None else ctx.params.max_tokens))
            rows["y"].append(float(value))
            rows["label"].append(s.ablation.to_text() or "unrestricted")
    ctx.meta.update(points=len(rows["x"]))
    return {"sweep": rows}
