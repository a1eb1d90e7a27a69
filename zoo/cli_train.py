"""Subcommands ``variants``, ``train``, ``train-all``, ``precompute``, ``report`` and ``package`` of
``python -m zoo``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from zoo.train import EVAL_FRACTIONS, TrainArgs

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
    ("--device", "device", str),
    ("--attn-backend", "attn_backend", str),  # kernels used in training (the saved config keeps "auto")
    ("--linear-backend", "linear_backend", str),
    ("--init-from", "init_from", str),  # continue from an earlier zoo root (see TrainArgs.init_from)
)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=Path(".data/zoo"), help="a build-data directory")
    p.add_argument("--out", type=Path, required=True, help="zoo root: runs/, zoo/ (exports), plan.json")
    p.add_argument("--size", choices=("zoo", "smoke"), default="zoo", help="smoke = tiny CPU-sized models")
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
    v = sub.add_parser("variants", help="the seven variants with their parameter counts")
    v.add_argument("--size", choices=("zoo", "smoke"), default="zoo")
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
    a.add_argument("--variants", default="", help="comma-separated names (default: all seven)")
    a.add_argument("--no-resume", action="store_true", help="retrain finished variants from scratch")
    a.add_argument(
        "--max-tokens",
        type=float,
        default=32e6,
        help="cap on tokens per variant when planning from a budget (0 = none; default 32M)",
    )
    _common(a)
    p = sub.add_parser("precompute", help="trace store for the trained zoo in ROOT/zoo")
    p.add_argument("--root", type=Path, required=True, help="the train-all --out directory")
    p.add_argument("--data", type=Path, default=Path(".data/zoo"))
    p.add_argument("--variants", default="", help="comma-separated names (default: all seven)")
    p.add_argument("--smoke", action="store_true", help="tiny probe sizes (CPU)")
    p.add_argument("--budget-s", type=float, default=None, help="skip remaining steps after this many seconds")
    p.add_argument("--attn-backend", choices=("sdpa", "auto"), default="sdpa")
    p.add_argument("--evaluator", default="zoo/gdn", help="LongPPL key-token model ('' = each model itself)")
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
    if ns.size == "smoke":
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
        from zoo.variants import NAMES

        cfg = PrecomputeConfig.smoke() if ns.smoke else PrecomputeConfig()
        cfg.evaluator = ns.evaluator or None
        root = ns.root
        out = precompute(
            root,
            ns.data,
            _names(ns.variants) or list(NAMES),
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
