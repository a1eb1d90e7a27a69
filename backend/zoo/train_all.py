"""Train zoo variants: one (``train``) or all seven on equal data (``train-all``).

``train-all`` gives every variant the same number of steps, hence the same tokens in the same order
(equal data). With ``total_budget_s`` that number comes from a calibration pass: each variant is
built and timed for a few steps (this also pays every kernel compilation once, before the real runs;
compile caches persist in the process), one evaluation and one checkpoint are timed, and

    steps = 0.92 * (budget left - per-variant overheads) / sum over variants of seconds per step.

The plan is saved to ``<out>/plan.json`` and reused on a rerun, which skips finished variants and
resumes unfinished ones from their latest checkpoint. Each variant also gets a hard wall-clock cap
(1.3x its planned time plus overheads). Layout of ``out``::

    out/zoo/<variant>/        final bf16 export (config, safetensors, tokenizer, README.md card)
    out/runs/<variant>/       train_log.jsonl, formation.json, summary.json, checkpoints/
    out/plan.json, out/train_summary.json, out/formation.json (all variants' records)
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from backend.zoo.data import Corpus, SyntheticSource, load_corpus
from backend.zoo.formation import EvalSet, make_eval_set
from backend.zoo.train import TrainArgs, Trainer, pick_device
from backend.zoo.variants import NAMES, context_of, get_variant

EVAL_LENGTHS = {"zoo": (1024, 2048), "smoke": (128, 192)}


def setup_torch(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")


def open_data(data_dir: Path, args: TrainArgs, cache_dir: Path | None, max_docs: int | None = None,
              workers: int = -1) -> tuple[Corpus, SyntheticSource]:
    """Corpus rows (cached) and the fresh-synthetic source shared by all variants of a process."""
    os.environ["TOKENIZERS_PARALLELISM"] = "true"  # encoding is deterministic either way; packing is faster
    corpus = load_corpus(data_dir, context_of(args.size), cache_dir, max_docs)
    if workers < 0:
        workers = 2 if pick_device(args.device).type == "cuda" else 0
    return corpus, SyntheticSource(corpus, args.synthetic_frac, args.seed, workers=workers)


def eval_set_for(corpus: Corpus, size: str) -> EvalSet:
    return make_eval_set(corpus.tokenizer_dir, corpus.val_texts, corpus.val_rows, corpus.pad_id,
                         lengths=EVAL_LENGTHS[size])


def _free(trainer: Trainer | None) -> None:
    del trainer
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def calibrate(base: TrainArgs, variants: list[str], corpus: Corpus, synthetic: SyntheticSource,
              eval_set: EvalSet, scratch: Path, warm: int = 2, timed: int = 4) -> dict:
    """Seconds per step of each variant (median of ``timed`` steps after ``warm`` steps), and the
    cost of one evaluation and one checkpoint (measured on the first variant)."""
    out: dict = {"sec_per_step": {}}
    for i, name in enumerate(variants):
        t0 = time.perf_counter()
        tr = Trainer(replace(base, variant=name, steps=10**6, time_budget_s=None, max_seconds=None),
                     corpus, synthetic, scratch / name, eval_set=eval_set, quiet=True)
        tr.run_dir.mkdir(parents=True, exist_ok=True)
        times = []
        for k in range(warm + timed):
            s = time.perf_counter()
            tr.train_step()
            tr._sync()
            if k >= warm:
                times.append(time.perf_counter() - s)
        out["sec_per_step"][name] = sorted(times)[len(times) // 2]
        if i == 0:
            tr.evaluate()
            s = time.perf_counter()
            tr.evaluate()
            out["eval_s"] = time.perf_counter() - s
            s = time.perf_counter()
            tr.save()
            out["save_s"] = time.perf_counter() - s
        out.setdefault("setup_s", {})[name] = round(time.perf_counter() - t0, 2)
        print(f"[calibrate] {name}: {out['sec_per_step'][name]:.4f} s/step "
              f"(setup incl. compile {out['setup_s'][name]:.1f} s)", flush=True)
        _free(tr)
    shutil.rmtree(scratch, ignore_errors=True)
    return out


def plan_steps(cal: dict, variants: list[str], seconds_left: float, n_evals: int, warmup: int) -> int:
    """Equal step count for all variants that fits ``seconds_left`` (see the module docstring)."""
    per_variant = n_evals * (cal["eval_s"] + cal["save_s"]) + 4.0
    spent = sum(cal["sec_per_step"][v] for v in variants)
    steps = int(0.92 * (seconds_left - per_variant * len(variants)) / spent)
    return max(steps, warmup + 1)


def train_all(out: Path, data_dir: Path, base: TrainArgs, variants: list[str] | None = None,
              total_budget_s: float | None = None, cache_dir: Path | None = None, max_docs: int | None = None,
              workers: int = -1, resume: bool = True) -> dict:
    """Train ``variants`` (default all seven) with equal steps; returns the summary (also saved)."""
    t_start = time.perf_counter()
    variants = list(variants or NAMES)
    for v in variants:
        get_variant(v)
    if (base.steps is None) == (total_budget_s is None):
        raise ValueError("steps/total_budget_s: give exactly one of them for train-all")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(base.device)
    setup_torch(device)
    corpus, synthetic = open_data(data_dir, base, cache_dir or out / "cache", max_docs, workers)
    eval_set = eval_set_for(corpus, base.size)
    plan_path = out / "plan.json"
    todo = [v for v in variants if not (out / "runs" / v / "summary.json").is_file()
            or not (out / "zoo" / v / "config.json").is_file()]
    plan = json.loads(plan_path.read_text()) if resume and plan_path.is_file() else None
    if plan is None or plan.get("size") != base.size:
        if base.steps is not None:
            plan = {"steps": base.steps, "size": base.size}
        else:
            cal = calibrate(base, todo or variants, corpus, synthetic, eval_set, out / "calibration")
            left = total_budget_s - (time.perf_counter() - t_start)
            steps = plan_steps(cal, todo or variants, left, len(base.eval_fractions), base.warmup_steps)
            plan = {"steps": steps, "size": base.size, "calibration": cal, "budget_s": total_budget_s,
                    "seconds_left_after_calibration": round(left, 1)}
        plan["args"] = asdict(base)
        plan_path.write_text(json.dumps(plan, indent=1), encoding="utf-8")
    steps = int(plan["steps"])
    print(f"[train-all] {len(todo)} of {len(variants)} variants to train, {steps} steps each "
          f"({steps * base.batch_size * corpus.seq_len:,} tokens)", flush=True)
    results: dict[str, dict] = {}
    for v in variants:
        summary_path = out / "runs" / v / "summary.json"
        if v not in todo:
            results[v] = json.loads(summary_path.read_text())
            continue
        cal = plan.get("calibration")
        cap = None
        if cal:
            cap = 1.3 * steps * cal["sec_per_step"].get(v, max(cal["sec_per_step"].values())) \
                + len(base.eval_fractions) * (cal["eval_s"] + cal["save_s"]) + 10.0
        args = replace(base, variant=v, steps=steps, time_budget_s=None, max_seconds=cap)
        tr = None
        try:
            tr = Trainer(args, corpus, synthetic, out / "runs" / v, out / "zoo" / v, eval_set)
            results[v] = tr.run(resume=resume)
        except Exception as e:  # keep going: one broken variant must not cost the others
            import traceback

            traceback.print_exc()
            results[v] = {"name": v, "status": f"failed: {type(e).__name__}: {e}"}
        _free(tr)
    synthetic.close()
    formation = {}
    for v in variants:
        f = out / "runs" / v / "formation.json"
        if f.is_file():
            formation[v] = json.loads(f.read_text())["records"]
    (out / "formation.json").write_text(json.dumps(formation, indent=1), encoding="utf-8")
    summary = {"steps": steps, "seconds": round(time.perf_counter() - t_start, 1), "variants": results}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    return summary


def train_one(out: Path, data_dir: Path, args: TrainArgs, cache_dir: Path | None = None,
              max_docs: int | None = None, workers: int = -1, resume: bool = False,
              stop_after: int | None = None) -> dict:
    """Train one variant into ``out/runs/<variant>`` (export to ``out/zoo/<variant>``)."""
    out = Path(out)
    device = pick_device(args.device)
    setup_torch(device)
    corpus, synthetic = open_data(data_dir, args, cache_dir or out / "cache", max_docs, workers)
    try:
        tr = Trainer(args, corpus, synthetic, out / "runs" / args.variant, out / "zoo" / args.variant,
                     eval_set_for(corpus, args.size))
        return tr.run(resume=resume, stop_after=stop_after)
    finally:
        synthetic.close()
