"""attention_rows probe: top-k attended keys (with weights) and entropy for chosen heads/queries.

Query positions may be negative (counted from the end of each document). Only the chosen rows of
attention are computed (backend.attention_probe), so this works at long context.
"""

from __future__ import annotations

from backend.attention_probe import row_probs
from backend.probes.context import ProbeContext, ProbeInputError, encode_doc
from kernels.attention_rows import entropy, topk_keys
from models.adapters import adapter_for


def run(ctx: ProbeContext) -> dict:
    p = ctx.params
    plans = adapter_for(ctx.model).current_plans()
    attn = [i for i, pl in enumerate(plans) if pl.is_attention]
    bad = [i for i in p.layers if i not in attn]
    if bad:
        raise ProbeInputError(f"params.layers: {bad} are not attention layers; attention layers: {attn}")
    layers = list(p.layers) or attn
    rows = {k: [] for k in ("layer", "head", "query_pos", "rank", "key_pos", "weight", "token")}
    ent = {k: [] for k in ("layer", "head", "query_pos", "entropy")}
    for d, doc in enumerate(ctx.docs):
        ctx.progress(d / len(ctx.docs), f"attention rows: document {d + 1}/{len(ctx.docs)}")
        ids, _, _ = encode_doc(ctx.lm, doc.text, p.max_tokens)
        qpos = sorted({q if q >= 0 else len(ids) + q for q in p.queries})
        if any(not 0 <= q < len(ids) for q in qpos):
            raise ProbeInputError(f"params.queries: positions {list(p.queries)} out of range for {len(ids)} tokens")
        tokens = ctx.lm.codec.tokens(ids)
        k = min(p.top_k, len(ids))

        def reduce(layer, probs, k=k):  # probs [H, nq, L]
            w, idx = topk_keys(probs[None], k)
            return w[0].cpu(), idx[0].cpu(), entropy(probs[None])[0].cpu()

        per_layer = row_probs(ctx.model, ctx.ids(ids), qpos, layers=layers, reduce=reduce)
        for layer, (w, idx, e) in per_layer.items():
            heads = list(p.heads) or list(range(w.shape[0]))
            if any(h >= w.shape[0] for h in heads):
                raise ProbeInputError(f"params.heads: {heads} out of range; layer {layer} has {w.shape[0]} heads")
            for h in heads:
                for qi, q in enumerate(qpos):
                    ent["layer"].append(layer), ent["head"].append(h)
                    ent["query_pos"].append(q), ent["entropy"].append(float(e[h, qi]))
                    for r in range(k):
                        kp = int(idx[h, qi, r])
                        for col, v in (("layer", layer), ("head", h), ("query_pos", q), ("rank", r),
                                       ("key_pos", kp), ("weight", float(w[h, qi, r])), ("token", tokens[kp])):
                            rows[col].append(v)
    return {"attention_rows": rows, "head_entropy": ent}
