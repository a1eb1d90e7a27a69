"""Sweeps on Dask: a grid of models x ablations x probes x data, each point a cached run (``Runner.run``),
computed on a Dask cluster (``python -m backend sweep``).

The cluster is a ``distributed.LocalCluster`` by default, bound to 127.0.0.1 (scheduler, workers,
nannies, and the scheduler's HTTP/dashboard server on a free loopback port): one worker per GPU where GPUs exist
(``dask_cuda.LocalCUDACluster`` when installed, else one process per GPU that sets
``HYBRIDSCOPE_DEVICE=cuda:<i>``), else ``n_workers`` CPU processes with one thread each. Or the address
of a running scheduler (``scheduler="tcp://host:8786"``): nothing is started then.

Points already in a store (the user store, then precomputed/) are reported ``cached`` and never
submitted. A failing point is stored as an error run by the runner (its message kept) and reported
``error``; the others go on. ``cancel`` (a ``threading.Event``, or anything with ``is_set()`` such as a
``backend.runner.CancelToken``) stops the sweep: pending points are cancelled (``cancelled``); a run that
already finished stays in the store. ``limit_s`` is each point's wall-clock limit (the runner's
``CancelToken``: a point past it stores nothing and is reported ``cancelled``); ``remote`` confines
``file:`` data as for HTTP requests (``backend.paths.file_data_roots``); ``on_point(i, point)`` is called
once per point when its status is settled (cached ones first). The HTTP server's ``POST /sweeps`` runs
this same function (``backend.server``).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from backend.spec import RunSpec

LOOPBACK = "127.0.0.1"


@dataclass
class Point:
    spec: dict  # canonical RunSpec
    run_id: str | None
    status: str  # cached | ok | error | cancelled
    error: str | None = None
    seconds: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def grid(models: Sequence[str], probes: Sequence[str], ablations: Sequence[str] = ("",),
         data: Sequence[str | None] = (None,), params: dict | None = None) -> list[RunSpec]:
    """Every (model, ablation, probe, data) point as a validated RunSpec (SpecError names the bad one)."""
    if not models or not probes:
        raise ValueError("sweep: give at least one --model and one --probe")
    return [RunSpec.build(model=m, probe=p, data=d, ablation=a, params=dict(params or {}))
            for m, a, p, d in itertools.product(models, ablations or ("",), probes, data or (None,))]


def run_point(spec_json: str, store: str | None, remote: bool = False, limit_s: float | None = None) -> dict:
    """What a worker runs: one cached run; a failure is stored by the runner and returned, not raised; a run
    past ``limit_s`` stores nothing and is returned ``cancelled``."""
    import json

    from backend.runner import CancelToken, RunCancelled, Runner

    spec = RunSpec.build(**json.loads(spec_json))
    runner = Runner(store, remote=remote)
    t0 = time.perf_counter()
    try:
        res = runner.run(spec, cancel=CancelToken(limit_s))
        return {"run_id": res.run_id, "status": "ok", "seconds": time.perf_counter() - t0}
    except RunCancelled as e:
        return {"run_id": runner.run_id(spec), "status": "cancelled", "error": f"RunCancelled: {e}",
                "seconds": time.perf_counter() - t0}
    except Exception as e:  # noqa: BLE001 - the point fails, the sweep goes on
        try:
            run_id = runner.run_id(spec)
        except Exception:  # noqa: BLE001 - e.g. an unknown model: no run id
            run_id = None
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return {"run_id": run_id, "status": "error", "error": f"{type(e).__name__}: {msg}",
                "seconds": time.perf_counter() - t0}


class _DevicePlugin:
    """Worker plugin: worker <i> of a GPU LocalCluster computes on cuda:<i>."""

    def __init__(self, n_gpus: int) -> None:
        self.n_gpus = n_gpus

    def setup(self, worker) -> None:
        os.environ["HYBRIDSCOPE_DEVICE"] = f"cuda:{int(worker.name) % self.n_gpus}"


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch / no driver: CPU
        return 0


@contextmanager
def cluster_client(scheduler: str | None = None, n_workers: int = 2) -> Iterator:
    """A ``distributed.Client``: to ``scheduler``, else to a new local cluster on 127.0.0.1 (closed after)."""
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    gpus = _gpu_count()
    common = {"host": LOOPBACK, "dashboard_address": f"{LOOPBACK}:0", "worker_dashboard_address": None,
              "threads_per_worker": 1}
    if gpus:
        try:
            from dask_cuda import LocalCUDACluster

            cluster = LocalCUDACluster(**common)
            plugin = None
        except ImportError:
            cluster, plugin = LocalCluster(n_workers=gpus, processes=True, **common), _DevicePlugin(gpus)
    else:
        cluster, plugin = LocalCluster(n_workers=n_workers, processes=True, **common), None
    client = Client(cluster)
    try:
        if plugin is not None:
            client.register_plugin(plugin)
        yield client
    finally:
        client.close()
        cluster.close()


Progress = Callable[[float, str], None]


def sweep(specs: Sequence[RunSpec], store: str | None = None, client=None, scheduler: str | None = None,
          n_workers: int = 2, cancel: threading.Event | None = None, progress: Progress | None = None,
          poll_s: float = 0.1, remote: bool = False, limit_s: float | None = None,
          on_point: Callable[[int, Point], None] | None = None) -> list[Point]:
    """Run every point of ``specs`` (in order of the list returned) on Dask; see the module docstring.
    ``client``: a ``distributed.Client``, or a function returning one (called only when some point must
    be computed); None: ``cluster_client(scheduler, n_workers)`` for this sweep."""
    from backend.runner import Runner

    progress = progress or (lambda f, m: None)
    settled = on_point or (lambda i, p: None)
    cancel = cancel or threading.Event()
    runner = Runner(store, remote=remote)
    points: list[Point] = []
    todo: list[int] = []
    for spec in specs:
        hit = runner.find(spec)  # stored under this spelling of the ablation or another
        run_id, cached = (hit.run_id, True) if hit else (runner.run_id(spec), False)
        points.append(Point(spec.canonical(), run_id, "cached" if cached else "pending"))
        if not cached:
            todo.append(len(points) - 1)
        else:
            settled(len(points) - 1, points[-1])
    total = len(points)
    progress((total - len(todo)) / max(total, 1), f"{total - len(todo)}/{total} points cached")
    if not todo:
        return points
    store_root = str(runner.store.root)

    def drive(c) -> None:
        futures = {c.submit(run_point, specs[i].canonical_json(), store_root, remote, limit_s, pure=False,
                            key=f"hybridscope-{points[i].run_id}-{i}"): i for i in todo}
        pending = dict(futures)
        while pending:
            if cancel.is_set():
                c.cancel(list(pending))
                for i in pending.values():
                    points[i].status = "cancelled"
                    settled(i, points[i])
                break
            for fut in [f for f in pending if f.done()]:
                i = pending.pop(fut)
                try:
                    out = fut.result()
                except Exception as e:  # noqa: BLE001 - a worker died: the point failed
                    out = {"status": "error", "error": f"{type(e).__name__}: {e}", "run_id": points[i].run_id}
                points[i].status, points[i].error = out["status"], out.get("error")
                points[i].run_id, points[i].seconds = out.get("run_id") or points[i].run_id, out.get("seconds")
                settled(i, points[i])
                done = total - len(pending)
                progress(done / total, f"{done}/{total}: {specs[i].probe} on {specs[i].model} {points[i].status}")
            time.sleep(poll_s)

    if client is not None:
        drive(client if hasattr(client, "submit") else client())
    else:
        with cluster_client(scheduler, n_workers) as c:
            drive(c)
    return points
