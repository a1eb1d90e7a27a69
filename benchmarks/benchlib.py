"""Shared helpers of the GPU benchmark scripts (bench_mixers.py, bench_probes.py).

- ``measure(fn, device)``: warm-up call(s), then the median of timed calls (CUDA events on GPU,
  perf_counter on CPU) and the peak memory of the timed calls (``max_memory_allocated`` after
  ``reset_peak_memory_stats``; CUDA only).
- ``Bench``: guarded rows. ``bench.row(section, name, fn)`` runs ``fn() -> dict`` and records it;
  an exception (e.g. CUDA OOM) records status OOM/FAIL for that row and the script goes on. A soft
  time budget skips rows once exceeded (status SKIP). Results are re-written to the ``--out`` JSON
  after every row, so a killed run still leaves what it measured.
- ``print_table``: the compact final tables.
- ``bench_parser`` / ``pick_device``: the command-line options and device choice the scripts share.

Testing the guards: ``BENCH_INJECT_OOM="section/name;section/name"`` makes those rows raise an OOM.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GIB = 2**30


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    """Drop garbage and cached blocks (after a failure or before a new model)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(
    fn: Callable[[], Any],
    device: torch.device,
    warmup: int = 1,
    min_reps: int = 3,
    max_reps: int = 10,
    target_s: float = 1.0,
) -> dict:
    """Time ``fn``: ``warmup`` untimed calls (the first may compile), then timed calls whose number is
    chosen from the first timed call (about ``target_s`` in total, within [min_reps, max_reps]; calls
    over 1.5 s get at least 2 reps). Returns ms (median), ms_all, first_call_s, peak_gib, base_gib and
    ``result`` (the last call's return value; the previous one is dropped before each call)."""
    t0 = time.perf_counter()
    result = None
    for _ in range(warmup):
        result = None
        result = fn()
    sync(device)
    first_call_s = time.perf_counter() - t0
    result = None
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times: list[float] = []
    reps = max_reps
    while len(times) < reps:
        result = None
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            result = fn()
            times.append((time.perf_counter() - t) * 1e3)
        if len(times) == 1:
            one = times[0] / 1e3
            floor = 2 if one > 1.5 else min_reps
            reps = max(floor, min(max_reps, int(target_s / max(one, 1e-6))))
    out = {
        "ms": statistics.median(times),
        "ms_all": [round(t, 3) for t in times],
        "first_call_s": round(first_call_s, 3),
        "result": result,
    }
    if cuda:
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / GIB
        out["base_gib"] = base / GIB
    return out


def timed_once(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """(fn(), seconds) with device syncs around the call."""
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def _clean(value: Any) -> Any:
    """JSON-safe copy (NaN/inf -> None; tensors/numpy scalars -> Python numbers)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items() if k != "result"}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class Bench:
    """Guarded, budgeted rows with incremental JSON output."""

    def __init__(self, out: str | None, device: torch.device, meta: dict, budget_s: float) -> None:
        self.out = Path(out) if out else None
        self.device, self.meta, self.budget_s = device, meta, budget_s
        self.rows: list[dict] = []
        self.ratios: list[dict] = []
        self.t0 = time.perf_counter()
        self._section_t0: dict[str, float] = {}
        if self.out:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        self.save()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def section(self, name: str) -> None:
        """Announce a section (its elapsed time is printed by ``end_section``)."""
        self._section_t0[name] = time.perf_counter()
        print(f"--- section {name} (t={self.elapsed():.1f}s)", flush=True)

    def end_section(self, name: str) -> None:
        dt = time.perf_counter() - self._section_t0.get(name, self.t0)
        self.meta.setdefault("section_s", {})[name] = round(dt, 2)
        print(f"--- section {name} done in {dt:.1f}s (t={self.elapsed():.1f}s)", flush=True)
        self.save()

    def row(self, section: str, name: str, fn: Callable[[], dict], **info: Any) -> dict:
        """Run ``fn() -> dict of metrics`` guarded; record and print one row; return it."""
        rec: dict[str, Any] = {"section": section, "name": name, **info}
        if self.elapsed() > self.budget_s:
            rec.update(status="SKIP", note=f"time budget {self.budget_s:.0f}s exceeded")
        else:
            t = time.perf_counter()
            try:
                if f"{section}/{name}" in os.environ.get("BENCH_INJECT_OOM", "").split(";"):
                    raise torch.OutOfMemoryError("injected by BENCH_INJECT_OOM (testing the guard)")
                rec.update(fn())
                rec.setdefault("status", "ok")
            except Exception as err:  # one failing row must not stop the script
                rec.update(
                    status="OOM" if _is_oom(err) else "FAIL", note=f"{type(err).__name__}: {err}"[:300]
                )
                if not _is_oom(err):
                    traceback.print_exc(limit=4)
            rec["wall_s"] = round(time.perf_counter() - t, 2)
            free(self.device)
        rec.pop("result", None)
        self.rows.append(rec)
        shown = {k: v for k, v in rec.items() if k not in ("section", "name", "ms_all")}
        print(f"[{self.elapsed():7.1f}s] {section}/{name}: " + json.dumps(_clean(shown)), flush=True)
        self.save()
        return rec

    def ratio(
        self, name: str, value: float | None, goal: str = "", ok: bool | None = None, **info: Any
    ) -> None:
        """Record a derived number (e.g. a speed-up); ``ok`` None = no goal / not computable."""
        verdict = "-" if ok is None else ("MET" if ok else "NOT MET")
        rec = {"name": name, "value": value, "goal": goal, "verdict": verdict, **info}
        self.ratios.append(rec)
        print(f"[{self.elapsed():7.1f}s] ratio {name}: {_fmt(value)} {goal} {verdict}", flush=True)
        self.save()

    def save(self) -> None:
        if not self.out:
            return
        data = {
            "meta": self.meta,
            "elapsed_s": round(self.elapsed(), 2),
            "rows": self.rows,
            "ratios": self.ratios,
        }
        tmp = self.out.with_suffix(self.out.suffix + ".tmp")
        tmp.write_text(json.dumps(_clean(data), indent=1))
        tmp.replace(self.out)

    def get(self, section: str, name: str) -> dict | None:
        """The recorded row (status ok only), else None."""
        for r in self.rows:
            if r["section"] == section and r["name"] == name and r.get("status") == "ok":
                return r
        return None

    def finish(self, columns: list[str]) -> None:
        print_table(self.rows, ["section", "name", *columns, "status"])
        if self.ratios:
            print_table(self.ratios, ["name", "value", "goal", "verdict"])
        print(f"total wall {self.elapsed():.1f}s; sections: {self.meta.get('section_s', {})}", flush=True)
        self.save()


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.4g}"
        return f"{v:.2e}"
    return str(v)


def print_table(rows: list[dict], columns: list[str]) -> None:
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print()
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    print(flush=True)


def env_meta(device: torch.device) -> dict:
    meta = {"torch": torch.__version__, "device": str(device), "python": sys.version.split()[0]}
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
        meta["gpu_mem_gib"] = round(torch.cuda.get_device_properties(device).total_memory / GIB, 1)
    return meta


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def random_ids(vocab: int, length: int, device: torch.device, seed: int, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=g).to(device)


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """A parser (description: the first line of ``doc``) with the shared --out, --smoke, --budget-s."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON results path")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on CPU (exercise every code path)")
    ap.add_argument("--budget-s", type=float, default=240.0, help="soft budget: later rows SKIP once exceeded")
    return ap


def pick_device(smoke: bool) -> torch.device | None:
    """CPU for --smoke, else CUDA; None (after a message on stderr) when CUDA is not available."""
    if smoke:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    print("no CUDA device; use --smoke for a tiny CPU run", file=sys.stderr)
    return None
