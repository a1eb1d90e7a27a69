"""Subcommands ``variants``, ``train``, ``train-all``, ``pilot``, ``precompute``, ``report``, ``package``
and ``merge`` of ``python -m zoo``.

    python -m zoo variants --size 5m                 # a size's generation (v1: zoo/smoke; v2: 5m/10m/15m)
    python -m zoo train-all --size 5m --steps 6000 --variants full,swa128 --out out/r1 --compile
    python -m zoo pilot --variant full --sizes 5m,15m --total-budget-s 540 --out out/pilot --compile
    python -m zoo precompute --root out/r1 --generation v2 [--evaluator zoo/full]
    python -m zoo merge --into out/v2 out/r1 out/r2 ...
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from zoo.train import EVAL_FRACTIONS, TrainArgs
from zoo.variants import SIZE_NAMES, get_size

_HYPER = (  # (flag, TrainArgs field, type)
    ("--batch-size", "batch_size", int),
    ("--micro-batch", "micro_batch", int),
    ("--lr", "lr", float),
    ("--min-lr-ratio", "min_lr_ratio", float),
    ("--warmup-steps", "warmup_steps", int),
    ("--weight-decay", "weight_decay", float),
    ("--grad-clip", "grad_clip", float),
    ("--calib-steps", "calib_steps", int),
    ("--log-every", "log_every", int),
    ("--keep-checkpoints", "keep_checkpoints", int),
    ("--save-every", "save_every", int),
    ("--seed", "seed", int),
    ("--synthetic-frac", "synthetic_frac", float),
    ("--synthetic-long-frac", "synthetic_long_frac", float),  # rows of one context-long document
    ("--synthetic-parts", "synthetic_parts", int),  # parts per synthetic epoch (parallel; fixed per zoo)
    ("--schedule-total", "schedule_total", int),  # one LR schedule over all stages (TrainArgs)
    ("--device", "device", str),
    ("--attn-backend", "attn_backend", str),  # kernels used in training (the saved config keeps "auto")
    ("--linear-backend", "linear_backend", str),
    ("--init-from", "init_from", str),  # continue from an earlier zoo root (see TrainArgs.init_from)
    ("--corpus-sha256", "corpus_sha256", str),  # refuse a corpus whose token stream differs (zoo.data)
)

_PILOT_HYPER = ("batch_size", "lr", "warmup_steps", "log_every", "seed", "synthetic_frac", "synthetic_long_frac",
                "synthetic_parts", "corpus_sha256")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=Path(".data/zoo"), help="a build-data directory")
    p.add_argument("--out", type=Path, required=True, help="zoo root: runs/, zoo/ (exports), plan.json")
    p.add_argument("--size", choices=SIZE_NAMES, default="zoo",
                   help="v1: zoo, smoke (tiny CPU); v2: 5m, 10m, 15m, smoke-5m, smoke-15m (zoo.variants)")
    for flag, name, typ in _HYPER:
        p.add_argument(flag, dest=name, type=typ, default=None)
    p.add_argument(
        "--evals",
        type=int,
        default=None,
        help=f"evaluation points (formation + checkpoint); default {len(EVAL_FRACTIONS)}",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model (off by default)")
    p.add_argument("--max-docs", type=int, default=None, help="first N training documents only (smoke)")
    p.add_argument("--workers", type=int, default=-1, help="synthetic-row processes (-1: 3 on CUDA, 0 on CPU)")
    p.add_argument("--cache", type=Path, default=None, help="packed-rows cache dir (default OUT/cache)")


def add_commands(sub) -> None:
    v = sub.add_parser("variants", help="the variants of a size's generation with their parameter counts")
    v.add_argument("--size", choices=SIZE_NAMES, default="zoo")
    t = sub.add_parser("train", help="train one variant (steps or a time budget); resumable")
    t.add_argument("--variant", required=True)
    g = t.add_mutually_exclusive_group(required=True)
    g.add_argument("--steps", type=int)
    g.add_argument("--time-budget-s", type=float, help="plan the schedule to end within this wall time")
    t.add_argument("--max-seconds", type=float, default=None, help="hard wall-clock stop")
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUT/runs/VARIANT")
    t.add_argument("--stop-after", type=int, default=None, help="stop at this step with a checkpoint (no export)")
    _common(t)
    a = sub.add_parser("train-all", help="train the variants on equal steps (plan from a time budget)")
    g = a.add_mutually_exclusive_group(required=True)
    g.add_argument("--steps", type=int)
    g.add_argument("--total-budget-s", type=float, help="wall budget for everything incl. calibration")
    a.add_argument("--variants", default="", help="comma-separated names (default: all of the size's generation)")
    a.add_argument("--no-resume", action="store_true", help="retrain finished variants from scratch")
    a.add_argument(
        "--max-tokens",
        type=float,
        default=32e6,
        help="cap on tokens per variant when planning from a budget (0 = none; default 32M)",
    )
    _common(a)
    pl = sub.add_parser("pilot", help="one variant at several sizes on equal tokens (zoo.pilot)")
    pl.add_argument("--variant", default="full")
    pl.add_argument("--sizes", default="5m,15m", help="comma-separated sizes of one generation, smallest first")
    g = pl.add_mutually_exclusive_group(required=True)
    g.add_argument("--steps", type=int)
    g.add_argument("--total-budget-s", type=float, help="plan equal steps from zoo.pilot.THROUGHPUT")
    pl.add_argument("--data", type=Path, default=Path(".data/zoo"))
    pl.add_argument("--out", type=Path, required=True)
    pl.add_argument("--compile", action="store_true")
    pl.add_argument("--device", default="auto")
    pl.add_argument("--max-docs", type=int, default=None)
    pl.add_argument("--workers", type=int, default=-1)
    pl.add_argument("--evals", type=int, default=None)
    for flag, name, typ in _HYPER:
        if name in _PILOT_HYPER:
            pl.add_argument(flag, dest=name, type=typ, default=None)
    p = sub.add_parser("precompute", help="trace store for the trained zoo in ROOT/zoo")
    p.add_argument("--root", type=Path, required=True, help="the train-all --out directory")
    p.add_argument("--data", type=Path, default=Path(".data/zoo"))
    p.add_argument("--generation", choices=("v1", "v2"), default="v1",
                   help="the variant set and probe settings (PrecomputeConfig / PrecomputeConfig.v2)")
    p.add_argument("--variants", default="", help="comma-separated names (default: the generation's)")
    p.add_argument("--smoke", action="store_true", help="tiny probe sizes (CPU)")
    p.add_argument("--budget-s", type=float, default=None, help="skip remaining steps after this many seconds")
    p.add_argument("--attn-backend", choices=("sdpa", "auto"), default="sdpa")
    p.add_argument("--evaluator", default=None,
                   help="LongPPL key-token model, any zoo/<dir> under ROOT (default: v1 zoo/gdn, v2 zoo/full; "
                   "'' = each model itself)")
    m = sub.add_parser("merge", help="merge zoo roots of separate rounds into one (zoo.merge)")
    m.add_argument("--into", type=Path, required=True)
    m.add_argument("sources", type=Path, nargs="+")
    r = sub.add_parser("report", help="compact tables of a trained + precomputed zoo root")
    r.add_argument("--root", type=Path, required=True)
    k = sub.add_parser("package", help="tar.gz archives of a zoo root (<= 8 files, <= 16 MiB each)")
    k.add_argument("--root", type=Path, required=True)
    k.add_argument("--dest", type=Path, required=True, help="where the archives go (e.g. $OUT)")
    k.add_argument("--max-files", type=int, default=8)


def _train_args(ns: argparse.Namespace, variant: str) -> TrainArgs:
    kw = {name: getattr(ns, name) for _, name, _ in _HYPER if getattr(ns, name) is not None}
    if ns.evals is not None:
        if ns.evals < 1:
            raise ValueError(f"--evals: must be >= 1, got {ns.evals}")
        kw["eval_fractions"] = tuple((i + 1) / ns.evals for i in range(ns.evals))
    if get_size(ns.size).smoke:
        kw.setdefault("batch_size", 2)
        kw.setdefault("warmup_steps", 2)
        kw.setdefault("calib_steps", 3)
        kw.setdefault("log_every", 1)
    return TrainArgs(variant=variant, size=ns.size, compile=ns.compile, **kw)


def _names(text: str) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] or None


def run_command(ns: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    if ns.cmd == "variants":
        from zoo.variants import describe

        rows = describe(ns.size)
        for r in rows:
            print(
                f"{r['name']:<11} {r['pattern']}  ratio {r['ratio']}  window {r['window'] or '-':>5}  "
                f"pe[full]={r['full_pe']:<4}  params {r['params']:,}  bf16 {r['bf16_bytes'] / 1e6:.2f} MB"
            )
        return {"variants": rows}
    if ns.cmd == "report":
        from zoo.report import report

        text = report(ns.root)
        print(text, flush=True)
        return {"lines": len(text.splitlines())}
    if ns.cmd == "merge":
        from zoo.merge import merge

        return merge(ns.into, ns.sources)
    if ns.cmd == "pilot":
        from zoo.pilot import run_pilot, table

        over = {k: getattr(ns, k) for k in _PILOT_HYPER if getattr(ns, k) is not None}
        res = run_pilot(ns.out, ns.data, ns.variant, _names(ns.sizes) or [], ns.total_budget_s, ns.steps,
                        ns.compile, ns.device, ns.max_docs, ns.workers, ns.evals, over)
        print(table(res), flush=True)
        return {"pilot": str(ns.out / "pilot.json"), "seconds": res.get("seconds")}
    if ns.cmd == "package":
        from zoo.package import package

        res = package(ns.root, ns.dest, max_files=ns.max_files)
        for name, size in res["archives"].items():
            print(f"{name}: {size / (1 << 20):.2f} MiB", flush=True)
        for w in res["warnings"]:
            print(f"WARNING: {w}", flush=True)
        return res
    if ns.cmd == "train":
        from dataclasses import replace

        from zoo.train_all import train_one

        args = replace(
            _train_args(ns, ns.variant),
            steps=ns.steps,
            time_budget_s=ns.time_budget_s,
            max_seconds=ns.max_seconds,
        )
        out = train_one(ns.out, ns.data, args, ns.cache, ns.max_docs, ns.workers, ns.resume, ns.stop_after)
    elif ns.cmd == "train-all":
        from dataclasses import replace

        from zoo.train_all import train_all

        base = replace(_train_args(ns, "full"), steps=ns.steps)
        out = train_all(
            ns.out,
            ns.data,
            base,
            _names(ns.variants),
            ns.total_budget_s,
            ns.cache,
            ns.max_docs,
            ns.workers,
            resume=not ns.no_resume,
            max_tokens=int(ns.max_tokens) or None,
        )
        print_table(ns.out)
    else:
        from zoo.precompute import PrecomputeConfig, precompute
        from zoo.variants import GENERATIONS

        if ns.smoke:
            cfg = PrecomputeConfig.smoke()
            cfg.chunk_docs = ns.generation == "v2"
        else:
            cfg = PrecomputeConfig.v2() if ns.generation == "v2" else PrecomputeConfig()
        if ns.evaluator is not None:
            cfg.evaluator = ns.evaluator or None
        root = ns.root
        out = precompute(
            root,
            ns.data,
            _names(ns.variants) or list(GENERATIONS[ns.generation]),
            cfg,
            root / "formation.json",
            ns.budget_s,
            ns.attn_backend,
        )
    out["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def print_table(root: Path) -> None:
    """Compact table of a train-all run on stdout (see zoo.report)."""
    from zoo.report import training_lines

    print("\n".join(training_lines(root)), flush=True)
