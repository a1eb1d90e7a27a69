"""The runner: RunSpec -> traces in the store, computed at most once.

``Runner.run(spec)`` resolves the model and dataset refs once (fingerprints, and the documents the
probe will read), derives the run_id, and returns at once if any store (the user store, then
precomputed/) holds a successful run with that id, or the same run under another spelling of its
ablation (:meth:`Runner.equivalent`: the run_id stays the hash of the spec as spelled; see DESIGN.md).
Otherwise it takes a per-run lock (a thread lock
plus a file lock, so concurrent threads and processes asking for one run compute it once), checks
again, loads the model, runs the probe's dependencies (given the loaded model's layer types),
applies the ablation, runs the probe (``backend.probes.registry``) with progress reporting, checks
that it returned the tables it declares, and writes the traces atomically.
Probes on one loaded (cached, shared) model run one at a time: an ablation changes that object.
A failing probe stores its error message and no tables, then re-raises.

Cancellation: ``run(spec, progress, cancel=CancelToken(...))``. Any thread may call
``token.cancel(reason)``; a token made with ``limit_s`` also cancels itself that many seconds after
the run starts computing (the wall-clock limit). The runner checks the token at every progress report
(probes report between documents, samples and steps, so that is where a run stops), while it waits
for another writer of the same run, and once more right before writing; then it raises
:class:`RunCancelled`. A cancelled run stores nothing: no tables, no manifest, no error run, so asking
for it again computes it afresh. The HTTP server cancels a run when its last client disconnects.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from backend import datasets, model_refs, paths
from backend.ablation_match import info_to_json, same_effect
from backend.probes.registry import PROBES, USER_PROBES
from backend.spec import RunSpec
from backend.store import TraceStore
from models.ablation import Ablation

Progress = Callable[[float, str], None]
_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()
# one probe at a time per loaded model: ablations and captures change the shared (cached) model object
_MODEL_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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


class RunCancelled(RuntimeError):
    """The run was cancelled (:class:`CancelToken`); nothing of it was stored."""


class CancelToken:
    """A request to stop a run, settable from any thread; see the module docstring.

    ``limit_s``: the wall-clock limit, counted from :meth:`start` (the runner calls it when the run
    starts; the first call wins, so a run's dependencies share their parent's clock).
    """

    def __init__(self, limit_s: float | None = None) -> None:
        self.limit_s = limit_s
        self.reason = ""
        self._event = threading.Event()
        self._deadline: float | None = None

    def start(self) -> None:
        if self.limit_s and self._deadline is None:
            self._deadline = time.monotonic() + self.limit_s

    def cancel(self, reason: str = "cancelled") -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        if not self._event.is_set() and self._deadline is not None and time.monotonic() > self._deadline:
            self.cancel(f"run: stopped at the wall-clock limit of {self.limit_s:g} s (max_run_seconds); "
                        "nothing was stored")
        return self._event.is_set()

    def is_set(self) -> bool:
        """:attr:`cancelled`, so a token can stop a sweep like a ``threading.Event`` (``backend.dask_sweep``)."""
        return self.cancelled

    def check(self) -> None:
        """Raise RunCancelled when the run should stop."""
        if self.cancelled:
            raise RunCancelled(self.reason)


class Runner:
    def __init__(self, store_root: str | os.PathLike | None = None, read_only_roots: list | None = None,
                 remote: bool = False) -> None:
        """``remote``: requests come from the network (the HTTP server): ``file:`` data is confined to
        ``HYBRIDSCOPE_DATA_ROOTS`` and off without it (``backend.paths.file_data_roots``)."""
        self.store = TraceStore(store_root or paths.store_root())
        self.remote = remote
        if read_only_roots is None:
            pre = paths.precomputed_store()
            read_only_roots = [pre] if pre.is_dir() else []
        self.extra = [TraceStore(r, read_only=True) for r in read_only_roots]
        self.computed: list[str] = []  # run_ids this runner computed (tests, logging)

    # -- identity -----------------------------------------------------------------------------
    def resolve(self, spec: RunSpec) -> tuple[dict, list | None]:
        """(fingerprints, documents): the model and data refs resolved once per run (documents are
        None for a probe that makes its own inputs without a text haystack)."""
        ref = model_refs.resolve(spec.model)
        evaluator = getattr(spec.typed_params, "evaluator", None)
        if evaluator:  # a model ref among the params is bad input like the model itself, before any run
            model_refs.resolve(evaluator)
        from backend.model_support import check_spec

        check_spec(spec)  # an ablation the model's config rules out: bad input too, before any weight loads
        fps, docs = {"model": model_refs.fingerprint(ref), "data": ""}, None
        if spec.probe == "qk_distance":  # its data is the model directory's checkpoint series
            from backend.checkpoints import digest

            fps["data"] = digest(ref.path)
        if needs_docs(spec):
            n_docs = getattr(spec.typed_params, "n_docs", None)
            roots = paths.file_data_roots(self.remote)
            _, docs, fps["data"] = datasets.resolve(spec.data, n_docs, roots=roots)
        return fps, docs

    def fingerprints(self, spec: RunSpec) -> dict:
        return self.resolve(spec)[0]

    def run_id(self, spec: RunSpec) -> str:
        fp = self.fingerprints(spec)
        return spec.run_id(fp["model"], fp["data"])

    def lookup(self, run_id: str) -> RunResult | None:
        for store in [self.store, *self.extra]:
            if store.has(run_id, status="ok"):
                return RunResult(run_id, store.manifest(run_id), store, cached=True)
        return None

    def find(self, spec: RunSpec) -> RunResult | None:
        """The stored run of ``spec`` (by its run_id, else :meth:`equivalent`), or None."""
        fps = self.fingerprints(spec)
        return self.lookup(spec.run_id(fps["model"], fps["data"])) or self.equivalent(spec, fps)

    def equivalent(self, spec: RunSpec, fps: dict) -> RunResult | None:
        """The newest stored ok run that is ``spec`` under another spelling of its ablation: the same
        model and dataset (fingerprints), probe (version) and params, and an ablation that does the same
        to this model (``backend.ablation_match``: ``rf[full]=64`` is ``rf[3,7]=64`` on SSSFSSSF)."""
        want = {k: v for k, v in spec.canonical().items() if k != "ablation"}
        info, best = None, None
        for store in [self.store, *self.extra]:
            for rid in store.runs():
                m = store.manifest(rid)
                if not m or m.get("status") != "ok" or m.get("fingerprints") != fps:
                    continue
                other = m.get("spec") or {}
                if {k: v for k, v in other.items() if k != "ablation"} != want:
                    continue
                if (m.get("meta") or {}).get("probe_version") != spec.probe_version:
                    continue
                if info is None:
                    try:
                        info = model_info(spec.model)
                    except ValueError:  # layers the adapters do not know: only the spelled run_id matches
                        return None
                if same_effect(Ablation.model_validate(other.get("ablation") or {}), spec.ablation, info):
                    if best is None or m.get("created_at", "") > best[1].get("created_at", ""):
                        best = (store, m)
        return RunResult(best[1]["run_id"], best[1], best[0], cached=True) if best else None

    # -- execution ----------------------------------------------------------------------------
    def run(self, spec: RunSpec, progress: Progress | None = None, cancel: CancelToken | None = None) -> RunResult:
        """Compute ``spec`` (or return the stored run); ``cancel`` stops it (RunCancelled, nothing stored)."""
        cancel = cancel or CancelToken()
        report = progress or (lambda f, m: None)

        def progress(f: float, m: str) -> None:  # every progress report is a cancellation point
            cancel.check()
            report(f, m)

        fps, docs = self.resolve(spec)
        run_id = spec.run_id(fps["model"], fps["data"])
        hit = self.lookup(run_id) or self.equivalent(spec, fps)
        if hit:
            return hit
        cancel.start()
        thread_lock, file_lock = _thread_lock(run_id), FileLock(str(self._lock_path(run_id)))
        while not thread_lock.acquire(timeout=0.25):
            cancel.check()
        try:
            while True:
                try:
                    file_lock.acquire(timeout=0.25)
                    break
                except Timeout:
                    cancel.check()
            try:
                hit = self.lookup(run_id)
                if hit:
                    return hit
                return self._compute(spec, run_id, fps, docs, progress, cancel)
            finally:
                file_lock.release()
        finally:
            thread_lock.release()

    def _lock_path(self, run_id: str) -> Path:
        d = self.store.root / "locks"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{run_id}.lock"

    def _compute(self, spec: RunSpec, run_id: str, fps: dict, docs: list | None, progress: Progress,
                 cancel: CancelToken) -> RunResult:
        from backend.loading import load
        from backend.model_support import check_spec

        probe = PROBES[spec.probe]
        check_spec(spec)  # bad input the config already rules out: refused before loading, nothing stored
        t0 = time.perf_counter()
        try:
            progress(0.0, f"loading {spec.model}")
            lm = load(spec.model)
            t_load = time.perf_counter() - t0
            info = adapter_info(lm.model, spec.probe)
            deps = [self.run(d, progress=lambda f, m: progress(0.0, m), cancel=cancel)
                    for d in probe.dependency_specs(spec, info)]
            manifest = self._execute(spec, run_id, fps, lm, docs, deps, progress, t_load, cancel)
        except RunCancelled:
            raise  # nothing stored: asking again computes afresh
        except Exception as e:
            self.store.write_error(run_id, spec.canonical(), f"{type(e).__name__}: {e}",
                                   meta={"fingerprints": fps, "ablation_text": spec.ablation.to_text()},
                                   overwrite=True)
            raise
        self.computed.append(run_id)
        progress(1.0, "done")
        return RunResult(run_id, manifest, self.store, cached=False)

    def _execute(self, spec, run_id, fps, lm, docs, deps, progress, t_load, cancel) -> dict:
        from backend.probes.context import ProbeContext
        from models.apply import apply_ablation

        probe = PROBES[spec.probe]
        ctx = ProbeContext(spec, spec.typed_params, lm, docs, progress, deps=deps)
        t1 = time.perf_counter()
        with _model_lock(lm.model), apply_ablation(lm.model, spec.ablation):
            tables = probe.run_function()(ctx)
        if set(tables) != set(probe.tables):
            raise RuntimeError(f"probe {spec.probe} returned tables {sorted(tables)}, declared {list(probe.tables)}")
        info = adapter_info(lm.model, spec.probe)
        meta = {
            "fingerprints": fps,
            "durations": {"load": t_load, "probe": time.perf_counter() - t1},
            "probe_version": spec.probe_version,
            "ablation_text": spec.ablation.to_text(),
            # the app resolves ablations with it (None: a model whose layers the adapters do not know)
            "model_info": info_to_json(info) if info is not None else None,
            "device": str(lm.device),
            **ctx.meta,
        }
        cancel.check()  # the last point a cancelled run stops: after this its traces are written whole
        return self.store.write_run(run_id, spec.canonical(), tables, meta=meta, overwrite=True)


def adapter_info(model, probe: str | None = None):
    """The ModelInfo of a loaded model (layer types from its loaded config), through its adapter. For a
    ``probe`` that needs no layers (``Probe.layers`` False) a model the adapters do not know gives None
    (the probe runs the model's own forward); otherwise that is UnsupportedModel, one line."""
    from models.adapters import UnsupportedModel, adapter_for, layer_info

    if probe is not None and not PROBES[probe].layers:
        return layer_info(model)
    try:
        return adapter_for(model).info()
    except UnsupportedModel as e:
        raise UnsupportedModel(f"probe {probe or '?'}: {e}") from None


def model_info(ref: str):
    """The ModelInfo of model ``ref`` from its config (no weights loaded)."""
    from backend.model_support import load_config
    from models.adapters import adapter_class_for

    config = load_config(model_refs.resolve(ref))
    return adapter_class_for(config).info_for(config)


def needs_docs(spec: RunSpec) -> bool:
    """Probes read documents, except those that make their own inputs (then only a text haystack does)."""
    if not PROBES[spec.probe].makes_inputs:
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
    return list(USER_PROBES)
