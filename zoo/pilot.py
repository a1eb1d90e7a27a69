"""The zoo v2 pilot (issue 12): one variant at two sizes on equal tokens, in one device command, to
choose the size at which retrieval forms within the budget (``python -m zoo pilot``;
``scripts/gpu_zoo_pilot.sh`` runs it on the GPU).

Both sizes train in one process on the same data stream (one corpus, one synthetic-row source: the
same tokens in the same order), one after the other (smaller first: its fresh synthetic epochs are
cached for the larger one). Steps are planned from measured throughput, not calibrated:

    tokens = SAFETY * (budget - setup - sum over sizes of (compile + evals)) / sum over sizes of 1 / tok_s

with ``THROUGHPUT`` (H200, batch 16 x 4096, bf16, torch.compile; issue 12's table: 4.7M parameters
3.08M tok/s, 15.7M 1.99M tok/s, scaled to these sizes' parameter counts), ``COMPILE_S`` per size and
``EVAL_S`` per evaluation point (both estimates, measured by the run and recorded). Every size also has
a hard wall-clock cap (its planned time x 1.3, less what the later sizes need), so the command ends in
time even when the estimates are wrong; a size cut by its cap says so (``status``).

``pilot.json`` (written after each size, so a killed command still leaves one): the plan, the
environment, and per size its parameter count, steps, tokens, status, measured tok/s, estimated compile
seconds, and the evaluation records (val loss / PPL, passkey accuracy at the training context, best
and top-5 full-attention retrieval score, the model's own LongPPL key tokens at trunc_len 1024 and
LongPPL over them, eval seconds), with the first step at which passkey accuracy reaches 0.9 and the
retrieval score crosses ``THRESHOLDS``. Runs live in ``<out>/runs/<variant>-<size>/`` (train_log.jsonl,
formation.json, qk/ series); no checkpoints, no exports.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from zoo.train import EVAL_FRACTIONS, TrainArgs, Trainer, pick_device
from zoo.train_all import _free, eval_set_for, open_data, setup_torch
from zoo.variants import context_of, get_size, get_variant, param_count, variant_config

# tok/s on one H200 (batch 16 x 4096, bf16 autocast, AdamW, torch.compile), from issue 12's table
# (4.7M: 3.08M, 15.7M: 1.99M, 36.8M: 1.03M), scaled by parameter count to the nearest measured size
THROUGHPUT = {"5m": 3.08e6 * 4.7 / 5.38, "10m": 1.99e6 * 15.7 / 10.49 * 0.8, "15m": 1.99e6 * 15.7 / 15.74}
COMPILE_S = 75.0  # per size: torch.compile's first steps (50 s measured for swa64 on an H100) + margin
EVAL_S = 6.0  # per evaluation point (NIAH rows, val loss, passkey greedy decoding, key tokens): estimate
SAFETY = 0.9
THRESHOLDS = (0.05, 0.1, 0.2)  # retrieval score (attention mass on the needle; chance ~ 0.005)
PASSKEY_OK = 0.9
PILOT_ARGS = dict(lr=2e-3, warmup_steps=100, synthetic_frac=0.25, synthetic_long_frac=0.5, synthetic_parts=16,
                  log_every=50, checkpoints=False, linear_backend="chunked")


def plan_steps(sizes: list[str], variant: str, seconds_left: float, batch: int, n_evals: int,
               compile_s: float = COMPILE_S, eval_s: float = EVAL_S, throughput: dict | None = None) -> dict:
    """Equal steps for ``sizes`` that fit ``seconds_left`` (see the module docstring), and each size's
    planned seconds."""
    tps = throughput or THROUGHPUT
    missing = [s for s in sizes if s not in tps]
    if missing:
        raise ValueError(f"sizes: no throughput estimate for {missing}; known: {list(tps)} (or give --steps)")
    context = context_of(sizes[0])
    overhead = {s: compile_s + n_evals * eval_s + 5.0 for s in sizes}
    inv = sum(1.0 / tps[s] for s in sizes)
    tokens = max(0.0, SAFETY * (seconds_left - sum(overhead.values())) / inv)
    steps = max(1, int(tokens // (batch * context)))
    planned = {s: steps * batch * context / tps[s] + overhead[s] for s in sizes}
    return {"steps": steps, "tokens": steps * batch * context, "planned_s": planned, "throughput": tps,
            "compile_s": compile_s, "eval_s": eval_s, "safety": SAFETY, "variant": variant}


def _records(tr: Trainer) -> list[dict]:
    keys = ("step", "tokens", "val_loss", "val_ppl", "passkey_acc", "passkey_length", "max_full", "top5_full",
            "max_swa", "n_key", "n_targets", "longppl_self", "trunc_len", "eval_seconds")
    return [{k: r[k] for k in keys if k in r} for r in tr.formation]


def _firsts(records: list[dict]) -> dict:
    def first(pred) -> int | None:
        return next((r["step"] for r in records if pred(r)), None)

    out: dict[str, Any] = {"passkey_ge_0.9": first(lambda r: (r.get("passkey_acc") or 0) >= PASSKEY_OK)}
    for t in THRESHOLDS:
        out[f"max_full_ge_{t}"] = first(lambda r, t=t: (r.get("max_full") or 0) >= t)
    out["n_key_ge_1000"] = first(lambda r: (r.get("n_key") or 0) >= 1000)
    return out


def _measured(run_dir: Path) -> dict:
    """Median tok/s of the log windows after the first (compile) window; wall seconds at the first log
    line (compilation + ``log_every`` steps)."""
    log = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines() if x.strip()]
    windows = [r for r in log if "tok_per_s" in r]
    rates = [r["tok_per_s"] for r in windows[1:]]
    return {"tok_per_s_median": statistics.median(rates) if rates else None,
            "first_log_elapsed_s": windows[0]["elapsed_s"] if windows else None}


def run_pilot(out: Path, data_dir: Path, variant: str, sizes: list[str], total_budget_s: float | None,
              steps: int | None = None, compile: bool = True, device: str = "auto", max_docs: int | None = None,
              workers: int = -1, n_evals: int | None = None, overrides: dict | None = None) -> dict:
    """Train ``variant`` at each of ``sizes`` on equal steps; returns (and writes ``out/pilot.json``)
    the summary. ``steps`` fixes the step count (else planned from ``total_budget_s``)."""
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gens = {get_size(s).generation for s in sizes}
    contexts = {context_of(s) for s in sizes}
    if len(sizes) < 1 or len(gens) != 1 or len(contexts) != 1:
        raise ValueError(f"sizes: give sizes of one generation and context, got {sizes}")
    for s in sizes:
        get_variant(variant, s)
    if (steps is None) == (total_budget_s is None):
        raise ValueError("steps/total_budget_s: give exactly one of them for the pilot")
    fractions = EVAL_FRACTIONS if n_evals is None else tuple((i + 1) / n_evals for i in range(n_evals))
    base = TrainArgs(variant=variant, size=sizes[0], steps=1, compile=compile, device=device,
                     eval_fractions=fractions, **{**PILOT_ARGS, **(overrides or {})})
    base.check()
    dev = pick_device(device)
    setup_torch(dev)
    corpus, synthetic = open_data(data_dir, base, out / "cache", max_docs, workers)
    eval_set = eval_set_for(corpus, sizes[0])
    setup_s = time.perf_counter() - t0
    if steps is None:
        plan = plan_steps(sizes, variant, total_budget_s - setup_s - 15.0, base.batch_size, len(fractions))
    else:
        plan = {"steps": steps, "tokens": steps * base.batch_size * corpus.seq_len, "planned_s": {}}
    summary: dict[str, Any] = {
        "variant": variant,
        "sizes": sizes,
        "plan": plan,
        "setup_s": round(setup_s, 1),
        "corpus": {"dir": str(data_dir), "sha256": corpus.sha256, "natural_tokens": corpus.natural_tokens,
                   "natural_rows": int(len(corpus.rows))},
        "args": asdict(replace(base, steps=plan["steps"])),
        "env": _env(dev),
        "results": {},
    }
    print(f"[pilot] {variant} at {', '.join(sizes)}: {plan['steps']} steps each ({plan['tokens']:,} tokens); "
          f"setup {setup_s:.1f} s", flush=True)
    _write(out, summary)
    try:
        for i, size in enumerate(sizes):
            summary["results"][size] = _one(out, corpus, synthetic, eval_set, base, size, plan, sizes[i + 1 :],
                                            total_budget_s, t0)
            _write(out, summary)
    finally:
        synthetic.close()
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    _write(out, summary)
    return summary


def _one(out, corpus, synthetic, eval_set, base, size, plan, later, total_budget_s, t0) -> dict:
    cap = None
    if total_budget_s is not None and plan["planned_s"]:
        left = total_budget_s - (time.perf_counter() - t0) - sum(plan["planned_s"][s] for s in later)
        mine = plan["planned_s"][size]
        cap = max(0.5 * mine, min(1.3 * mine, left))
    name = f"{base.variant}-{size}"
    args = replace(base, size=size, steps=plan["steps"], max_seconds=cap)
    s0 = time.perf_counter()
    tr = None
    try:
        tr = Trainer(args, corpus, synthetic, out / "runs" / name, None, eval_set)
        res = tr.run()
        recs = _records(tr)
        wall = time.perf_counter() - s0
        measured = _measured(tr.run_dir)
        evals = sum(r.get("eval_seconds") or 0 for r in recs)
        rate = measured["tok_per_s_median"]
        compile_est = wall - evals - (tr.tokens / rate if rate else 0.0)
        row = {
            "params": param_count(variant_config(base.variant, size)),
            "status": res.get("status"),
            "steps": tr.step,
            "tokens": tr.tokens,
            "cap_s": None if cap is None else round(cap, 1),
            "wall_s": round(wall, 1),
            "eval_s_total": round(evals, 1),
            "compile_estimate_s": round(max(0.0, compile_est), 1),
            **measured,
            "first": _firsts(recs),
            "records": recs,
        }
    except Exception as e:  # noqa: BLE001 - the other size still runs; the error is the result
        import traceback

        traceback.print_exc()
        row = {"status": f"failed: {type(e).__name__}: {e}"[:500], "wall_s": round(time.perf_counter() - s0, 1)}
    finally:
        tr = None
        _free()
    print(f"[pilot] {name}: " + json.dumps({k: v for k, v in row.items() if k != "records"}), flush=True)
    return row


def _env(dev: torch.device) -> dict:
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _write(out: Path, summary: dict) -> None:
    tmp = out / "pilot.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(out / "pilot.json")


def pack_outputs(work: Path, dest: Path, max_files: int = 6, max_total: int = 48 << 20) -> dict:
    """What the device returns besides pilot.json and the log: ``pilot_runs.tar.gz`` (each run's
    train_log.jsonl, formation.json, summary.json) and the Q/K series as ``qk_<k>.tar.gz`` archives of
    at most 15 MiB (whole points; runs in order, smallest size first) while ``max_files`` and
    ``max_total`` allow; what did not fit is listed (``left_out``)."""
    from zoo.package import MIB, _bins, _size, _tar

    work, dest = Path(work), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    runs = sorted(p for p in (work / "runs").glob("*") if p.is_dir())
    small = [f for r in runs for f in (r / n for n in ("train_log.jsonl", "formation.json", "summary.json"))
             if f.is_file()] + [f for f in (work / "site_manifest.json",) if f.is_file()]
    sizes = {"pilot_runs.tar.gz": _tar(dest / "pilot_runs.tar.gz", work, small)} if small else {}
    points = [(f, _size(f)) for r in runs for f in sorted((r / "qk").glob("*")) if f.is_file()]
    left: list[str] = []
    for i, b in enumerate(_bins(points, 15 * MIB)):
        fits = len(sizes) < max_files and sum(sizes.values()) + sum(_size(f) for f in b) <= max_total
        if not fits:
            left += [f.relative_to(work).as_posix() for f in b]
            continue
        sizes[f"qk_{i + 1}.tar.gz"] = _tar(dest / f"qk_{i + 1}.tar.gz", work, b)
    return {"archives": sizes, "left_out": left}


def table(summary: dict) -> str:
    """The pilot's records as a compact text table (one block per size)."""
    lines = [f"pilot: {summary['variant']}, {summary['plan']['steps']} steps per size "
             f"({summary['plan']['tokens']:,} tokens)"]
    for size, r in summary.get("results", {}).items():
        lines.append(f"{size}: {r.get('params', 0):,} params, status {r.get('status')}, {r.get('steps')} steps, "
                     f"{r.get('tok_per_s_median') or 0:,.0f} tok/s, compile ~{r.get('compile_estimate_s')} s, "
                     f"first: {r.get('first')}")
        lines.append(f"  {'step':>6} {'tokens':>12} {'val_ppl':>8} {'passkey':>7} {'max_full':>8} {'n_key':>6} "
                     f"{'longppl':>8} {'eval_s':>6}")
        for x in r.get("records", []):
            def f(k, nd=3, x=x):
                v = x.get(k)
                return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))

            lines.append(f"  {x['step']:>6} {x['tokens']:>12,} {f('val_ppl', 2):>8} {f('passkey_acc', 2):>7} "
                         f"{f('max_full'):>8} {f('n_key'):>6} {f('longppl_self', 2):>8} {f('eval_seconds', 1):>6}")
    return "\n".join(lines)
