"""Issue 5 benchmark: training the zoo variants as concurrent processes on one GPU vs one after another.

    python benchmarks/bench_train_parallel.py --out out/bench_train_parallel.json          # CUDA, ~3-4 min
    python benchmarks/bench_train_parallel.py --smoke --out /tmp/p.json --variants swa64,gdn   # CPU plumbing

The zoo models (3.8M parameters) are far too small to keep an H100/H200 busy, so ``train-all
--parallel N`` runs the variants as N concurrent processes. This script measures what that buys, in one
run: each variant's trainer step (``bench_train.py --native-only``: the zoo trainer's ``train_step``,
batch 16 x 4096, random tokens, recurrent mixers on ``--linear-backend``) first alone, one process after
another (the baseline: sequential ``train-all``), then all at once (one process each, started together;
their timed steps overlap because every process runs ``--steps-concurrent`` steps, several times more
than the alone runs).

Ratios (> 1: parallel is faster):

- ``equal-data speed-up`` = sum over variants of the alone step times / the slowest concurrent step time:
  time to give every variant the same number of steps sequentially vs concurrently (an upper bound on
  the concurrent time: the slowest variant runs faster once the others have finished).
- ``aggregate tokens/s`` concurrent / sequential.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import bench_parser  # noqa: E402

HERE = Path(__file__).resolve().parent
ALL = "full,swa64,swa256,swa1024,mamba2,gdn,swa64_nope"


def _cmd(variant: str, out: Path, smoke: bool, warmup: int, steps: int, linear: str) -> list[str]:
    cmd = [sys.executable, str(HERE / "bench_train.py"), "--native-only", "--variant", variant, "--out", str(out)]
    cmd += ["--warmup", str(warmup), "--steps", str(steps), "--linear-backend", linear]
    return cmd + (["--smoke"] if smoke else [])


def _row(path: Path) -> dict:
    """The native row of a bench_train JSON (status, ms, tok_s, peak_gib) or a failure record."""
    try:
        rows = [r for r in json.loads(path.read_text())["rows"] if r.get("section") == "train"]
        ok = [r for r in rows if r.get("status") == "ok"]
        r = (ok or rows)[0]
        return {k: r.get(k) for k in ("name", "status", "ms", "tok_s", "peak_gib", "first_call_s")}
    except (OSError, KeyError, IndexError, ValueError) as e:
        return {"status": f"no result: {type(e).__name__}: {e}"}


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--variants", default=ALL, help=f"comma-separated (default {ALL})")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per process (default 4; smoke 1)")
    ap.add_argument("--steps-alone", type=int, default=None, help="timed steps alone (default 12; smoke 2)")
    ap.add_argument("--steps-concurrent", type=int, default=None, help="timed steps together (default 40; smoke 3)")
    ap.add_argument("--linear-backend", default="chunked", choices=("auto", "chunked", "fla"))
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    warm = args.warmup or (1 if args.smoke else 4)
    alone = args.steps_alone or (2 if args.smoke else 12)
    together = args.steps_concurrent or (3 if args.smoke else 40)
    work = Path(args.out).with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result: dict = {"variants": variants, "linear_backend": args.linear_backend, "alone": {}, "concurrent": {}}
    print(f"bench_train_parallel: {len(variants)} variants, linear backend {args.linear_backend}", flush=True)

    t0 = time.perf_counter()
    for v in variants:  # baseline: one process after another
        out = work / f"alone_{v}.json"
        subprocess.run(_cmd(v, out, args.smoke, warm, alone, args.linear_backend), env=env, check=False,
                       stdout=subprocess.DEVNULL, stderr=open(work / f"alone_{v}.log", "w"))  # fmt: skip
        result["alone"][v] = _row(out)
        print(f"  alone      {v:11s} {result['alone'][v]}", flush=True)
    result["alone_wall_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    procs = {}
    for v in variants:  # all at once
        out = work / f"together_{v}.json"
        cmd = _cmd(v, out, args.smoke, warm, together, args.linear_backend)
        log = open(work / f"together_{v}.log", "w")
        procs[v] = (out, subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log))
    for v, (out, p) in procs.items():
        p.wait()
        result["concurrent"][v] = _row(out)
        print(f"  concurrent {v:11s} {result['concurrent'][v]}", flush=True)
    result["concurrent_wall_s"] = round(time.perf_counter() - t0, 1)

    ok = [
        v
        for v in variants
        if result["alone"][v].get("status") == "ok" and result["concurrent"][v].get("status") == "ok"
    ]
    if ok:
        seq_ms = sum(result["alone"][v]["ms"] for v in ok)
        slowest = max(result["concurrent"][v]["ms"] for v in ok)
        agg_seq = len(ok) / seq_ms  # steps per ms, one variant-step at a time
        agg_par = sum(1 / result["concurrent"][v]["ms"] for v in ok)
        result["ratios"] = {
            "variants_ok": ok,
            "sum_alone_ms": round(seq_ms, 2),
            "slowest_concurrent_ms": round(slowest, 2),
            "equal_data_speedup": round(seq_ms / slowest, 3),
            "aggregate_tok_s_ratio": round(agg_par / agg_seq, 3),
        }
    else:
        result["ratios"] = {"error": "no variant ran both alone and concurrently"}
    Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(json.dumps(result["ratios"], indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
