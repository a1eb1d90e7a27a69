"""Test double of the backend: synthetic traces and a fake client (tests and benchmarks only; the app
ships no fake backend).

:class:`FakeClient` computes nothing: it writes deterministic synthetic traces (clearly fake numbers,
``"fake": true`` in the run's meta) for the submitted spec into the store. Tests install it through
``app.run_panel.CLIENT_FACTORY`` (in-process: AppTest), or serve ``tests/app/fake_app.py`` (a
``streamlit run`` child process). :func:`write_synthetic` writes one such run directly, keyed by the
canonical RunSpec like the runner's runs. Layer types come from the model name: ``tiny/<FSMG pattern>``
letters, else words in the ref (``full``/``swa``/``mamba``/``gdn``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from backend.client import RunFailed
from backend.limits import cpu_limits
from backend.spec import RunSpec
from backend.store import TraceStore
from models.plan import LAYER_LETTERS

KIND_OF = LAYER_LETTERS
WORDS = [
    "the",
    " model",
    " attends",
    " to",
    " tokens",
    " far",
    " back",
    ",",
    " and",
    " a",
    " key",
    " is",
    " 4821",
    ".",
    "\n",
    " <b>bold?</b>",
    " &amp;",
    " <script>alert(1)</script>",
    " é",
    " 🙂",
]
PROBE_TABLES = {
    "token_loss": ("token_loss", "position_loss"),
    "longppl": ("longppl", "key_tokens"),
    "niah": ("niah",),
    "retrieval_heads": ("head_scores",),
    "attention_rows": ("attention_rows", "head_entropy"),
    "sweep": ("sweep",),
    "gradient_influence": ("influence",),
    "retrieval_probe": ("layer_probe",),
    "qk_distance": ("qk_distance",),
    "attributions": ("attributions",),
}


def layer_types(model: str) -> list[str]:
    name = model.lower()
    if name.startswith("tiny/"):
        return [KIND_OF[c] for c in model[5:] if c in KIND_OF] or ["full_attention"]
    mixer = "G" if "gdn" in name else "M" if "mamba" in name else "F" if "full" in name else "S"
    return [KIND_OF[c] for c in (mixer * 3 + "F") * 2]


def _seed(*parts: Any) -> int:
    return int(hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8], 16)


def _penalty(ablation: str) -> float:
    return 0.6 if "rf[full]" in ablation or "pe[full]" in ablation else 0.1 if ablation else 0.0


def synthetic_tables(
    probe: str,
    model: str,
    ablation: str = "",
    *,
    n_docs: int = 2,
    n_tokens: int = 600,
    bucket: int = 64,
    seed: int = 0,
    formation: bool = False,
) -> dict[str, dict[str, Any]]:
    """Plausible-looking, deterministic tables of ``probe`` (numbers are fake); ``formation``: a sweep of
    retrieval-head formation over training steps instead of a receptive-field sweep."""
    rng = np.random.default_rng(_seed(probe, model, ablation, seed))
    text_rng = np.random.default_rng(_seed(model, seed))  # the text does not depend on the ablation
    kinds = layer_types(model)
    pen = _penalty(ablation)
    out: dict[str, dict[str, Any]] = {}
    if probe in ("token_loss", "longppl"):
        docs, pos, tok, nll = [], [], [], []
        for d in range(n_docs):
            p = np.arange(n_tokens)
            loss = 2.0 + 3.0 * np.exp(-p / 150.0) + pen * (p > 64) + rng.gamma(2.0, 0.4, n_tokens)
            docs.append(np.full(n_tokens, d))
            pos.append(p)
            tok.append(text_rng.integers(0, len(WORDS), n_tokens))
            nll.append(loss)
        doc, p, t, n = (np.concatenate(x) for x in (docs, pos, tok, nll))
        text = [WORDS[i] for i in t]
        lens = np.array([len(s) for s in text])
        ends = np.concatenate([np.cumsum(lens[doc == d]) for d in range(n_docs)])
        is_key = (text_rng.random(len(n)) < 0.05) & (p > 32)
        tl = {
            "doc": doc,
            "pos": p,
            "token_id": t,
            "token": text,
            "char_start": ends - lens,
            "char_end": ends,
            "nll": n.astype(np.float32),
            "is_key": is_key,
        }
        if probe == "token_loss":
            out["token_loss"] = tl
            b = p // bucket
            sums, counts = np.bincount(b, weights=n), np.bincount(b)
            starts = np.arange(len(counts)) * bucket
            out["position_loss"] = {
                "bucket_start": starts,
                "bucket_end": np.minimum(starts + bucket, n_tokens),
                "mean_nll": sums / np.maximum(counts, 1),
                "n": counts,
            }
        else:
            rows = []
            for d in range(n_docs):
                m = doc == d
                key = m & is_key
                rows.append(
                    (
                        d,
                        int(m.sum()),
                        int(key.sum()),
                        math.exp(n[m].mean()),
                        math.exp(n[key].mean() + pen) if key.any() else None,
                    )
                )
            out["longppl"] = dict(zip(("doc", "n_tokens", "n_key", "ppl", "longppl"), map(list, zip(*rows))))
            out["key_tokens"] = {
                "doc": doc[is_key],
                "char_start": (ends - lens)[is_key],
                "char_end": ends[is_key],
                "pos": p[is_key],
                "score": (n[is_key] * 0 + 2.5).astype(np.float32),
            }
    elif probe == "niah":
        grid = [
            (L, dep, s) for L in (256, 512, 1024) for dep in (0.0, 0.25, 0.5, 0.75, 1.0) for s in range(2)
        ]
        p_ok = 0.9 - pen - 0.15 * kinds.count("sliding_attention") / len(kinds)
        ok = rng.random(len(grid)) < p_ok
        out["niah"] = {
            "length": [g[0] for g in grid],
            "depth": [g[1] for g in grid],
            "sample": [g[2] for g in grid],
            "expected": ["4821"] * len(grid),
            "predicted": ["4821" if o else "17" for o in ok],
            "correct": ok,
        }
    elif probe == "retrieval_heads":
        rows = [(layer, h, k) for layer, k in enumerate(kinds) for h in range(4)]
        scores = [
            float(rng.beta(0.6, 3.0)) if k in ("full_attention", "sliding_attention") else None
            for _, _, k in rows
        ]
        out["head_scores"] = {
            "layer": [r[0] for r in rows],
            "head": [r[1] for r in rows],
            "layer_type": [r[2] for r in rows],
            "score": scores,
            "n_samples": [6] * len(rows),
            "metric": ["mass"] * len(rows),
        }
    elif probe == "attention_rows":
        att = [
            (layer, h)
            for layer, k in enumerate(kinds)
            if k in ("full_attention", "sliding_attention")
            for h in range(4)
        ]
        q, top = n_tokens - 1, 8
        ar: dict[str, list] = {
            k: [] for k in ("layer", "head", "query_pos", "rank", "key_pos", "weight", "token")
        }
        ent: dict[str, list] = {k: [] for k in ("layer", "head", "query_pos", "entropy")}
        for layer, h in att:
            keys = rng.choice(q + 1, top, replace=False)
            w = np.sort(rng.dirichlet(np.ones(top) * 0.5))[::-1] * 0.9
            for r in range(top):
                for k, v in zip(
                    ar, (layer, h, q, r, int(keys[r]), float(w[r]), WORDS[int(keys[r]) % len(WORDS)])
                ):
                    ar[k].append(v)
            for k, v in zip(ent, (layer, h, q, float(rng.uniform(0.5, 5.0)))):
                ent[k].append(v)
        out["attention_rows"], out["head_entropy"] = ar, ent
    elif probe == "sweep" and formation:  # a retrieval-head formation series, as zoo precompute writes
        name = f"formation:{model.rsplit('/', 1)[-1]}"
        rows = [(name, "retrieval_mass", step, 0.1 * step / 1000) for step in (100, 500, 1000)]
    elif probe == "sweep":  # as the backend's sweep probe: LongPPL and PPL per series
        ks = [16, 32, 64, 128, 256, 512]
        base = 8.0 + rng.random()
        rows = [("baseline", "longppl", n_tokens, base)]
        rows += [("restrict_full", "longppl", k, base * (1 + 6.0 / math.log2(k))) for k in ks]
        rows += [("restrict_efficient", "longppl", k, base * (1 + 0.2 / math.log2(k))) for k in ks]
        rows += [(name, "ppl", k, 0.6 * y) for name, _, k, y in rows]
        out["sweep"] = {
            "name": [r[0] for r in rows],
            "metric": [r[1] for r in rows],
            "x": [float(r[2]) for r in rows],
            "y": [r[3] for r in rows],
            "label": [f"k={r[2]}" for r in rows],
        }
    elif probe == "gradient_influence":
        edges = [0, 1, 3, 7, 15, 31, 63, 127, 255, n_tokens]
        bins = list(zip(edges[:-1], edges[1:]))
        mean = [float(10.0 / (1 + a) ** (0.5 + pen) * rng.uniform(0.8, 1.2)) for a, _ in bins]
        out["influence"] = {"doc": [0] * len(bins), "bin_start": [a for a, _ in bins], "bin_end": [b for _, b in bins],
                            "mean": mean, "max": [2 * m for m in mean], "n": [b - a for a, b in bins]}
    elif probe == "retrieval_probe":
        rows = [(which, layer, "embedding" if layer < 0 else kinds[layer], feat)
                for which in ("easy", "hard") for feat in ("hidden", "delta")
                for layer in range(-1 if feat == "hidden" else 0, len(kinds))]
        out["layer_probe"] = {
            "set": [r[0] for r in rows], "layer": [r[1] for r in rows], "layer_type": [r[2] for r in rows],
            "feature": [r[3] for r in rows],
            "accuracy": [float(min(1.0, 0.125 + 0.1 * max(r[1], 0) * rng.uniform(0.5, 1.0))) for r in rows],
            "n_train": [64] * len(rows), "n_test": [16] * len(rows), "chance": [0.125] * len(rows),
        }
    elif probe == "qk_distance":
        rows = [(layer, h, step) for layer, k in enumerate(kinds) if k == "full_attention" for h in range(4)
                for step in (0, 100, 200)]
        out["qk_distance"] = {
            "layer": [r[0] for r in rows], "head": [r[1] for r in rows], "kv_head": [r[1] // 2 for r in rows],
            "step": [r[2] for r in rows], "tokens": [r[2] * 1000 for r in rows],
            "q_dist": [1 - r[2] / 200 for r in rows], "k_dist": [0.5 * (1 - r[2] / 200) for r in rows],
        }
    elif probe == "attributions":
        n = 120
        t = text_rng.integers(0, len(WORDS), n)
        out["attributions"] = {
            "pos": list(range(n)), "token_id": t.tolist(), "token": [WORDS[i] for i in t],
            "char_start": list(range(n)), "char_end": list(range(1, n + 1)),
            "attribution": rng.normal(0, 0.1, n).astype(np.float32), "is_needle": [40 <= i < 45 for i in range(n)],
            "is_target": [i == n - 1 for i in range(n)],
        }
    else:
        raise ValueError(f"probe: no synthetic traces for {probe!r}; allowed: {', '.join(PROBE_TABLES)}")
    return out


def write_synthetic(
    store_root: str | os.PathLike,
    model: str,
    probe: str,
    ablation: str = "",
    data: str | None = None,
    params: dict | None = None,
    run_id: str | None = None,
    **kw: Any,
) -> str:
    """Write one synthetic run of the spec (model, probe, ablation, data, params) into the store at
    ``store_root``; returns its run_id (``fake-`` + a hash of the spec and ``kw``, unless given)."""
    spec = RunSpec.build(model=model, probe=probe, data=data, ablation=ablation, params=params or {})
    run_id = run_id or "fake-" + hashlib.sha256(json.dumps([spec.canonical_json(), kw]).encode()).hexdigest()[:16]
    _write(store_root, run_id, spec, probe, formation=bool(data and data.startswith("formation:")), **kw)
    return run_id


def _write(store_root: str | os.PathLike, run_id: str, spec: RunSpec, probe: str, **kw: Any) -> None:
    text = spec.ablation.to_text()
    TraceStore(store_root).write_run(
        run_id, spec.canonical(), synthetic_tables(probe, spec.model, text, **kw),
        meta={"ablation_text": text, "fake": True}, overwrite=True,
    )


class FakeClient:
    """Backend stand-in: writes synthetic traces for the spec; models named ``*fail*`` fail."""

    def __init__(self, store: str | os.PathLike) -> None:
        self.store = Path(store)

    def limits(self) -> dict:
        return cpu_limits()

    def submit(self, spec: Any, on_progress: Callable[[float, str], None] | None = None) -> str:
        log = os.environ.get("HYBRIDSCOPE_FAKE_LOG")
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(spec.canonical_json() + "\n")
        if on_progress:
            on_progress(0.5, "fake run: writing synthetic traces")
        if "fail" in spec.model:
            raise RunFailed(f"model: fake failure for {spec.model}")
        p = spec.typed_params
        kw = {"n_docs": min(getattr(p, "n_docs", 2), 4), "n_tokens": min(getattr(p, "max_tokens", 600), 2048)}
        if spec.probe in ("niah", "retrieval_heads", "sweep", "retrieval_probe", "qk_distance", "attributions"):
            kw = {}
        run_id = spec.run_id("fake-model", "fake-data")
        _write(self.store, run_id, spec, spec.probe if spec.probe in PROBE_TABLES else "token_loss", **kw)
        if on_progress:
            on_progress(1.0, "done")
        return run_id
