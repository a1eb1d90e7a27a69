"""HTTP backend (FastAPI): the same RunSpec as payload; progress streamed as NDJSON lines.

    POST /runs       body: RunSpec JSON -> 200, lines {"progress": f, "message": m} ... then
                     {"run_id": ..., "cached": bool} or {"error": ...}
    POST /sweeps     body: a grid {"models", "probes", "ablations", "data", "params"} (what ``python -m
                     backend sweep`` takes) -> 200, lines {"progress", "message"} and {"point": i, ...} (one
                     per point once settled: cached | ok | error | cancelled), then {"points": [...],
                     "counts": {...}} or {"error": ...}
    GET  /runs/{id}  the run's manifest
    GET  /limits     what this backend accepts (``backend.limits.limits_for``)
    GET  /health     {"status": "ok", "running": n, "queued": n}; answers at once, also under load

Every refusal is a documented 4xx with one line: ``{"detail": "..."}`` (JSON) for 400 (a body that
is not a JSON object, nested too deeply, or a run over a limit: the message names the limit), 404
(no such run), 422 (a spec or run_id that fails validation, an unknown model or dataset) and 429
(the queue is full; ``Retry-After`` says when to try again); plain text from Starlette's middleware
for 400 ``Invalid host header`` and 413 ``Content Too Large``.

Protection: the ``Host`` header must name this server (127.0.0.1, localhost, [::1], the address it
listens on, or ``HYBRIDSCOPE_ALLOWED_HOSTS``, comma-separated), so a page served elsewhere cannot
reach a loopback server through DNS rebinding; bodies over ``max_body_bytes`` are refused before they
are read whole. Runs: at most ``workers`` compute at once and at most ``max_queue`` are admitted
(computing or waiting); identical requests share one computation; a run whose last client
disconnects is cancelled, and a run past ``max_run_seconds`` is cancelled and reported; a cancelled run
stores nothing (``backend.runner.CancelToken``). ``file:`` data is confined to
``HYBRIDSCOPE_DATA_ROOTS`` (off without it).
Sweeps run ``backend.dask_sweep.sweep`` (the CLI's engine): every point is checked like a run (spec,
refs, limits) before anything streams, the grid holds at most ``max_sweep_points``; a sweep is one
admitted job of the same queue (429 when full) and computes its points on one Dask cluster the server
starts on first use (``workers`` workers on 127.0.0.1) or on the scheduler the operator names in
``HYBRIDSCOPE_DASK_SCHEDULER`` (never one a request names); each point has the ``max_run_seconds`` limit.
When the client disconnects, the sweep's pending points are cancelled (points already computing finish
and are stored like any run).
Serve with ``python -m backend serve --port 8765`` (binds 127.0.0.1 unless told otherwise).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from backend.limits import limit_message, limits_for
from backend.params import REF_PATTERN
from backend.probes.registry import PROBES
from backend.server_stream import Listener, QueueFull, RunStream, admit, errors, json_object, line, ndjson_lines
from backend.server_sweep import Dask, SweepJob, add_sweep_route

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class Health(BaseModel):
    status: str
    running: int
    queued: int


class Limits(BaseModel):
    model_config = ConfigDict(extra="allow")
    device: str
    max_tokens: int
    max_docs: int


# ------------------------------------------------------------------------------------------------
# runs: a bounded queue, shared computations, cancellation when the last client leaves
# ------------------------------------------------------------------------------------------------
class _Job:
    def __init__(self, spec, run_id: str, limit_s: float) -> None:
        from backend.runner import CancelToken

        self.spec, self.run_id = spec, run_id
        self.token = CancelToken(limit_s)
        self.listeners: set[Listener] = set()
        self.started = False
        self.final: dict | None = None


class Runs:
    """At most ``max_queue`` runs admitted, ``workers`` of them computing; one job per run_id."""

    def __init__(self, runner, workers: int, max_queue: int, limit_s: float) -> None:
        self.runner, self.max_queue, self.limit_s = runner, max_queue, limit_s
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hybridscope-run")
        self.lock = threading.Lock()
        self.jobs: dict[str, _Job] = {}
        self.admitted: set[_Job] = set()  # submitted and not finished (cancelled ones included)

    def counts(self) -> tuple[int, int]:
        with self.lock:
            running = sum(j.started for j in self.admitted)
            return running, len(self.admitted) - running

    def attach(self, spec, run_id: str, listener: Listener) -> _Job:
        with self.lock:
            job = self.jobs.get(run_id)
            if job is None or job.token.cancelled:
                if len(self.admitted) >= self.max_queue:
                    raise QueueFull
                job = self.jobs[run_id] = _Job(spec, run_id, self.limit_s)
                self.admitted.add(job)
                self.pool.submit(self._work, job)
            job.listeners.add(listener)
            return job

    def detach(self, job: _Job, listener: Listener) -> None:
        with self.lock:
            job.listeners.discard(listener)
            if not job.listeners and job.final is None:
                job.token.cancel("run: cancelled, its client disconnected; nothing was stored")

    def _publish(self, job: _Job, msg: dict) -> None:
        with self.lock:
            listeners = list(job.listeners)
        for listener in listeners:
            listener.put(msg)

    def _work(self, job: _Job) -> None:
        from backend.runner import RunCancelled

        with self.lock:
            job.started = True
        try:
            job.token.check()  # cancelled while it waited in the queue
            res = self.runner.run(job.spec, lambda f, m: self._publish(job, {"progress": f, "message": m}),
                                  cancel=job.token)
            final: dict = {"run_id": res.run_id, "cached": res.cached}
        except RunCancelled as e:
            final = {"error": line(e)}
        except Exception as e:  # noqa: BLE001 - reported to the clients (and stored as an error run)
            final = {"error": line(e)}
        with self.lock:
            job.final = final
            listeners = list(job.listeners)
            self.admitted.discard(job)
            if self.jobs.get(job.run_id) is job:
                del self.jobs[job.run_id]
        for listener in listeners:
            listener.put(final)

    def start_sweep(self, work, listener: Listener) -> SweepJob:
        """Admit a sweep (one job of the queue; QueueFull when it is full): ``work(job)`` runs on the pool
        and returns the final message; ``job.token`` is set when its client leaves."""
        job = SweepJob(listener)
        with self.lock:
            if len(self.admitted) >= self.max_queue:
                raise QueueFull
            self.admitted.add(job)
        self.pool.submit(self._sweep, job, work)
        return job

    def _sweep(self, job: SweepJob, work) -> None:
        with self.lock:
            job.started = True
        try:
            final = work(job)
        except Exception as e:  # noqa: BLE001 - reported to the client
            final = {"error": line(e)}
        with self.lock:
            job.final = final
            self.admitted.discard(job)
        job.listener.put(final)

    def shutdown(self) -> None:
        with self.lock:
            for job in self.admitted:
                job.token.cancel("run: cancelled, the server is shutting down; nothing was stored")
        self.pool.shutdown(wait=False, cancel_futures=True)


# ------------------------------------------------------------------------------------------------
# the published contract
# ------------------------------------------------------------------------------------------------
def _spec_schema() -> dict:
    """The request body's JSON schema: RunSpec's, with refs, probe names and the ablation's text form."""
    from backend.spec import RunSpec

    schema = RunSpec.model_json_schema()
    ablation = schema.pop("$defs")["Ablation"]
    ref = {"type": "string", "pattern": f"^{REF_PATTERN}$", "maxLength": 512}
    props = schema["properties"]
    props["model"] = {**ref, "description": props["model"]["description"]}
    props["data"] = {"anyOf": [ref, {"type": "null"}], "description": props["data"]["description"]}
    props["probe"] = {"type": "string", "enum": list(PROBES)}
    props["ablation"] = {"anyOf": [{"type": "string", "maxLength": 4096}, ablation],
                         "description": "the compact text form (window[swa]=64;pe[full]=nope) or its JSON form"}
    return schema


def allowed_hosts(host: str | None = None, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Host header values this server answers: loopback, its listen address, HYBRIDSCOPE_ALLOWED_HOSTS."""
    hosts = list(LOOPBACK_HOSTS)
    if host and host not in ("0.0.0.0", "::"):
        hosts.append(f"[{host}]" if ":" in host and not host.startswith("[") else host)
    hosts += [h.strip() for h in os.environ.get("HYBRIDSCOPE_ALLOWED_HOSTS", "").split(",") if h.strip()]
    return [*hosts, *extra]


def make_app(store: str | None = None, host: str | None = None, extra_hosts: tuple[str, ...] = ()) -> FastAPI:
    """The app; ``host``: the address it listens on (also accepted in Host headers); ``extra_hosts``:
    further Host header values (tests)."""
    from backend.loading import default_device
    from backend.runner import Runner
    from backend.spec import RunSpec, SpecError
    from backend.store import StoreError

    device = default_device().type
    lim = limits_for(device)
    runner = Runner(store, remote=True)
    runs = Runs(runner, int(lim["workers"]), int(lim["max_queue"]), float(lim["max_run_seconds"]))
    dask = Dask(int(lim["workers"]))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        runs.shutdown()
        await run_in_threadpool(dask.close)

    app = FastAPI(title="HybridScope backend", version="1", lifespan=lifespan)
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=int(lim["max_body_bytes"]))
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(host, extra_hosts), www_redirect=False)
    app.state.runs, app.state.dask = runs, dask

    @app.exception_handler(RequestValidationError)
    async def one_line_422(request, exc: RequestValidationError) -> JSONResponse:
        err = (exc.errors() or [{}])[0]
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "path")) or "request"
        return JSONResponse({"detail": f"{loc}: {err.get('msg', 'invalid request')}"}, status_code=422)

    @app.get("/health", response_model=Health, responses=errors(400))
    async def health() -> Health:
        running, queued = runs.counts()
        return Health(status="ok", running=running, queued=queued)

    @app.get("/limits", response_model=Limits, responses=errors(400))
    async def limits() -> dict:
        return limits_for(device)

    @app.get("/runs/{run_id}", responses=errors(400, 404, 422), response_model=dict[str, Any])
    def show(run_id: str = Path(description="a run_id: 1-128 of [A-Za-z0-9._-], starting with a letter or "
                                            "digit", json_schema_extra={"pattern": RUN_ID_PATTERN})) -> dict:
        try:
            hit = runner.lookup(run_id)
        except StoreError as e:  # not a valid run_id at all
            raise HTTPException(422, line(e)) from None
        if hit is None:
            raise HTTPException(404, f"run_id: no run {run_id!r}")
        return hit.manifest

    ndjson = {"application/x-ndjson": {"schema": {"type": "string"}}}
    body_doc = {"requestBody": {"required": True, "content": {"application/json": {"schema": _spec_schema()}}}}

    @app.post("/runs", openapi_extra=body_doc, response_class=StreamingResponse,
              responses={200: {"description": "NDJSON progress lines, then the run_id or the error",
                               "content": ndjson},
                         **errors(400, 413, 422, 429)})
    async def submit(request: Request):
        body = await json_object(request, lim, "spec", "a RunSpec object")
        try:
            spec = RunSpec.build(**body)
        except (SpecError, ValueError, TypeError) as e:
            raise HTTPException(422, line(e)) from None
        why = limit_message(spec, lim)
        if why:
            raise HTTPException(400, why)
        try:  # resolves model/data refs: bad refs fail here, before streaming
            run_id = await run_in_threadpool(runner.run_id, spec)
            hit = await run_in_threadpool(runner.lookup, run_id)
        except (ValueError, LookupError, OSError, StoreError) as e:
            raise HTTPException(422, line(e)) from None
        if hit is not None:
            return RunStream(_one({"run_id": run_id, "cached": True}), lambda: None)
        listener = Listener()
        job = admit(lambda: runs.attach(spec, run_id, listener), runs.max_queue)
        return RunStream(ndjson_lines(listener, lambda m: "run_id" in m or "error" in m),
                          lambda: runs.detach(job, listener))

    add_sweep_route(app, lim, runner, runs, dask, ndjson_doc=ndjson)

    return app


async def _one(msg: dict):
    yield json.dumps(msg) + "\n"
