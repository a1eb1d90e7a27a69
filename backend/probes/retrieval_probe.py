"""retrieval_probe probe: in which layer does the needle's value become readable at the query?

RULER-style single-needle prompts (``backend.data.synthetic``, task ``niah``) whose magic number is one
of 8 classes: the ``easy`` set (8 far-apart numbers) or the ``hard`` set (8 near-duplicates that differ
in the last digit only, so only exact recall separates them). Features: the hidden state of the last
prompt token after each layer (``hidden``; layer -1 is the input of layer 0, the embeddings) and the
layer's own contribution, output minus input (``delta``). A logistic regression (scikit-learn:
standardised features, L2 with inverse strength ``c``, an 80/20 stratified split with ``seed``) predicts
the class; its test accuracy per layer is the row (chance: 1/8).

Hidden states come from hooks on the adapter's decoder layers (``adapter.layers()``): a pre-hook keeps
the layer's input at the last position, a hook its output, so only [layers, hidden] numbers are kept
per prompt (never the whole sequence).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from backend.data.synthetic import make_sample
from backend.probes.context import ProbeContext
from models.adapters import adapter_for

N_CLASSES = 8
MAGIC = {
    "easy": ("1048576", "2718281", "3141592", "4669201", "5772156", "6180339", "7071067", "8314462"),
    "hard": tuple(f"472930{d}" for d in range(1, 9)),
}
TEST_SIZE = 0.2


def _tensor(x) -> torch.Tensor:
    return x[0] if isinstance(x, tuple | list) else x


@contextlib.contextmanager
def last_token_states(model: torch.nn.Module) -> Iterator[dict[int, tuple]]:
    """Inside the block, each forward records {layer: (input, output)} at the last position (batch 0)."""
    rec: dict[int, tuple] = {}
    handles = []
    for i, layer in enumerate(adapter_for(model).layers()):
        def pre(mod, args, kwargs, i=i):
            x = args[0] if args else kwargs["hidden_states"]
            rec[i] = (x[0, -1].detach().float().cpu(),)

        def post(mod, args, out, i=i):
            rec[i] = (rec[i][0], _tensor(out)[0, -1].detach().float().cpu())

        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(layer.register_forward_hook(post))
    try:
        yield rec
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def features(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, np.ndarray]:
    """{"hidden": [layers + 1, H] (row 0 = the embeddings), "delta": [layers, H]} at the last position."""
    with last_token_states(model) as rec:
        adapter_for(model).decoder()(input_ids=ids)
    n = len(rec)
    hidden = [rec[0][0]] + [rec[i][1] for i in range(n)]
    delta = [rec[i][1] - rec[i][0] for i in range(n)]
    return {"hidden": torch.stack(hidden).numpy(), "delta": torch.stack(delta).numpy()}


def probe_accuracy(x: np.ndarray, y: np.ndarray, c: float, seed: int) -> tuple[float, int, int]:
    """(test accuracy, n_train, n_test) of a standardised logistic regression on an 80/20 stratified split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr, xte, ytr, yte = train_test_split(x, y, test_size=TEST_SIZE, stratify=y, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
    clf.fit(xtr, ytr)
    return float(clf.score(xte, yte)), len(ytr), len(yte)


def prompts(ctx: ProbeContext, which: str) -> list[tuple[str, int]]:
    """(prompt, class) for ``per_class`` prompts per class; depths spread evenly, keys random."""
    p = ctx.params
    out = []
    for k, value in enumerate(MAGIC[which]):
        for j in range(p.per_class):
            depth = (j + 0.5) / p.per_class
            # the class's value is placed before the haystack is fitted: another value can tokenise to more
            # tokens, and a prompt over ``length`` would run in the next length bucket of the compiled GPU
            # attention (a recompile for new data)
            s = make_sample("niah", ctx.lm.codec.count, p.length, depth, sample=k * p.per_class + j, seed=p.seed,
                            haystack=p.haystack, docs=ctx.docs, value=value)
            out.append((s.prompt, k))
    return out


def run(ctx: ProbeContext) -> dict:
    p = ctx.params
    kinds = adapter_for(ctx.model).info().layer_types
    rows: dict[str, list] = {k: [] for k in ("set", "layer", "layer_type", "feature", "accuracy", "n_train",
                                             "n_test", "chance")}
    total = len(p.sets) * N_CLASSES * p.per_class
    done = 0
    for which in p.sets:
        feats: dict[str, list] = {"hidden": [], "delta": []}
        labels = []
        for prompt, k in prompts(ctx, which):
            ctx.progress(done / total, f"retrieval probe: {which} set, prompt {done + 1}/{total}")
            f = features(ctx.model, ctx.ids(ctx.lm.codec.encode(prompt).ids))
            for name in feats:
                feats[name].append(f[name])
            labels.append(k)
            done += 1
        y = np.array(labels)
        for name, stack in feats.items():
            x = np.stack(stack)  # [samples, layers(+1), H]
            first = -1 if name == "hidden" else 0
            for j in range(x.shape[1]):
                layer = first + j
                acc, n_tr, n_te = probe_accuracy(x[:, j], y, p.c, p.seed)
                for col, v in (("set", which), ("layer", layer),
                               ("layer_type", "embedding" if layer < 0 else kinds[layer]), ("feature", name),
                               ("accuracy", acc), ("n_train", n_tr), ("n_test", n_te), ("chance", 1 / N_CLASSES)):
                    rows[col].append(v)
    ctx.meta.update(n_prompts=total, best={s: max((a for a, w, f in zip(rows["accuracy"], rows["set"], rows["feature"])
                                                   if w == s and f == "hidden"), default=None) for s in p.sets})
    return {"layer_probe": rows}
