"""The runner: RunSpec -> traces in the store, computed at most once.

``Runner.run(spec)`` resolves the model and dataset fingerprints, derives the run_id, and returns
at once if any store (the user store, then precomputed/) holds a successful run with that id.
Otherwise it takes a per-run lock (a thread lock plus a file lock, so concurrent threads and
processes asking for one run compute it once), checks again, runs the probe's dependencies,
applies the ablation, runs the probe with progress reporting, and writes the traces atomically.
Probes on one loaded (cached, shared) model run one at a time: an ablation changes that object.
A failing probe stores its error message and no tables, then re-raises.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from backend import datasets, model_refs, paths
from backend.params import PROBES
from backend.spec import RunSpec
from backend.store import TraceStore

Progress = Callable[[float, str], None]
_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()
# one probe at a time per loaded model: ablations and captures change the shared (cached) model object
_MODEL_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
SYNTHETIC = ("niah", "retrieval_heads")  # probes that generate their own inputs (data = haystack text)


@dataclass
class RunResult:
    run_id: str
    manifest: dict
    store: TraceStore
    cached: bool

    @property
    def tables(self) -> dict:
        return {name: self.store.read_table(self.run_id, name).to_pydict() for name in self.manifest["files"]}


class RunError(RuntimeError):
    """A probe failed; its message was stored with the run."""


class Runner:
    def __init__(self, store_root: str | os.PathLike | None = None, read_only_roots: list | None = None) -> None:
        self.store = TraceStore(store_root or paths.store_root())
        if read_only_roots is None:
            pre = paths.precomputed_store()
            read_only_roots = [pre] if pre.is_dir() else []
        self.extra = [TraceStore(r, read_only=True) for r in read_only_roots]
        self.computed: list[str] = []  # run_ids this runner computed (tests, logging)

    # -- identity -----------------------------------------------------------------------------
    def fingerprints(self, spec: RunSpec) -> dict:
        ref = model_refs.resolve(spec.model)
        out = {"model": model_refs.fingerprint(ref), "data": ""}
        if needs_docs(spec):
            _, _, out["data"] = datasets.resolve(spec.data, getattr(spec.typed_params, "n_docs", None))
        return out

    def run_id(self, spec: RunSpec) -> str:
        fp = self.fingerprints(spec)
        return spec.run_id(fp["model"], fp["data"])

    def lookup(self, run_id: str) -> RunResult | None:
        for store in [self.store, *self.extra]:
            if store.has(run_id, status="ok"):
                return RunResult(run_id, store.manifest(run_id), store, cached=True)
        return None

    # -- execution ----------------------------------------------------------------------------
    def run(self, spec: RunSpec, progress: Progress | None = None) -> RunResult:
        progress = progress or (lambda f, m: None)
        fps = self.fingerprints(spec)
        run_id = spec.run_id(fps["model"], fps["data"])
        hit = self.lookup(run_id)
        if hit:
            return hit
        with _thread_lock(run_id), FileLock(str(self._lock_path(run_id))):
            hit = self.lookup(run_id)
            if hit:
                return hit
            return self._compute(spec, run_id, fps, progress)

    def _lock_path(self, run_id: str) -> Path:
        d = self.store.root / "locks"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{run_id}.lock"

    def _compute(self, spec: RunSpec, run_id: str, fps: dict, progress: Progress) -> RunResult:
        from backend.probes.registry import dependencies, probe_function

        t0 = time.perf_counter()
        try:
            deps = [self.run(d, progress=lambda f, m: progress(0.0, m)) for d in dependencies(spec)]
            manifest = self._execute(spec, run_id, fps, deps, probe_function(spec.probe), progress, t0)
        except Exception as e:
            self.store.write_error(run_id, spec.canonical(), f"{type(e).__name__}: {e}",
                                   meta={"fingerprints": fps}, overwrite=True)
            raise
        self.computed.append(run_id)
        progress(1.0, "done")
        return RunResult(run_id, manifest, self.store, cached=False)

    def _execute(self, spec, run_id, fps, deps, fn, progress, t0) -> dict:
        from backend.loading import load
        from backend.probes.context import ProbeContext
        from models.apply import apply_ablation

        progress(0.0, f"loading {spec.model}")
        lm = load(spec.model)
        params = spec.typed_params
        docs = None
        if needs_docs(spec):
            _, docs, _ = datasets.resolve(spec.data, getattr(params, "n_docs", None))
        ctx = ProbeContext(spec, params, lm, docs, progress, self, meta={"_deps": deps})
        t1 = time.perf_counter()
        with _model_lock(lm.model), apply_ablation(lm.model, spec.ablation):
            tables = fn(ctx)
        ctx.meta.pop("_deps", None)
        meta = {
            "fingerprints": fps,
            "durations": {"load": t1 - t0, "probe": time.perf_counter() - t1},
            "probe_version": spec.probe_version,
            "ablation_text": spec.ablation.to_text(),
            "device": str(lm.device),
            **ctx.meta,
        }
        return self.store.write_run(run_id, spec.canonical(), tables, meta=meta, overwrite=True)


def needs_docs(spec: RunSpec) -> bool:
    """Text probes read documents; synthetic ones only for a natural-text haystack."""
    if spec.probe not in SYNTHETIC:
        return True
    return spec.data is not None or getattr(spec.typed_params, "haystack", "repeat") == "text"


def _thread_lock(run_id: str) -> threading.Lock:
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(run_id, threading.Lock())


def _model_lock(model) -> threading.RLock:
    with _THREAD_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.RLock()
        return lock


def known_probes() -> list[str]:
    return list(PROBES)
