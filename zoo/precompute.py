"""Precompute the zoo's traces into a trace store, with the ordinary runner.

``precompute(root, ...)`` expects the trained checkpoints in ``root/zoo/<variant>`` (what
``train-all --out root`` writes) and writes ``root/store``. For the duration it sets the environment
variable ``HYBRIDSCOPE_PRECOMPUTED`` to ``root`` (restored on exit, also on error); ``backend.paths``
reads it whenever a path is resolved, so refs ``zoo/<name>`` and data ``zoo:test`` resolve under
``root`` in this process and in any child process. The store holds:

1. formation: one run per variant holding ``sweep`` rows named ``formation:<variant>`` with metric
   ``retrieval_mass`` (x = training step, y = strongest full-attention retrieval-head mass), from
   ``formation.json`` of train-all.
   Spec: ``{"model": "zoo/<v>", "probe": "sweep", "data": "formation:retrieval_heads_mass",
   "params": {"ks": [steps]}}`` — a valid RunSpec that the runner never computes (written directly).
2. token_loss and longppl on held-out long documents (``zoo:test``: documents of the corpus's val
   and test splits with at least ``max_tokens`` tokens, written to ``root/data/test.jsonl``; with
   ``chunk_docs`` every such document is cut into consecutive pieces of ``max_tokens`` tokens or a
   little more, at line starts, so the long documents yield ~40 pieces instead of 13);
   LongPPL key tokens come from one evaluator (default ``zoo/gdn``; any model directory under
   ``root/zoo``, a variant or not, e.g. a larger ``zoo/evaluator`` trained for the purpose) so all
   variants are scored on the same tokens. The defaults fit this zoo's scale: its models use little context beyond a few
   hundred tokens, so the short context is ``trunc_len=256`` (stride 128), not the paper's 4096 for
   32K-token models: with 1024, no evaluator found a single key token in the held-out documents. The
   evaluator is the variant that found the most key tokens (52 on the 13 long held-out documents;
   ``zoo/full`` found 1, ``zoo/swa64`` 21 on 4 documents) — a choice that favours it; see FINDINGS.md.
   The v2 zoo (``PrecomputeConfig.v2()``, ``--generation v2``) uses the paper-like ``trunc_len=1024``
   (stride 256) on the chunked documents, evaluator ``zoo/full`` unless told otherwise (issue 12
   wants >= 1,000 key tokens: the trainer records each model's own count, ``n_key``, at every
   evaluation point, so the evaluator is chosen from measurements).
3. the receptive-field sweep (full vs efficient layers restricted to k tokens) on ``sweep_n_docs``
   documents (fewer than LongPPL's: each of its 1 + 2 * len(ks) LongPPL runs stores per-token tables,
   and the whole store must fit one 16 MiB archive).
4. NIAH grids (passkey, then niah) and retrieval-head maps, on a text haystack of ``zoo:test``.

Without pydantic (absent from the device image unless carried) the runner cannot start: the
formation runs are still written and the failure is recorded. Steps run in that order, each
wrapped: a failure is recorded and the next step runs; once
``budget_s`` is spent the remaining steps are skipped (and listed). Attention runs on the SDPA path
(``attn_backend="sdpa"``): probe lengths vary (greedy decoding grows the sequence by one token per
step), and FlexAttention would recompile for every length.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zoo.corpus import read_jsonl
from zoo.envvar import scoped_env
from zoo.tokenizer import backend_of

FORMATION_DATA = "formation:retrieval_heads_mass"
FORMATION_METRIC = "retrieval_mass"  # sweep.metric of the formation rows


@dataclass
class PrecomputeConfig:
    n_docs: int = 16  # a cap: the held-out split has 13 documents of >= max_tokens tokens
    sweep_n_docs: int = 2  # the sweep's 1 + 2 * len(ks) LongPPL runs each store per-token tables
    max_tokens: int = 4096
    trunc_len: int = 256
    stride: int = 128
    evaluator: str | None = "zoo/gdn"
    ks: tuple[int, ...] = (16, 64, 256, 1024)
    niah_lengths: tuple[int, ...] = (512, 1024, 2048, 4096)
    niah_depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    niah_samples: int = 2
    niah_new_tokens: dict[str, int] = field(default_factory=lambda: {"passkey": 8, "niah": 10})
    rh_lengths: tuple[int, ...] = (1024, 2048)
    haystack: str = "text"
    data: str = "zoo:test"
    chunk_docs: bool = False  # cut long held-out documents into max_tokens pieces (see the docstring)

    @classmethod
    def v2(cls) -> PrecomputeConfig:
        """The v2 zoo's traces: paper-like LongPPL (trunc_len 1024) on chunked held-out documents."""
        return cls(n_docs=64, trunc_len=1024, stride=256, evaluator="zoo/full", rh_lengths=(1024, 2048, 4096),
                   chunk_docs=True)

    @classmethod
    def smoke(cls) -> PrecomputeConfig:
        return cls(
            n_docs=1,
            sweep_n_docs=1,
            max_tokens=512,
            trunc_len=128,
            stride=64,
            ks=(16, 64),
            niah_lengths=(128, 256),
            niah_depths=(0.0, 1.0),
            niah_samples=1,
            rh_lengths=(128,),
        )


def chunk_doc(doc, tok, n_tokens: int) -> list:
    """Consecutive pieces of ``doc`` with at least ``n_tokens`` tokens each: a piece starts at a line
    start and ends at the first line end after ``n_tokens + 16`` of the document's tokens (a margin, so
    the piece re-tokenises to >= ``n_tokens``); ids ``<id>#<k>``; the short remainder is dropped."""
    from dataclasses import replace

    text = doc.text
    offsets = tok.encode(text, add_special_tokens=False).offsets
    starts = [a for a, _ in offsets]
    out, c0 = [], 0
    while True:
        i = bisect.bisect_left(starts, c0)
        if i + n_tokens + 16 >= len(offsets):
            break
        end = text.find("\n", offsets[i + n_tokens + 16][0])
        end = len(text) if end < 0 else end + 1
        piece = text[c0:end]
        if len(tok.encode(piece, add_special_tokens=False).ids) >= n_tokens:
            out.append(replace(doc, id=f"{doc.id}#{len(out)}", text=piece))
        c0 = end
    return out


def prepare_data(root: Path, data_dir: Path, min_tokens: int, chunk: bool = False) -> dict:
    """Write ``root/data/test.jsonl`` (held-out val + test documents with >= ``min_tokens`` tokens,
    sorted by id; with ``chunk`` their pieces, :func:`chunk_doc`) and ``root/data/val.jsonl`` (the
    corpus's val split as is)."""
    tok = backend_of(Path(data_dir) / "tokenizer")
    docs = [d for split in ("val", "test") for d in read_jsonl(Path(data_dir) / f"{split}.jsonl")]
    long_docs = sorted(
        (d for d in docs if len(tok.encode(d.text, add_special_tokens=False).ids) >= min_tokens),
        key=lambda d: d.id,
    )
    if chunk:
        long_docs = [p for d in long_docs for p in chunk_doc(d, tok, min_tokens)]
    if not long_docs:
        raise ValueError(f"data: no held-out document has >= {min_tokens} tokens in {data_dir}")
    out = Path(root) / "data"
    out.mkdir(parents=True, exist_ok=True)
    (out / "test.jsonl").write_text("".join(d.to_json() + "\n" for d in long_docs), encoding="utf-8")
    (out / "val.jsonl").write_bytes((Path(data_dir) / "val.jsonl").read_bytes())
    return {"test_docs": [d.id for d in long_docs]}


def formation_specs(formation: dict[str, list[dict]]) -> list[tuple[str, dict, dict]]:
    """(run_id, spec, sweep rows) per variant with records at steps > 0 (log-x charts)."""
    out = []
    for v, records in sorted(formation.items()):
        recs = sorted(
            (r for r in records if r.get("step", 0) > 0 and r.get("max_full") is not None),
            key=lambda r: r["step"],
        )
        if not recs:
            continue
        spec = {
            "model": f"zoo/{v}",
            "probe": "sweep",
            "data": FORMATION_DATA,
            "params": {"ks": [int(r["step"]) for r in recs]},
        }
        rows = {
            "name": [f"formation:{v}"] * len(recs),
            "metric": [FORMATION_METRIC] * len(recs),
            "x": [float(r["step"]) for r in recs],
            "y": [float(r["max_full"]) for r in recs],
            "label": [
                f"step {r['step']}: max {r['max_full']:.3f}, top-5 mean {r['top5_full']:.3f}" for r in recs
            ],
        }
        digest = hashlib.sha256(json.dumps([spec, rows], sort_keys=True).encode()).hexdigest()[:12]
        out.append((f"formation-{v}-{digest}", spec, rows))
    return out


def write_formation(store, formation: dict[str, list[dict]]) -> list[str]:
    """Write the formation runs (see the module docstring); returns their run_ids."""
    ids = []
    for run_id, spec, rows in formation_specs(formation):
        records = formation[spec["model"][4:]]
        store.write_run(
            run_id,
            spec,
            {"sweep": rows},
            overwrite=True,
            meta={
                "source": "train-all formation.json",
                "records": [
                    {
                        k: r.get(k)
                        for k in (
                            "step",
                            "tokens",
                            "max_full",
                            "top5_full",
                            "max_swa",
                            "top5_swa",
                            "val_loss",
                        )
                    }
                    for r in records
                ],
            },
        )
        ids.append(run_id)
    return ids


def run_specs(variants: list[str], cfg: PrecomputeConfig) -> list[tuple[str, Any]]:
    """(step name, RunSpec) in execution order: longppl+token_loss, sweep, niah passkey,
    retrieval heads, niah (each over all variants before the next)."""
    from backend.spec import RunSpec

    lp = {
        "n_docs": cfg.n_docs,
        "max_tokens": cfg.max_tokens,
        "trunc_len": cfg.trunc_len,
        "stride": cfg.stride,
    }
    if cfg.evaluator:
        lp["evaluator"] = cfg.evaluator
    grid = {
        "lengths": list(cfg.niah_lengths),
        "depths": list(cfg.niah_depths),
        "samples": cfg.niah_samples,
        "haystack": cfg.haystack,
    }
    data_hay = cfg.data if cfg.haystack == "text" else None
    # (step, probe, data, params) per variant; steps run over all variants before the next step
    steps = [
        (("token_loss", "token_loss", cfg.data, {"n_docs": cfg.n_docs, "max_tokens": cfg.max_tokens}),
         ("longppl", "longppl", cfg.data, lp)),
        (("sweep", "sweep", cfg.data, {**lp, "n_docs": cfg.sweep_n_docs, "ks": list(cfg.ks)}),),
        (("niah_passkey", "niah", data_hay,
          {**grid, "task": "passkey", "max_new_tokens": cfg.niah_new_tokens["passkey"]}),),
        (("retrieval_heads", "retrieval_heads", data_hay,
          {"lengths": list(cfg.rh_lengths), "haystack": cfg.haystack}),),
        (("niah", "niah", data_hay, {**grid, "task": "niah", "max_new_tokens": cfg.niah_new_tokens["niah"]}),),
    ]
    out: list[tuple[str, Any]] = []
    for group in steps:
        for m in variants:
            for step, probe, data, params in group:
                out.append((f"{step}:{m}", RunSpec.build(model=f"zoo/{m}", probe=probe, data=data, params=params)))
    return out


DASHBOARD_STEPS = ("token_loss", "longppl", "sweep", "retrieval_heads", "niah")  # steps the views default to
DASHBOARD_ABOUT = (
    "What the dashboard views ask for when the URL names no dataset or probe parameters: the specs the "
    "bundled store (store/) was computed with (written by python -m zoo precompute). "
    "tests/app/test_dashboard_defaults.py checks that every probe listed here has an ok run for every zoo model."
)


def dashboard_defaults(variants: list[str], cfg: PrecomputeConfig) -> dict:
    """``dashboard.json`` for a store precomputed with ``cfg``: per probe the data and params of its run
    (app/defaults.py reads it), so the embedded views find the bundled runs by their exact RunSpec."""
    specs = dict(run_specs(variants[:1], cfg))
    probes = {}
    for step in DASHBOARD_STEPS:
        spec = specs[f"{step}:{variants[0]}"]
        probes[spec.probe] = {k: v for k, v in (("data", spec.data), ("params", spec.params)) if v}
    return {"about": DASHBOARD_ABOUT, "probes": probes}


def _use_backend(ref: str, attn_backend: str) -> None:
    """Load (and cache) ``ref`` as the runner will, and set its attention kernel backend."""
    from backend.loading import load
    from models.attention_mixer import HybridAttention

    for mod in load(ref).model.modules():
        if isinstance(mod, HybridAttention):
            mod.backend = attn_backend


def precompute(
    root: Path,
    data_dir: Path,
    variants: list[str],
    cfg: PrecomputeConfig,
    formation_json: Path | None = None,
    budget_s: float | None = None,
    attn_backend: str = "sdpa",
) -> dict:
    """Build ``root/store``; returns (and writes to ``root/precompute_summary.json``) what ran."""
    t0 = time.perf_counter()
    root = Path(root).resolve()
    summary: dict[str, Any] = {"config": asdict(cfg), "steps": {}, "skipped": [], "failed": {}}
    with scoped_env("HYBRIDSCOPE_PRECOMPUTED", str(root)):  # backend.paths reads it when called
        from backend.store import TraceStore

        missing = [v for v in variants if not (root / "zoo" / v / "config.json").is_file()]
        variants = [v for v in variants if v not in missing]
        summary["missing_models"] = missing
        if cfg.evaluator and not (root / "zoo" / cfg.evaluator.removeprefix("zoo/") / "config.json").is_file():
            summary["evaluator_missing"] = cfg.evaluator  # each model then picks its own key tokens
            cfg.evaluator = None
        summary["data"] = prepare_data(root, data_dir, cfg.max_tokens, cfg.chunk_docs)
        store = TraceStore(root / "store")
        if formation_json is not None and Path(formation_json).is_file():
            try:
                summary["formation_runs"] = write_formation(
                    store, json.loads(Path(formation_json).read_text())
                )
            except Exception as e:  # noqa: BLE001 - record and go on
                summary["failed"]["formation"] = f"{type(e).__name__}: {e}"
        try:  # the runner needs pydantic (RunSpec, Ablation); the formation runs above do not
            from backend.runner import Runner

            runner = Runner(store_root=root / "store", read_only_roots=[])
            specs = run_specs(variants, cfg)
            if variants:
                defaults = json.dumps(dashboard_defaults(variants, cfg), indent=1)
                (root / "dashboard.json").write_text(defaults + "\n", encoding="utf-8")
            for v in variants:
                _use_backend(f"zoo/{v}", attn_backend)
        except Exception as e:  # noqa: BLE001 - record it; nothing else can run
            summary["failed"]["runner"] = f"{type(e).__name__}: {e}"
            print(f"[precompute] runner unavailable: {summary['failed']['runner']}", flush=True)
            specs = []
        for name, spec in specs:
            if budget_s is not None and time.perf_counter() - t0 > budget_s:
                summary["skipped"].append(name)
                continue
            s = time.perf_counter()
            try:
                res = runner.run(spec)
                meta = res.manifest.get("meta", {})
                keep = {k: meta[k] for k in ("longppl", "ppl", "accuracy", "mean_nll", "n_key") if k in meta}
                summary["steps"][name] = {
                    "run_id": res.run_id,
                    "seconds": round(time.perf_counter() - s, 2),
                    **keep,
                }
            except Exception as e:  # noqa: BLE001 - one failing probe must not stop the others
                summary["failed"][name] = f"{type(e).__name__}: {e}"
            print(
                f"[precompute] {name}: {summary['steps'].get(name) or summary['failed'].get(name)}",
                flush=True,
            )
            _write_summary(root, summary, t0)  # after every step: a killed run still leaves one
    _write_summary(root, summary, t0)
    return summary


def _write_summary(root: Path, summary: dict, t0: float) -> None:
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    tmp = root / "precompute_summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    tmp.replace(root / "precompute_summary.json")
