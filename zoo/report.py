"""Compact text report of a trained and precomputed zoo root (``python -m zoo report``).

Reads ``train_summary.json``, ``formation.json``, ``precompute_summary.json`` and the store's sweep and
head-score tables; prints one table per phase: the numbers FINDINGS.md needs, at a glance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}" if abs(x) < 1e4 else f"{x:.3g}"
    return str(x)


def training_lines(root: Path) -> list[str]:
    s = _load(root / "train_summary.json")
    if not s:
        return ["training: no train_summary.json"]
    formation = _load(root / "formation.json") or {}
    lines = [
        f"training: {s.get('steps')} steps per variant, {s.get('seconds')} s total",
        f"{'variant':<11} {'status':<12} {'steps':>5} {'tokens':>11} {'loss':>6} {'val':>6} {'s':>5}  "
        "max full-attn retrieval score over training",
    ]
    for name, v in s.get("variants", {}).items():
        curve = " ".join(_fmt(r.get("max_full"), 2) for r in formation.get(name, []))
        lines.append(
            f"{name:<11} {str(v.get('status'))[:12]:<12} {_fmt(v.get('steps')):>5} "
            f"{v.get('tokens_seen') or 0:>11,} {_fmt(v.get('final_train_loss'), 2):>6} "
            f"{_fmt(v.get('final_val_loss'), 2):>6} {_fmt(v.get('train_seconds'), 0):>5}  {curve}"
        )
    return lines


def _sweep(store, run_id: str) -> dict[tuple[str, float], float]:
    try:
        t = store.read_table(run_id, "sweep").to_pydict()
    except Exception:  # noqa: BLE001 - a missing table is reported as "-"
        return {}
    return {(n, x): y for n, x, y in zip(t["name"], t["x"], t["y"], strict=True)}


def _best_head(store, run_id: str) -> float | None:
    try:
        t = store.read_table(run_id, "head_scores").to_pydict()
    except Exception:  # noqa: BLE001
        return None
    vals = [
        s for s, k in zip(t["score"], t["layer_type"], strict=True) if s is not None and k == "full_attention"
    ]
    return max(vals) if vals else None


def precompute_lines(root: Path) -> list[str]:
    s = _load(root / "precompute_summary.json")
    if not s:
        return ["precompute: no precompute_summary.json"]
    from backend.store import TraceStore

    store = TraceStore(root / "store", read_only=True)
    steps = s.get("steps", {})
    ks = s.get("config", {}).get("ks", [])
    k_lo = min(ks) if ks else None
    lines = [
        f"precompute: {len(steps)} runs ok, {len(s.get('failed', {}))} failed, {len(s.get('skipped', []))} "
        f"skipped, {s.get('seconds')} s; sweep k={k_lo}: LongPPL with full / efficient layers restricted",
        f"{'variant':<11} {'ppl':>7} {'longppl':>8} {'rf_full':>8} {'rf_eff':>8} {'passkey':>7} {'niah':>6} "
        f"{'best_head':>9}",
    ]
    names = sorted(
        {k.split(":", 1)[1] for k in steps} | {k.split(":", 1)[1] for k in s.get("failed", {}) if ":" in k}
    )
    for v in names:
        lp = steps.get(f"longppl:{v}", {})
        sw = _sweep(store, steps[f"sweep:{v}"]["run_id"]) if f"sweep:{v}" in steps else {}
        rh = (
            _best_head(store, steps[f"retrieval_heads:{v}"]["run_id"])
            if f"retrieval_heads:{v}" in steps
            else None
        )
        lines.append(
            f"{v:<11} {_fmt(lp.get('ppl'), 2):>7} {_fmt(lp.get('longppl'), 2):>8} "
            f"{_fmt(sw.get(('restrict_full', float(k_lo or 0))), 2):>8} "
            f"{_fmt(sw.get(('restrict_efficient', float(k_lo or 0))), 2):>8} "
            f"{_fmt(steps.get(f'niah_passkey:{v}', {}).get('accuracy'), 2):>7} "
            f"{_fmt(steps.get(f'niah:{v}', {}).get('accuracy'), 2):>6} {_fmt(rh):>9}"
        )
    for name, err in s.get("failed", {}).items():
        lines.append(f"FAILED {name}: {err[:160]}")
    if s.get("skipped"):
        lines.append(f"SKIPPED (budget): {', '.join(s['skipped'])}")
    return lines


def report(root: Path) -> str:
    root = Path(root)
    return "\n".join(training_lines(root) + [""] + precompute_lines(root))
