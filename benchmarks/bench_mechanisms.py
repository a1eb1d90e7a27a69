"""Issue 13, GPU check: gradient influence at 32K and attributions through Runner.run, on one GPU.

    python benchmarks/bench_mechanisms.py --out $OUT/bench_mechanisms.json     # CUDA (H200); skips without it
    python benchmarks/bench_mechanisms.py --smoke --out /tmp/m.json            # tiny, CPU: every code path

Models: bench_runs_gpu.py's (random init, a locally trained BPE tokenizer, loaded by the runner like any
user checkpoint; bf16 on GPU): ``native`` (SSSF x 4, window 128, hidden 1024, ~0.2B parameters) and
``qwen3`` (an HF Qwen3 of the same dims and sliding/full pattern).

Sections:
- ``influence``: gradient_influence of one document of L tokens (4K, 32K; last 20 positions) per family:
  wall seconds and peak memory (from 8,192 tokens on a GPU the probe re-runs each decoder layer in the
  backward pass). Goal: 32K runs on one GPU (status ok).
- ``checkpointing``: influence_scores with and without per-layer checkpointing at 8K on the native
  model: relative difference of the scores (goal <= 1e-3) and the peak-memory ratio (goal < 1).
- ``attributions``: Integrated Gradients (16 steps) of a passkey prompt of 4K and 8K tokens per family:
  wall seconds, peak memory and captum's convergence delta relative to |F(x) - F(baseline)|.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_runs_gpu import GPU as RUNS_GPU  # noqa: E402
from bench_runs_gpu import SMOKE as RUNS_SMOKE  # noqa: E402
from bench_runs_gpu import Runs, make_document, make_models  # noqa: E402
from benchlib import GIB, Bench, bench_parser, env_meta, free, pick_device, random_ids, sync  # noqa: E402

GPU = {**RUNS_GPU, "influence": (4096, 32768), "checkpoint_len": 8192, "attributions": (4096, 8192)}
SMOKE = {**RUNS_SMOKE, "influence": (512, 1024), "checkpoint_len": 256, "attributions": (512,)}
GOALS = {"ckpt_rel": 1e-3}


def influence_section(bench: Bench, runs: Runs, family: str, data: str, length: int) -> None:
    def run() -> dict:
        res, wall, peak = runs("gradient_influence", family, data=data, max_tokens=length, last=20)
        t = res.tables["influence"]
        return {"L": length, "s": round(wall, 3), "peak_gib": peak, "bins": len(t["n"]), "positions": sum(t["n"]),
                "far_mean": float(t["mean"][-1]), "near_mean": float(t["mean"][0])}

    bench.row("influence", f"{family} L={length}", run)


def checkpoint_section(bench: Bench, device: torch.device, length: int) -> None:
    from backend.loading import load
    from backend.probes.gradient_influence import influence_scores

    lm = load("native")
    ids = random_ids(lm.model.config.vocab_size, length, device, seed=3)
    out = {}

    def one(on: bool) -> dict:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        s = influence_scores(lm.model, ids, 20, checkpointing=on)
        sync(device)
        out[on] = s
        peak = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None
        return {"L": length, "peak_gib": peak}

    plain = bench.row("checkpointing", "plain", lambda: one(False))
    ckpt = bench.row("checkpointing", "per-layer checkpoint", lambda: one(True))
    if False in out and True in out:
        rel = float(np.linalg.norm(out[True] - out[False]) / max(np.linalg.norm(out[False]), 1e-300))
        bench.ratio("checkpointed vs plain scores, rel. difference", rel, f"<= {GOALS['ckpt_rel']}",
                    rel <= GOALS["ckpt_rel"])
        if plain.get("peak_gib") and ckpt.get("peak_gib"):
            r = ckpt["peak_gib"] / plain["peak_gib"]
            bench.ratio("checkpointed / plain peak memory", r, "< 1", r < 1)


def attributions_section(bench: Bench, runs: Runs, family: str, length: int) -> None:
    def run() -> dict:
        res, wall, peak = runs("attributions", family, length=length, n_steps=16)
        m = res.manifest["meta"]
        gap = abs(m["logp"] - m["logp_baseline"])
        return {"L": length, "s": round(wall, 3), "peak_gib": peak, "tokens": m["n_tokens"],
                "delta_rel": m["convergence_delta"] / max(gap, 1e-12), "needle_share": m["needle_share"]}

    bench.row("attributions", f"{family} L={length}", run)


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--families", default=None, help="comma list: native,qwen3")
    ap.add_argument("--sections", default="influence,checkpointing,attributions")
    ap.set_defaults(budget_s=420.0)
    args = ap.parse_args(argv)
    device = pick_device(args.smoke)
    if device is None:
        return 0  # a skip, not a failure: run_gpu.sh runs every step
    os.environ["HYBRIDSCOPE_DEVICE"] = device.type
    S = SMOKE if args.smoke else GPU
    families = args.families.split(",") if args.families else list(S["families"])
    sections = args.sections.split(",")
    meta = {**env_meta(device), "script": "bench_mechanisms", "smoke": args.smoke, "sizes": S}
    bench = Bench(args.out, device, meta, args.budget_s)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bench.section("build")
        make_models(tmp / "models", {**S, "families": tuple(families)})
        bench.end_section("build")
        runs = Runs(tmp, device)
        if "influence" in sections:
            from backend.loading import load

            data = make_document(load(families[0]), max(S["influence"]), tmp / "doc.txt")
            for length in S["influence"]:
                for family in families:
                    influence_section(bench, runs, family, data, length)
                    free(device)
        if "checkpointing" in sections and "native" in families:
            checkpoint_section(bench, device, S["checkpoint_len"])
            free(device)
        if "attributions" in sections:
            for length in S["attributions"]:
                for family in families:
                    attributions_section(bench, runs, family, length)
                    free(device)
    bench.finish(["L", "s", "peak_gib", "positions", "tokens", "delta_rel", "note"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
