"""Merge zoo roots trained in separate rounds into one (``python -m zoo merge --into ROOT SRC...``).

A round (one device command) trains some variants into its own work root and precomputes their traces;
its archives extract into a directory of the same layout (``zoo.package``). Merging unions them:

* ``zoo/<variant>/``, ``runs/<variant>/``, ``store/runs/<run_id>/``: copied; a name present in two
  sources must not differ (a store run is identified by its run_id, so a run that two rounds both
  computed, e.g. the evaluator's key tokens, is the same run and kept once);
* ``formation.json``, ``train_summary.json`` (``variants``), ``precompute_summary.json`` (``steps``,
  ``failed``, ``skipped``): per-variant / per-step unions; ``train_summary.json`` keeps the ``steps``
  of every source under ``rounds``;
* ``plan.json`` and ``logs/`` go to ``rounds/<source name>/``; ``data/`` must be identical everywhere;
  ``dashboard.json``: the first source's.
"""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path
from typing import Any

UNION_DIRS = ("zoo", "runs", "store/runs")


def _load(p: Path) -> Any:
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


def merge(into: Path, sources: list[Path]) -> dict:
    """Merge ``sources`` into ``into`` (created if needed; may itself hold an earlier merge)."""
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    added: dict[str, list[str]] = {d: [] for d in UNION_DIRS}
    formation = _load(into / "formation.json") or {}
    train = _load(into / "train_summary.json") or {"variants": {}, "rounds": {}}
    pre = _load(into / "precompute_summary.json") or {"steps": {}, "failed": {}, "skipped": []}
    for src in map(Path, sources):
        for d in UNION_DIRS:
            for item in sorted((src / d).iterdir()) if (src / d).is_dir() else []:
                dst = into / d / item.name
                if dst.exists():
                    if not _same_tree(item, dst):
                        raise ValueError(f"merge: {d}/{item.name} differs between {src} and {into}")
                    continue
                shutil.copytree(item, dst)
                added[d].append(item.name)
        if (src / "store" / "READ_ONLY").is_file() and not (into / "store" / "READ_ONLY").exists():
            shutil.copyfile(src / "store" / "READ_ONLY", into / "store" / "READ_ONLY")
        if (src / "data").is_dir():
            if (into / "data").is_dir():
                if not _same_tree(src / "data", into / "data"):
                    raise ValueError(f"merge: data/ of {src} differs from {into}'s (another corpus build?)")
            else:
                shutil.copytree(src / "data", into / "data")
        formation.update(_load(src / "formation.json") or {})
        t = _load(src / "train_summary.json")
        if t:
            train["variants"].update(t.get("variants", {}))
            train["rounds"][src.name] = {"steps": t.get("steps"), "variants": sorted(t.get("variants", {}))}
        p = _load(src / "precompute_summary.json")
        if p:
            for k in ("steps", "failed"):
                pre[k].update(p.get(k, {}))
            pre["skipped"] = sorted(set(pre["skipped"]) | set(p.get("skipped", [])))
            pre.setdefault("config", p.get("config"))
        for name in ("plan.json", "logs"):
            if (src / name).exists():
                dst = into / "rounds" / src.name / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if (src / name).is_dir() else shutil.copyfile)(src / name, dst)
        if (src / "dashboard.json").is_file() and not (into / "dashboard.json").exists():
            shutil.copyfile(src / "dashboard.json", into / "dashboard.json")
    for name, obj in (("formation.json", formation), ("train_summary.json", train),
                      ("precompute_summary.json", pre)):
        (into / name).write_text(json.dumps(obj, indent=1, default=str) + "\n", encoding="utf-8")
    return {"into": str(into), "added": added, "variants": sorted(train["variants"])}
