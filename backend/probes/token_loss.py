"""token_loss probe: per-token NLL with positions, and the loss-vs-position curve."""

from __future__ import annotations

import numpy as np

from backend.forward import token_nll
from backend.probes.context import ProbeContext, concat, encode_doc, position_buckets, token_rows


def run(ctx: ProbeContext) -> dict:
    p = ctx.params
    rows, all_pos, all_nll = [], [], []
    for i, doc in enumerate(ctx.docs):
        ctx.progress(i / len(ctx.docs), f"document {i + 1}/{len(ctx.docs)}")
        ids, offsets, _ = encode_doc(ctx.lm, doc.text, p.max_tokens)
        nll = token_nll(ctx.model, ctx.ids(ids))[0].cpu().numpy()
        rows.append(token_rows(ctx.lm, i, ids, offsets, nll))
        all_pos.append(np.arange(1, len(ids)))
        all_nll.append(nll)
    pos, nll = np.concatenate(all_pos), np.concatenate(all_nll)
    ctx.meta.update(mean_nll=float(nll.mean()), ppl=float(np.exp(nll.mean())), n_tokens=int(len(nll)))
    return {"token_loss": concat(rows), "position_loss": position_buckets(pos, nll, p.bucket)}
