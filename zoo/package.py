"""Pack a zoo work dir into at most ``max_files`` tar.gz files of at most ``max_file`` bytes each.

Every archive holds paths relative to the work dir, so all of them extract into ``precomputed/``:
``zoo/<variant>/`` (checkpoints) and the traces (``store/``, ``data/``, ``formation.json``, plans,
summaries, ``logs/``, ``runs/*/{train_log.jsonl,formation.json,summary.json}``). Traces go into
``zoo_traces.tar.gz`` (split into ``zoo_traces_2.tar.gz`` ... by whole run directories when they
exceed the size limit); checkpoints into ``zoo_<variant>.tar.gz``, two per archive
(``zoo_<a>--<b>.tar.gz``) when that is needed to stay within ``max_files``; a checkpoint larger than
the limit (a sharded v2 ``10m`` / ``15m`` export) is split by its files into ``zoo_<variant>.tar.gz``,
``zoo_<variant>_2.tar.gz`` ... (its ``qk/`` series travels as one item). Store lock files are
left out. Sizes are planned from uncompressed bytes (Parquet and bf16 weights barely compress).
"""

from __future__ import annotations

import tarfile
from pathlib import Path

MIB = 1 << 20
TRACE_TOP = ("data", "formation.json", "plan.json", "train_summary.json", "precompute_summary.json", "logs")
RUN_FILES = ("train_log.jsonl", "formation.json", "summary.json")


def _size(path: Path) -> int:
    return (
        path.stat().st_size
        if path.is_file()
        else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    )


def _bins(items: list[tuple[Path, int]], limit: int) -> list[list[Path]]:
    """Consecutive greedy bins of items whose summed size stays <= limit (an oversized item alone)."""
    bins: list[list[Path]] = [[]]
    used = 0
    for path, size in items:
        if bins[-1] and used + size > limit:
            bins.append([])
            used = 0
        bins[-1].append(path)
        used += size
    return [b for b in bins if b]


def _tar(out: Path, work: Path, paths: list[Path]) -> int:
    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if "/locks" in f"/{info.name}" or ".tmp-" in info.name else info

    tmp = out.with_name(out.name + ".part")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tf:
        for p in paths:
            tf.add(p, arcname=p.relative_to(work).as_posix(), filter=keep)
    tmp.replace(out)
    return out.stat().st_size


def package(
    work: Path, out: Path, max_files: int = 8, max_file: int = 16 * MIB, max_total: int = 60 * MIB
) -> dict:
    """Write the archives into ``out``; returns {archive name: size} and any warnings."""
    work, out = Path(work), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("zoo_*.tar.gz"):
        old.unlink()
    limit = int(max_file * 0.9)
    trace_items = [(work / n, _size(work / n)) for n in TRACE_TOP if (work / n).exists()]
    trace_items += [(p, _size(p)) for n in RUN_FILES for p in sorted(work.glob(f"runs/*/{n}"))]
    runs_dir = work / "store" / "runs"
    if runs_dir.is_dir():
        trace_items += [(p, _size(p)) for p in sorted(runs_dir.iterdir()) if p.is_dir()]
    trace_bins = _bins(trace_items, limit)
    models = sorted((p, _size(p)) for p in (work / "zoo").glob("*") if (p / "config.json").is_file())
    big = [(p, _bins([(f, _size(f)) for f in sorted(p.iterdir())], limit)) for p, s in models if s > limit]
    slots = max(1, max_files - len(trace_bins) - sum(len(b) for _, b in big))
    model_bins = [[p] for p, s in models if s <= limit]
    while len(model_bins) > slots:  # merge the two smallest bins
        model_bins.sort(key=lambda b: sum(_size(p) for p in b))
        a, b = model_bins.pop(0), model_bins.pop(0)
        model_bins.append(a + b)
    sizes: dict[str, int] = {}
    warnings: list[str] = []
    for b in sorted(model_bins, key=lambda b: b[0].name):
        name = f"zoo_{'--'.join(p.name for p in b)}.tar.gz"
        sizes[name] = _tar(out / name, work, b)
    for p, parts in big:
        for i, files in enumerate(parts):
            name = f"zoo_{p.name}.tar.gz" if i == 0 else f"zoo_{p.name}_{i + 1}.tar.gz"
            sizes[name] = _tar(out / name, work, files)
    for i, b in enumerate(trace_bins):
        name = "zoo_traces.tar.gz" if i == 0 else f"zoo_traces_{i + 1}.tar.gz"
        sizes[name] = _tar(out / name, work, b)
    if len(sizes) > max_files:
        warnings.append(f"{len(sizes)} archives > {max_files} allowed")
    for name, s in sizes.items():
        if s > max_file:
            warnings.append(f"{name} is {s / MIB:.1f} MiB > {max_file / MIB:.0f} MiB")
    if sum(sizes.values()) > max_total:
        warnings.append(f"total {sum(sizes.values()) / MIB:.1f} MiB > {max_total / MIB:.0f} MiB")
    return {"archives": sizes, "total_mib": round(sum(sizes.values()) / MIB, 2), "warnings": warnings}
