"""CLI for the zoo: data (``build-data``, ``pack``), models (``variants``, ``train``, ``train-all``) and
traces (``precompute``, ``rekey``). Each command prints a JSON summary on stdout (training logs go to stdout too).

    python -m zoo build-data --out .data/zoo [--stdlib-only | --packages numpy,pydantic]
    python -m zoo build-data --sources site --base .data/zoo --out .data/zoo_site   # + this machine's
                                                    # installed sources, base tokenizer/splits (zoo.site_corpus)
    python -m zoo variants                          # param counts of the seven variants
    python -m zoo train --variant swa64 --data .data/zoo --out out/zoo --steps 200 [--resume]
    python -m zoo train-all --data .data/zoo --out out/zoo --total-budget-s 400
    python -m zoo precompute --root out/zoo --data .data/zoo
    python -m zoo longeval --data out/zoo_site --roots out/w_full --evaluator out/w_full/zoo/full --out le.json
    python -m zoo rekey --store precomputed/store [--dashboard precomputed/dashboard.json]  # after a probe
                                                    # version / params default / table schema change
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zoo", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-data", help="rebuild corpus JSONL + tokenizer + manifest deterministically")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--stdlib-root", type=Path, default=None, help="default: this Python's Lib directory")
    b.add_argument(
        "--max-files", type=int, default=None, help="first N kept files of each source only (quick builds)"
    )
    g = b.add_mutually_exclusive_group()
    g.add_argument(
        "--packages",
        type=lambda v: tuple(x for x in v.split(",") if x.strip()),
        default=None,
        help="comma-separated installed packages whose Python source joins the stdlib "
        "(default: zoo.packages.DEFAULT_PACKAGES)",
    )
    g.add_argument("--stdlib-only", action="store_true", help="no package source, the stdlib only")
    b.add_argument(
        "--package-holdout-scale", type=float, default=0.25, help="val/test fractions for package files, x"
    )
    b.add_argument("--val-frac", type=float, default=0.015)
    b.add_argument("--test-frac", type=float, default=0.015)
    b.add_argument("--vocab-size", type=int, default=8192)
    b.add_argument("--synthetic-frac", type=float, default=0.03)
    b.add_argument("--synthetic-max-tokens", type=int, default=4000)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--sources", choices=("bundled", "site"), default="bundled",
                   help="bundled: build corpus + tokenizer (default); site: extend --base with every allowed "
                   "installed source of this machine (zoo.site_corpus), keeping its tokenizer and val/test")
    b.add_argument("--base", type=Path, default=Path(".data/zoo"), help="--sources site: the corpus it extends")
    b.add_argument("--site-root", type=Path, action="append", default=None,
                   help="--sources site: a site-packages directory (repeatable; default this Python's)")
    b.add_argument("--no-stdlib", action="store_true", help="--sources site: leave this Python's stdlib out")
    b.add_argument("--workers", type=int, default=None, help="--sources site: processes (default: all cores)")
    b.add_argument("--min-bytes", type=int, default=None, help="--sources site: smallest file kept (default 2000)")
    b.add_argument("--max-bytes", type=int, default=None, help="--sources site: largest file kept (default 200000)")
    b.add_argument("--strict-licences", action="store_true",
                   help="--sources site: the bundled build's licence terms only (no BSL-1.0, LLVM exception: no torch)")
    b.add_argument("--longeval-min-tokens", type=int, default=None,
                   help="--sources site: smallest document of the long held-out split (default 4096)")
    b.add_argument("--longeval-every", type=int, default=None,
                   help="--sources site: hold out documents whose text hash is divisible by N (default 16)")
    b.add_argument("--longeval-cap", type=int, default=None, help="--sources site: tokens held out (default 1.6M)")
    k = sub.add_parser("pack", help="tokenize a split into a uint16 .npy stream of seq_len rows")
    k.add_argument("--data", required=True, type=Path, help="a build-data output directory")
    k.add_argument("--split", default="train", choices=("train", "val", "test"))
    k.add_argument("--seq-len", type=int, default=4096)
    k.add_argument("--out", required=True, type=Path, help="output .npy path")
    r = sub.add_parser("rekey", help="migrate a trace store after a probe version / table schema change")
    r.add_argument("--store", required=True, type=Path, help="trace store directory (e.g. precomputed/store)")
    r.add_argument("--dashboard", type=Path, help="also rewrite this dashboard.json (e.g. precomputed/dashboard.json) "
                   "with zoo.precompute.dashboard_defaults of the seven variants")
    e = sub.add_parser("longeval", help="LongPPL/PPL over training on the long held-out split (zoo.longeval)")
    e.add_argument("--data", required=True, type=Path, help="a site build-data directory (longeval split)")
    e.add_argument("--roots", type=Path, nargs="+", help="train-all --out directories (or --models)")
    e.add_argument("--models", type=Path, nargs="+", help="finding 2: score these model directories (final "
                   "exports, keyed by directory name) unrestricted and restricted (--restrict-ks)")
    e.add_argument("--restrict-ks", type=int, nargs="+", default=None,
                   help="--models: receptive fields k of the restricted layer groups (e.g. 256)")
    e.add_argument("--restrict", nargs="+", choices=("full", "efficient"), default=["full", "efficient"],
                   help="--models: the layer groups restricted to each k (default both)")
    e.add_argument("--batch", type=int, default=8, help="--models: windows per forward")
    e.add_argument("--out", required=True, type=Path, help="longeval.json (merged with an earlier one)")
    e.add_argument("--evaluator", type=Path, help="the model directory whose key tokens are used")
    e.add_argument("--keys", type=Path, help="key tokens of an earlier call (--keys-out) instead")
    e.add_argument("--keys-out", type=Path)
    e.add_argument("--seq-len", type=int, default=4096)
    e.add_argument("--trunc-len", type=int, default=1024)
    e.add_argument("--stride", type=int, default=256)
    e.add_argument("--max-windows", type=int, default=None)
    e.add_argument("--device", default="auto")
    e.add_argument("--linear-backend", default="chunked")
    from zoo.cli_train import add_commands

    add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; prints a JSON summary on stdout."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = _parser().parse_args(argv)
    try:
        summary = _run(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _run(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    if args.cmd == "build-data" and args.sources == "site":
        from zoo.site_corpus import build_site_data, site_summary

        m = build_site_data(args.out, args.base, stdlib_root=args.stdlib_root, roots=args.site_root,
                            include_stdlib=not args.no_stdlib, workers=args.workers, max_files=args.max_files,
                            strict_licences=args.strict_licences,
                            **{k: v for k in ("min_bytes", "max_bytes", "longeval_min_tokens", "longeval_every",
                                                 "longeval_cap") if (v := getattr(args, k)) is not None})
        summary = site_summary(m)
    elif args.cmd == "build-data":
        from zoo.build import build_data

        m = build_data(
            args.out,
            stdlib_root=args.stdlib_root,
            max_files=args.max_files,
            val_frac=args.val_frac,
            test_frac=args.test_frac,
            vocab_size=args.vocab_size,
            synthetic_frac=args.synthetic_frac,
            synthetic_max_tokens=args.synthetic_max_tokens,
            seed=args.seed,
            packages=() if args.stdlib_only else args.packages,
            package_holdout_scale=args.package_holdout_scale,
        )
        summary = {s: {k: v[k] for k in ("docs", "chars", "tokens")} for s, v in m["splits"].items()}
        summary["train_tokens_by_source"] = {
            src: v["tokens"] for src, v in m["splits"]["train"]["by_source"].items()
        }
        summary["packages"] = {n: f"{p['version']} {p['licence']}" for n, p in m["packages"].items()}
    elif args.cmd == "rekey":
        from zoo.rekey import rekey_store

        left: list = []
        summary = {"rekeyed": [f"{old} -> {new}" for old, new in rekey_store(args.store, left)],
                   "left": [f"{run_id}: {why}" for run_id, why in left]}
        if args.dashboard:
            from zoo.precompute import PrecomputeConfig, dashboard_defaults
            from zoo.variants import NAMES

            text = json.dumps(dashboard_defaults(list(NAMES), PrecomputeConfig()), indent=1) + "\n"
            args.dashboard.write_text(text, encoding="utf-8")
            summary["dashboard"] = str(args.dashboard)
    elif args.cmd == "longeval" and args.models:
        from zoo.longeval import run_restricted
        from zoo.train import pick_device

        if args.roots or not args.restrict_ks:
            raise ValueError("longeval: --models takes --restrict-ks and no --roots")
        r = run_restricted(args.data, args.models, args.out, args.restrict_ks, args.restrict, args.keys,
                           args.evaluator, args.seq_len, args.trunc_len, args.stride, pick_device(args.device),
                           args.linear_backend, args.max_windows, args.batch)
        summary = {"n_key": r["n_key"], "windows": r["windows"], "models": {
            name: {"unrestricted": round(m["unrestricted"]["longppl"] or float("nan"), 4),
                   **{f"{g}@{k}": round(x["longppl_ratio"] or float("nan"), 4)
                      for g, ks in m["restricted"].items() for k, x in ks.items()}}
            for name, m in r["models"].items()}}
    elif args.cmd == "longeval":
        from zoo.longeval import run
        from zoo.train import pick_device

        if not args.roots or args.restrict_ks:
            raise ValueError("longeval: pass --roots (checkpoints over training) or --models with --restrict-ks")
        r = run(args.data, args.roots, args.out, args.evaluator, args.keys, args.keys_out, args.seq_len,
                args.trunc_len, args.stride, pick_device(args.device), args.linear_backend, args.max_windows)
        summary = {"n_key": r["n_key"], "windows": r["windows"], "keys_sha256": r["keys_sha256"],
                   "variants": {v: [(x["step"], round(x["ppl"], 3), x["longppl"] and round(x["longppl"], 3))
                                    for x in recs] for v, recs in r["variants"].items()}}
    elif args.cmd != "pack":
        from zoo.cli_train import run_command

        return run_command(args)
    else:
        from zoo.corpus import split_path
        from zoo.tokenizer import pack_tokens

        summary = pack_tokens(
            split_path(args.data, args.split), args.data / "tokenizer", args.seq_len, args.out
        )
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary


if __name__ == "__main__":
    sys.exit(main())
