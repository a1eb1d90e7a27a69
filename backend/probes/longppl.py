"""key_tokens and longppl probes.

``key_tokens`` runs the evaluator (unablated) and stores key tokens as character spans, so every
ablation of the evaluated model, and any model with another tokenizer, reuses one cached set.
``longppl`` depends on that run (``dependencies``) and scores the ablated model on those spans.
"""

from __future__ import annotations

import numpy as np

from backend.forward import token_nll
from backend.probes.context import ProbeContext, concat, encode_doc, position_buckets, token_rows
from backend.probes.longppl_math import corpus_rows, key_mask, longppl_value, short_logprobs, spans_mask
from backend.spec import RunSpec
from models.plan import ModelInfo

POSITION_BUCKET = 256  # loss-vs-position bucket of the longppl probe (LongPPLParams has no bucket)
_SHARED = ("n_docs", "max_tokens", "trunc_len", "stride", "alpha", "beta")


def run_key_tokens(ctx: ProbeContext) -> dict:
    p = ctx.params
    rows, doc_chars, n_keys = [], [], []
    for i, doc in enumerate(ctx.docs):
        ctx.progress(i / len(ctx.docs), f"key tokens: document {i + 1}/{len(ctx.docs)}")
        ids, offsets, used = encode_doc(ctx.lm, doc.text, p.max_tokens)
        x = ctx.ids(ids)
        logp_long = -token_nll(ctx.model, x)[0].cpu().numpy().astype(np.float64)
        logp_short = short_logprobs(ctx.model, x, p.trunc_len, p.stride)
        key = key_mask(logp_long, logp_short, p.alpha, p.beta)
        t = np.nonzero(key)[0] + 1  # target token indices
        rows.append({
            "doc": [i] * len(t),
            "char_start": [offsets[k][0] for k in t],
            "char_end": [offsets[k][1] for k in t],
            "pos": t.tolist(),
            "score": (logp_long - logp_short)[t - 1].tolist(),
        })
        doc_chars.append(len(used))
        n_keys.append(int(len(t)))
    ctx.meta.update(doc_chars=doc_chars, n_key=n_keys)
    empty = {"doc": [], "char_start": [], "char_end": [], "pos": [], "score": []}
    return {"key_tokens": concat(rows) or empty}


def dependencies(spec: RunSpec, info: ModelInfo | None = None) -> list[RunSpec]:
    """The key-token run LongPPL needs: evaluator (default: this model, unablated), same data."""
    p = spec.typed_params
    params = {k: getattr(p, k) for k in _SHARED}
    return [RunSpec.build(model=p.evaluator or spec.model, probe="key_tokens", data=spec.data, params=params)]


def run_longppl(ctx: ProbeContext) -> dict:
    (dep,) = ctx.deps
    keys = dep.tables["key_tokens"]
    doc_chars = dep.manifest["meta"]["doc_chars"]
    spans_by_doc: dict[int, list[tuple[int, int]]] = {}
    for d, a, b in zip(keys["doc"], keys["char_start"], keys["char_end"]):
        spans_by_doc.setdefault(int(d), []).append((int(a), int(b)))
    out = {k: [] for k in ("doc", "n_tokens", "n_key", "ppl", "longppl")}
    tok_rows, all_pos, all_nll = [], [], []
    for i, doc in enumerate(ctx.docs):
        ctx.progress(i / len(ctx.docs), f"LongPPL: document {i + 1}/{len(ctx.docs)}")
        text = doc.text[: doc_chars[i]]
        ids, offsets, _ = encode_doc(ctx.lm, text, len(text) + 1)
        nll = token_nll(ctx.model, ctx.ids(ids))[0].cpu().numpy().astype(np.float64)
        key = spans_mask(offsets[1:], sorted(spans_by_doc.get(i, [])))
        for k, v in (("doc", i), ("n_tokens", len(nll)), ("n_key", int(key.sum())),
                     ("ppl", float(np.exp(nll.mean()))), ("longppl", longppl_value(nll, key))):
            out[k].append(v)
        tok_rows.append(token_rows(ctx.lm, i, ids, offsets, nll, key))
        all_pos.append(np.arange(1, len(ids)))
        all_nll.append(nll)
    corpus = corpus_rows(out["n_tokens"], out["n_key"], out["ppl"], out["longppl"])
    ctx.meta.update(corpus_meta(corpus), key_run=dep.run_id)
    return {"longppl": out, "longppl_corpus": corpus, "token_loss": concat(tok_rows),
            "position_loss": position_buckets(np.concatenate(all_pos), np.concatenate(all_nll), POSITION_BUCKET)}


def corpus_meta(corpus: dict) -> dict:
    """Manifest numbers of a longppl run: ``longppl``/``ppl`` by the reference's definition (the values
    compared with the literature), ``longppl_pooled``/``ppl_pooled`` pooled, and ``n_key``."""
    by = {d: i for i, d in enumerate(corpus["definition"])}
    r, p = by["reference"], by["pooled"]
    return {"longppl": corpus["longppl"][r], "ppl": corpus["ppl"][r], "longppl_pooled": corpus["longppl"][p],
            "ppl_pooled": corpus["ppl"][p], "n_key": corpus["n_key"][r]}
