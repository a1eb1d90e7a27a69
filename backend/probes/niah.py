"""niah probe: greedy-decoded answers on synthetic NIAH / passkey prompts, exact match per cell.

Exact match: the first whitespace-separated word of the greedy continuation, with surrounding
punctuation stripped, equals the needle value. Decoding recomputes the full sequence each step
(no KV cache), so every ablation, receptive-field limits included, holds at every step.
"""

from __future__ import annotations

from backend.data.synthetic import Sample, first_word, make_grid
from backend.probes.context import ProbeContext
from models.generate import greedy_generate


def samples_for(ctx: ProbeContext) -> list[Sample]:
    p = ctx.params
    return make_grid(p.task, ctx.lm.codec.count, list(p.lengths), list(p.depths), p.samples, seed=p.seed,
                     haystack=p.haystack, docs=ctx.docs)


def run(ctx: ProbeContext) -> dict:
    p = ctx.params
    samples = samples_for(ctx)
    rows = {k: [] for k in ("length", "depth", "sample", "expected", "predicted", "correct")}
    for n, s in enumerate(samples):
        ctx.progress(n / len(samples), f"NIAH length {s.length} depth {s.depth:.2f} sample {s.sample}")
        ids = ctx.lm.codec.encode(s.prompt).ids
        x = ctx.ids(ids)
        out = greedy_generate(ctx.model, x, p.max_new_tokens, eos_id=ctx.lm.codec.eos_id)[0, x.shape[1]:].tolist()
        pred = ctx.lm.codec.decode(out)
        for k, v in (("length", s.length), ("depth", s.depth), ("sample", s.sample), ("expected", s.answer),
                     ("predicted", pred), ("correct", first_word(pred) == s.answer)):
            rows[k].append(v)
    ctx.meta.update(accuracy=sum(rows["correct"]) / max(1, len(samples)), n_samples=len(samples))
    return {"niah": rows}
