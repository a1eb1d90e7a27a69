"""The ``POST /sweeps`` endpoint of ``backend.server``: a grid of cached runs (what ``python -m backend
sweep`` takes) computed by ``backend.dask_sweep.sweep`` on the server's Dask cluster, streamed as NDJSON;
every point is checked like a run before anything streams; the sweep is one job of the run queue."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from backend.limits import limit_message
from backend.params import REF_PATTERN
from backend.probes.registry import USER_PROBES
from backend.server_stream import Listener, RunStream, admit, errors, json_object, line, ndjson_lines


class SweepRequest(BaseModel):
    """A grid of cached runs: every (model, ablation, probe, data) combination, ``params`` for each point.
    The lists have no maxItems: the grid's size is bounded by ``max_sweep_points`` (400) and the body by
    ``max_body_bytes`` (413)."""

    model_config = ConfigDict(extra="forbid")
    models: list[Annotated[str, StringConstraints(pattern=f"^{REF_PATTERN}$", max_length=512)]] = Field(
        min_length=1, description="model refs")
    probes: list[Literal[USER_PROBES]] = Field(min_length=1)  # type: ignore[valid-type]
    ablations: list[Annotated[str, StringConstraints(max_length=4096)]] = Field(
        [""], min_length=1, description="ablations in the text form; '' = none")
    data: list[Annotated[str, StringConstraints(pattern=f"^{REF_PATTERN}$", max_length=512)] | None] = Field(
        [None], min_length=1, description="dataset refs; null = the probe's default")
    params: dict[str, Any] = Field(default_factory=dict, description="probe params for every point")


class SweepJob:
    def __init__(self, listener: Listener) -> None:
        from backend.runner import CancelToken

        self.listener, self.token = listener, CancelToken()
        self.started = False
        self.final: dict | None = None

    def detach(self) -> None:
        if self.final is None:
            self.token.cancel("sweep: cancelled, its client disconnected")


class Dask:
    """The server's Dask client, made on first use: to ``HYBRIDSCOPE_DASK_SCHEDULER`` (set by the
    operator), else to a LocalCluster of ``n_workers`` workers on 127.0.0.1; closed with the server."""

    def __init__(self, n_workers: int) -> None:
        self.n_workers, self.lock = n_workers, threading.Lock()
        self.stack: contextlib.ExitStack | None = None
        self.client = None

    def get(self):
        from backend.dask_sweep import cluster_client

        with self.lock:
            if self.client is None:
                stack = contextlib.ExitStack()
                self.client = stack.enter_context(cluster_client(os.environ.get("HYBRIDSCOPE_DASK_SCHEDULER") or None,
                                                                 self.n_workers))
                self.stack = stack
            return self.client

    def close(self) -> None:
        with self.lock:
            if self.stack is not None:
                self.stack.close()
            self.stack = self.client = None


def add_sweep_route(app: FastAPI, lim: dict, runner, runs, dask: Dask, ndjson_doc: dict) -> None:
    """Register ``POST /sweeps`` on ``app`` (``runs``: the server's run queue, ``dask``: its cluster)."""
    from backend.spec import SpecError
    from backend.store import StoreError

    sweep_doc = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": SweepRequest.model_json_schema()}}}}

    @app.post("/sweeps", openapi_extra=sweep_doc, response_class=StreamingResponse,
              responses={200: {"description": "NDJSON lines: progress, one per settled point, then the points "
                                              "or the error", "content": ndjson_doc},
                         **errors(400, 413, 422, 429)})
    async def submit_sweep(request: Request):
        from backend.dask_sweep import grid, sweep

        body = await json_object(request, lim, "sweep", "a grid object")
        try:
            req = SweepRequest.model_validate(body)
        except ValueError as e:
            errs = getattr(e, "errors", lambda: [])() or [{}]
            loc = ".".join(str(x) for x in errs[0].get("loc", ())) or "sweep"
            raise HTTPException(422, f"{loc}: {errs[0].get('msg', line(e))}") from None
        n = len(req.models) * len(req.probes) * len(req.ablations) * len(req.data)
        if n > int(lim["max_sweep_points"]):
            raise HTTPException(400, f"sweep: {n} points asked, at most {lim['max_sweep_points']} allowed "
                                     "(max_sweep_points of this backend; make the grid smaller)")
        try:
            specs = grid(req.models, req.probes, req.ablations, req.data, req.params)
        except (SpecError, ValueError, TypeError) as e:
            raise HTTPException(422, line(e)) from None
        for spec in specs:
            why = limit_message(spec, lim)
            if why:
                raise HTTPException(400, why)
        try:  # every point's refs resolve (and pass the config's checks) before anything streams
            for spec in specs:
                await run_in_threadpool(runner.run_id, spec)
        except (ValueError, LookupError, OSError, StoreError) as e:
            raise HTTPException(422, line(e)) from None
        listener = Listener()

        def work(job: SweepJob) -> dict:
            points = sweep(specs, store=str(runner.store.root), client=dask.get, cancel=job.token,
                           progress=lambda f, m: listener.put({"progress": f, "message": m}), remote=True,
                           limit_s=float(lim["max_run_seconds"]),
                           on_point=lambda i, p: listener.put({"point": i, **p.to_dict()}))
            counts: dict[str, int] = {}
            for p in points:
                counts[p.status] = counts.get(p.status, 0) + 1
            return {"points": [p.to_dict() for p in points], "counts": counts}

        job = admit(lambda: runs.start_sweep(work, listener), runs.max_queue)
        return RunStream(ndjson_lines(listener, lambda m: "points" in m or ("error" in m and "point" not in m)),
                         job.detach)
