"""LongPPL maths (Fang et al., ICLR 2025), kept separate from the probe plumbing so it is testable.

Target token t (1 <= t < L) is predicted from tokens < t. Its *long* log-probability uses the whole
prefix. Its *short* log-probability uses a truncated context, laid out as in the authors' reference
code: window j covers tokens [j*stride, j*stride + trunc_len + stride) and scores the targets in
[j*stride + trunc_len, j*stride + trunc_len + stride), so every target t >= trunc_len is scored
once, seeing between trunc_len and trunc_len + stride - 1 tokens of context. Targets t < trunc_len
are never key tokens. Key token: log p_long - log p_short > alpha and log p_long > beta.
Key tokens travel as character spans; a token of the evaluated model (any tokenizer) is a key token
when its character interval lies inside one of the spans, adjacent spans merged first.
"""

from __future__ import annotations

import bisect

import numpy as np
import torch
import torch.nn.functional as F

from backend.forward import hidden_states, own_logits, plain
from models.adapters import adapter_for


def windows(n_tokens: int, trunc_len: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(start, end, first_target, last_target_exclusive) of every short-context window."""
    if not 0 < stride < trunc_len:
        raise ValueError(f"params.stride: must be in [1, trunc_len-1] (trunc_len={trunc_len}), got {stride}")
    return [(s, min(n_tokens, s + trunc_len + stride), s + trunc_len, min(n_tokens, s + trunc_len + stride))
            for s in range(0, n_tokens - trunc_len, stride)]


@torch.inference_mode()
def short_logprobs_naive(model, ids: torch.Tensor, trunc_len: int, stride: int) -> np.ndarray:
    """Slice-by-slice reference: one forward per window with full logits. NaN where t < trunc_len.
    Returned array index t-1 holds target t."""
    n = ids.shape[1]
    out = np.full(n - 1, np.nan)
    for s, e, t0, t1 in windows(n, trunc_len, stride):
        logits = model(input_ids=ids[:, s:e]).logits[0].float()
        lp = F.log_softmax(logits, -1)
        tgt = ids[0, t0:t1]
        out[t0 - 1 : t1 - 1] = lp[t0 - s - 1 : t1 - s - 1].gather(-1, tgt[:, None])[:, 0].cpu().numpy()
    return out


@torch.inference_mode()
def short_logprobs(model, ids: torch.Tensor, trunc_len: int, stride: int, batch: int = 8) -> np.ndarray:
    """Fast path: full-length windows batched together; the LM head runs only on scored positions (a model
    the adapters do not know: its own forward's logits, ``backend.forward.own_logits``)."""
    adapter, own = adapter_for(model), plain(model)
    n = ids.shape[1]
    out = np.full(n - 1, np.nan)
    wins = windows(n, trunc_len, stride)
    full = [w for w in wins if w[1] - w[0] == trunc_len + stride]
    rest = [w for w in wins if w[1] - w[0] != trunc_len + stride]
    groups = [full[i : i + batch] for i in range(0, len(full), batch)] + [[w] for w in rest]
    for group in groups:
        x = torch.stack([ids[0, s:e] for s, e, _, _ in group])
        h = own_logits(model, x) if own else hidden_states(model, x)
        for b, (s, _, t0, t1) in enumerate(group):
            scored = h[b, t0 - s - 1 : t1 - s - 1]
            logits = (scored if own else adapter.logits(scored)).float()
            lp = F.log_softmax(logits, -1).gather(-1, ids[0, t0:t1, None])[:, 0]
            out[t0 - 1 : t1 - 1] = lp.cpu().numpy()
    return out


def key_mask(logp_long: np.ndarray, logp_short: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Boolean mask over targets (index t-1): LSD > alpha and log p_long > beta; NaN short = not key."""
    lsd = np.nan_to_num(logp_long - logp_short, nan=-np.inf)
    return (lsd > alpha) & (logp_long > beta)


def merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted spans with overlapping or adjacent ones merged."""
    out: list[list[int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def spans_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> np.ndarray:
    """Which tokens (by character interval) lie inside a key span (after merging adjacent spans)."""
    merged = merge_spans(spans)
    starts = [a for a, _ in merged]
    out = np.zeros(len(offsets), dtype=bool)
    for i, (a, b) in enumerate(offsets):
        k = bisect.bisect_right(starts, a) - 1  # last span starting at or before a
        out[i] = b > a and k >= 0 and b <= merged[k][1]
    return out


def longppl_value(nll: np.ndarray, key: np.ndarray) -> float | None:
    """exp(mean NLL over key tokens), None when there is no key token."""
    return float(np.exp(nll[key].mean())) if key.any() else None


def corpus_longppl(n_key: list[int], values: list[float | None]) -> float | None:
    """Pooled: exp(sum n_key * ln LongPPL_doc / sum n_key) over documents with key tokens, i.e. exp of
    the mean NLL over all key tokens of all documents."""
    pairs = [(n, v) for n, v in zip(n_key, values) if n and v is not None]
    if not pairs:
        return None
    return float(np.exp(sum(n * np.log(v) for n, v in pairs) / sum(n for n, _ in pairs)))


def corpus_longppl_reference(n_key: list[int], values: list[float | None]) -> float | None:
    """The reference's corpus value (Fang et al.'s script): the key-token-weighted arithmetic mean of the
    per-document LongPPL, sum n_key * LongPPL_doc / sum n_key, over documents with key tokens."""
    pairs = [(n, v) for n, v in zip(n_key, values) if n and v is not None]
    if not pairs:
        return None
    return float(sum(n * v for n, v in pairs) / sum(n for n, _ in pairs))


def corpus_ppl(n_tokens: list[int], ppl: list[float], definition: str) -> float:
    """Corpus PPL over documents: ``reference`` = token-weighted arithmetic mean of per-document PPL;
    ``pooled`` = exp of the mean NLL over all tokens (token-weighted geometric mean)."""
    n, v = np.asarray(n_tokens, dtype=np.float64), np.asarray(ppl, dtype=np.float64)
    if definition == "reference":
        return float((n * v).sum() / n.sum())
    return float(np.exp((n * np.log(v)).sum() / n.sum()))


CORPUS_DEFINITIONS = ("reference", "pooled")  # reference first: the value compared with the literature


def corpus_rows(n_tokens: list[int], n_key: list[int], ppl: list[float], longppl: list[float | None]) -> dict:
    """The ``longppl_corpus`` table from the per-document values: one row per definition."""
    lp = {"reference": corpus_longppl_reference(n_key, longppl), "pooled": corpus_longppl(n_key, longppl)}
    out: dict[str, list] = {k: [] for k in ("definition", "n_docs", "n_tokens", "n_key", "ppl", "longppl")}
    for d in CORPUS_DEFINITIONS:
        for k, v in (("definition", d), ("n_docs", len(n_tokens)), ("n_tokens", int(sum(n_tokens))),
                     ("n_key", int(sum(n_key))), ("ppl", corpus_ppl(n_tokens, ppl, d)), ("longppl", lp[d])):
            out[k].append(v)
    return out
