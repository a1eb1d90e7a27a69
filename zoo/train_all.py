"""Train zoo variants: one (``train``) or all seven on equal data (``train-all``).

``train-all`` gives every variant the same number of steps, hence the same tokens in the same order
(equal data). With ``total_budget_s`` that number comes from a calibration pass: each variant is
built and timed for a few steps (this also pays every kernel compilation once, before the real runs;
compile caches persist in the process), one evaluation and one checkpoint are timed, and

    steps = 0.92 * (budget left - per-variant overheads) / sum over variants of seconds per step.

``max_tokens`` caps that number. The plan is saved to ``<out>/plan.json`` and reused on a rerun,
which skips finished variants and resumes unfinished ones from their latest checkpoint. Each variant
also gets a hard wall-clock cap (:func:`variant_cap`). A variant that raises (kernel compile error,
out of memory) is retried from scratch with the next ``FALLBACKS`` entry (in calibration too); the
kernels it used are recorded in its card. Layout of ``out``::

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

from zoo.data import Corpus, SyntheticSource, check_corpus, default_workers, load_corpus
from zoo.formation import EvalSet, make_eval_set
from zoo.train import TrainArgs, Trainer, pick_device
from zoo.variants import context_of, get_size, get_variant, variants_of

# NIAH prompt lengths of the formation score: v1 as bundled; v2 adds the whole context (a needle up to
# 4K tokens back: beyond every window of the v2 variants)
EVAL_LENGTHS = {"v1": (1024, 2048), "v2": (1024, 2048, 4096), "smoke": (128, 192), "smoke-v2": (256,)}
# smoke-v2: the v2 smoke context (256); its needle + query alone take ~200 tokens with the test tokenizer
KEY_CHUNKS = 16  # held-out windows for the training-time key-token count (v2 sizes)
# tried in order when a variant fails (compile / kernel / memory errors): SDPA with a dense mask instead
# of FlexAttention, then torch chunked recurrences instead of fla, then 4-row micro-batches
FALLBACKS: tuple[dict, ...] = (
    {},
    {"attn_backend": "sdpa"},
    {"attn_backend": "sdpa", "linear_backend": "chunked"},
    {"attn_backend": "sdpa", "linear_backend": "chunked", "micro_batch": 4},
)


def setup_torch(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")


def open_data(
    data_dir: Path, args: TrainArgs, cache_dir: Path | None, max_docs: int | None = None, workers: int = -1
) -> tuple[Corpus, SyntheticSource]:
    """Corpus rows (cached) and the fresh-synthetic source shared by all variants of a process."""
    os.environ["TOKENIZERS_PARALLELISM"] = "true"  # encoding is deterministic either way; packing is faster
    corpus = load_corpus(data_dir, context_of(args.size), cache_dir, max_docs)
    check_corpus(corpus, args.corpus_sha256)
    if workers < 0:
        workers = default_workers(pick_device(args.device).type)
    synthetic = SyntheticSource(corpus, args.synthetic_frac, args.seed, workers=workers,
                                long_frac=args.synthetic_long_frac, parts=args.synthetic_parts)
    return corpus, synthetic


def eval_set_for(corpus: Corpus, size: str, lengths: tuple[int, ...] | None = None) -> EvalSet:
    """The formation samples (NIAH at ``lengths``, default by size) on held-out val text, + val rows;
    for v2 sizes also passkey at the training context and key-token counts at trunc_len = context / 4
    (1024 at 4096; see zoo.formation)."""
    s = get_size(size)
    default = EVAL_LENGTHS[("smoke" if s.generation == "v1" else "smoke-v2") if s.smoke else s.generation]
    v2 = s.generation == "v2"
    return make_eval_set(
        corpus.tokenizer_dir,
        corpus.val_texts,
        corpus.val_rows,
        corpus.pad_id,
        lengths=lengths or default,
        passkey_length=s.context if v2 else None,
        passkey_depths=(0.0, 1.0) if s.smoke else (0.0, 0.25, 0.5, 0.75, 1.0),
        passkey_samples=1 if s.smoke else 2,
        key_chunks=(2 if s.smoke else KEY_CHUNKS) if v2 else 0,
        seq_len=s.context,
        trunc_len=s.context // 4,
        stride=s.context // 16,
    )


def _free() -> None:
    """Release GPU memory of trainers the caller has dropped (set its variable to None first)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _time_steps(tr: Trainer, warm: int, timed: int) -> float:
    times = []
    for k in range(warm + timed):
        s = time.perf_counter()
        tr.train_step()
        tr._sync()
        if k >= warm:
            times.append(time.perf_counter() - s)
    return sorted(times)[len(times) // 2]


def _fallbacks(base: TrainArgs, start: dict | None = None) -> list[dict]:
    """FALLBACKS from ``start`` on, without those that ``micro_batch`` cannot satisfy."""
    out = [f for f in FALLBACKS if base.batch_size % f.get("micro_batch", 1) == 0]
    return out[out.index(start) :] if start in out else out


def calibrate(
    base: TrainArgs,
    variants: list[str],
    corpus: Corpus,
    synthetic: SyntheticSource,
    eval_set: EvalSet,
    scratch: Path,
    warm: int = 2,
    timed: int = 4,
) -> dict:
    """Seconds per step of each variant (median of ``timed`` steps after ``warm`` steps; the first
    FALLBACKS entry that works), and the cost of one evaluation and one checkpoint (first variant)."""
    out: dict = {"sec_per_step": {}, "overrides": {}, "failed": {}, "setup_s": {}}
    for name in variants:
        t0 = time.perf_counter()
        for fb in _fallbacks(base):
            tr = None
            try:
                tr = Trainer(
                    replace(base, variant=name, steps=10**6, time_budget_s=None, max_seconds=None, **fb),
                    corpus,
                    synthetic,
                    scratch / name,
                    eval_set=eval_set,
                    quiet=True,
                )
                tr.run_dir.mkdir(parents=True, exist_ok=True)
                out["sec_per_step"][name] = _time_steps(tr, warm, timed)
                out["overrides"][name] = fb
                if "eval_s" not in out:
                    tr.evaluate()
                    s = time.perf_counter()
                    tr.evaluate()
                    out["eval_s"] = time.perf_counter() - s
                    s = time.perf_counter()
                    tr.save()
                    out["save_s"] = time.perf_counter() - s
                out["failed"].pop(name, None)
                break
            except Exception as e:  # noqa: BLE001 - try the next fallback
                out["failed"][name] = f"{type(e).__name__}: {e}"[:500]
                print(
                    f"[calibrate] {name} with {fb or 'default kernels'} failed: {out['failed'][name][:200]}",
                    flush=True,
                )
            finally:
                tr = None
                _free()
        out["setup_s"][name] = round(time.perf_counter() - t0, 2)
        if name in out["sec_per_step"]:
            print(
                f"[calibrate] {name}: {out['sec_per_step'][name]:.4f} s/step {out['overrides'][name] or ''} "
                f"(setup incl. compile {out['setup_s'][name]:.1f} s)",
                flush=True,
            )
    out.setdefault("eval_s", 0.0)
    out.setdefault("save_s", 0.0)
    shutil.rmtree(scratch, ignore_errors=True)
    return out


def plan_steps(cal: dict, variants: list[str], seconds_left: float, n_evals: int, warmup: int) -> int:
    """Equal step count for all variants that fits ``seconds_left`` (see the module docstring)."""
    ok = [v for v in variants if v in cal["sec_per_step"]]
    if not ok:
        raise RuntimeError(f"calibration: every variant failed: {cal.get('failed')}")
    per_variant = n_evals * (cal["eval_s"] + cal["save_s"]) + 4.0
    spent = sum(cal["sec_per_step"][v] for v in ok)
    steps = int(0.92 * (seconds_left - per_variant * len(ok)) / spent)
    return max(steps, warmup + 1)


def variant_cap(cal: dict, steps: int, n_evals: int, v: str, later: list[str], seconds_left: float) -> float:
    """Hard wall-clock cap of variant ``v``: 1.3x its planned time (steps x seconds per step, plus
    evaluation/checkpoint/export overheads), but no more than what leaves every ``later`` variant
    its planned time within ``seconds_left``, and no less than half its planned time."""
    sps = cal["sec_per_step"]

    def planned(w: str) -> tuple[float, float]:
        return steps * sps.get(w, max(sps.values())), n_evals * (cal["eval_s"] + cal["save_s"]) + 10.0

    train, over = planned(v)
    reserve = sum(sum(planned(w)) for w in later)
    return max(0.5 * (train + over), min(1.3 * train + over, seconds_left - reserve))


def train_all(
    out: Path,
    data_dir: Path,
    base: TrainArgs,
    variants: list[str] | None = None,
    total_budget_s: float | None = None,
    cache_dir: Path | None = None,
    max_docs: int | None = None,
    workers: int = -1,
    resume: bool = True,
    max_tokens: int | None = None,
    eval_lengths: tuple[int, ...] | None = None,
) -> dict:
    """Train ``variants`` (default all seven) with equal steps; returns the summary (also saved).

    With ``total_budget_s``, ``max_tokens`` caps the planned steps (the corpus is small: past ~12
    epochs more steps mostly memorise it), so the run may end before the budget."""
    t_start = time.perf_counter()
    variants = list(variants or variants_of(base.size))
    for v in variants:
        get_variant(v, base.size)
    if (base.steps is None) == (total_budget_s is None):
        raise ValueError("steps/total_budget_s: give exactly one of them for train-all")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(base.device)
    setup_torch(device)
    corpus, synthetic = open_data(data_dir, base, cache_dir or out / "cache", max_docs, workers)
    plan_path = out / "plan.json"
    todo = [
        v
        for v in variants
        if not resume
        or not (out / "runs" / v / "summary.json").is_file()
        or not (out / "zoo" / v / "config.json").is_file()
    ]
    plan = json.loads(plan_path.read_text()) if resume and plan_path.is_file() else None
    if plan and todo:  # resuming a round: on the tokens its plan was made for
        check_corpus(corpus, plan.get("corpus_sha256"))
    eval_set = eval_set_for(corpus, base.size, eval_lengths) if todo else None
    if base.steps is not None:
        plan = {"steps": base.steps, "size": base.size}
    elif todo and (plan is None or plan.get("size") != base.size or "calibration" not in plan):
        cal = calibrate(base, todo, corpus, synthetic, eval_set, out / "calibration")
        left = total_budget_s - (time.perf_counter() - t_start)
        steps = plan_steps(cal, todo, left, len(base.eval_fractions), base.warmup_steps)
        capped = steps
        if max_tokens:
            capped = max(base.warmup_steps + 1, min(steps, max_tokens // (base.batch_size * corpus.seq_len)))
        plan = {
            "steps": capped,
            "steps_fitting_budget": steps,
            "max_tokens": max_tokens,
            "size": base.size,
            "calibration": cal,
            "budget_s": total_budget_s,
            "seconds_left_after_calibration": round(left, 1),
        }
    plan = {**(plan or {"steps": 0, "size": base.size}), "corpus_sha256": corpus.sha256,
            "natural_tokens": corpus.natural_tokens}
    if todo:
        plan_path.write_text(json.dumps({**plan, "args": asdict(base)}, indent=1), encoding="utf-8")
    steps = int(plan["steps"])
    print(
        f"[train-all] {len(todo)} of {len(variants)} variants to train, {steps} steps each "
        f"({steps * base.batch_size * corpus.seq_len:,} tokens)",
        flush=True,
    )
    results: dict[str, dict] = {}
    for v in variants:
        summary_path = out / "runs" / v / "summary.json"
        if v not in todo:
            results[v] = json.loads(summary_path.read_text())
            continue
        cal = plan.get("calibration") or {}
        if v in cal.get("failed", {}) and v not in cal.get("sec_per_step", {}):
            results[v] = {"name": v, "status": f"failed in calibration: {cal['failed'][v]}"}
            continue
        cap = None
        if cal.get("sec_per_step") and total_budget_s is not None:
            later = [w for w in variants[variants.index(v) + 1 :] if w in todo]
            left = total_budget_s - (time.perf_counter() - t_start)
            cap = variant_cap(cal, steps, len(base.eval_fractions), v, later, left)
        results[v] = _train_variant(
            replace(base, variant=v, steps=steps, time_budget_s=None, max_seconds=cap),
            corpus,
            synthetic,
            out,
            eval_set,
            resume,
            cal.get("overrides", {}).get(v),
        )
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


def _train_variant(
    args: TrainArgs,
    corpus: Corpus,
    synthetic: SyntheticSource,
    out: Path,
    eval_set: EvalSet,
    resume: bool,
    start: dict | None,
) -> dict:
    """Train one variant of train-all; on an exception retry from scratch with the next FALLBACKS
    entry. Returns its summary (or a failure record)."""
    import traceback

    run_dir = out / "runs" / args.variant
    error = ""
    for i, fb in enumerate(_fallbacks(args, start or {})):
        tr = None
        try:
            tr = Trainer(
                replace(args, **fb), corpus, synthetic, run_dir, out / "zoo" / args.variant, eval_set
            )
            return tr.run(resume=resume and i == 0)
        except Exception as e:  # noqa: BLE001 - keep going: one broken variant must not cost the others
            traceback.print_exc()
            error = f"{type(e).__name__}: {e}"[:500]
            print(
                f"[train-all] {args.variant} failed with {fb or 'default kernels'}: {error[:200]}", flush=True
            )
            shutil.rmtree(run_dir, ignore_errors=True)
        finally:
            tr = None
            _free()
    return {"name": args.variant, "status": f"failed: {error}"}


def train_one(
    out: Path,
    data_dir: Path,
    args: TrainArgs,
    cache_dir: Path | None = None,
    max_docs: int | None = None,
    workers: int = -1,
    resume: bool = False,
    stop_after: int | None = None,
) -> dict:
    """Train one variant into ``out/runs/<variant>`` (export to ``out/zoo/<variant>``)."""
    out = Path(out)
    device = pick_device(args.device)
    setup_torch(device)
    corpus, synthetic = open_data(data_dir, args, cache_dir or out / "cache", max_docs, workers)
    try:
        tr = Trainer(
            args,
            corpus,
            synthetic,
            out / "runs" / args.variant,
            out / "zoo" / args.variant,
            eval_set_for(corpus, args.size),
        )
        return tr.run(resume=resume, stop_after=stop_after)
    finally:
        synthetic.close()
