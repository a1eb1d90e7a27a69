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

import asyncio
import contextlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from backend.jsonin import loads
from backend.limits import limit_message, limits_for
from backend.params import REF_PATTERN
from backend.probes.registry import PROBES, USER_PROBES

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class Detail(BaseModel):
    detail: str


class Health(BaseModel):
    status: str
    running: int
    queued: int


class Limits(BaseModel):
    model_config = ConfigDict(extra="allow")
    device: str
    max_tokens: int
    max_docs: int


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


class QueueFull(Exception):
    """No room for another run."""


def _line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# ------------------------------------------------------------------------------------------------
# runs: a bounded queue, shared computations, cancellation when the last client leaves
# ------------------------------------------------------------------------------------------------
class _Listener:
    """One client's stream: messages from the worker thread into the client's event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()

    def put(self, msg: dict) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, msg)


class _Job:
    def __init__(self, spec, run_id: str, limit_s: float) -> None:
        from backend.runner import CancelToken

        self.spec, self.run_id = spec, run_id
        self.token = CancelToken(limit_s)
        self.listeners: set[_Listener] = set()
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

    def attach(self, spec, run_id: str, listener: _Listener) -> _Job:
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

    def detach(self, job: _Job, listener: _Listener) -> None:
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
            final = {"error": _line(e)}
        except Exception as e:  # noqa: BLE001 - reported to the clients (and stored as an error run)
            final = {"error": _line(e)}
        with self.lock:
            job.final = final
            listeners = list(job.listeners)
            self.admitted.discard(job)
            if self.jobs.get(job.run_id) is job:
                del self.jobs[job.run_id]
        for listener in listeners:
            listener.put(final)

    def start_sweep(self, work, listener: _Listener) -> _SweepJob:
        """Admit a sweep (one job of the queue; QueueFull when it is full): ``work(job)`` runs on the pool
        and returns the final message; ``job.token`` is set when its client leaves."""
        job = _SweepJob(listener)
        with self.lock:
            if len(self.admitted) >= self.max_queue:
                raise QueueFull
            self.admitted.add(job)
        self.pool.submit(self._sweep, job, work)
        return job

    def _sweep(self, job: _SweepJob, work) -> None:
        with self.lock:
            job.started = True
        try:
            final = work(job)
        except Exception as e:  # noqa: BLE001 - reported to the client
            final = {"error": _line(e)}
        with self.lock:
            job.final = final
            self.admitted.discard(job)
        job.listener.put(final)

    def shutdown(self) -> None:
        with self.lock:
            for job in self.admitted:
                job.token.cancel("run: cancelled, the server is shutting down; nothing was stored")
        self.pool.shutdown(wait=False, cancel_futures=True)


class _SweepJob:
    def __init__(self, listener: _Listener) -> None:
        from backend.runner import CancelToken

        self.listener, self.token = listener, CancelToken()
        self.started = False
        self.final: dict | None = None

    def detach(self) -> None:
        if self.final is None:
            self.token.cancel("sweep: cancelled, its client disconnected")


class _Dask:
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


class _RunStream(StreamingResponse):
    """The NDJSON stream of one client; when it ends (done or the client gone) the client detaches."""

    def __init__(self, content, on_close) -> None:
        super().__init__(content, media_type="application/x-ndjson")
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


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


def _errors(*codes: int) -> dict:
    out: dict[int | str, Any] = {}
    for code in codes:
        content: dict[str, Any] = {"application/json": {"schema": Detail.model_json_schema()}}
        if code in (400, 413):  # Starlette's host check (400) and body limit (413) answer in plain text
            content["text/plain"] = {"schema": {"type": "string"}}
        out[code] = {"description": _WHY[code], "content": content}
    return out


_WHY = {
    400: "bad request: invalid Host header, a body that is not a JSON object or nested too deeply, "
         "or a run over a limit of this backend (the message names it)",
    404: "no such run", 413: "request body too large (max_body_bytes)",
    422: "a spec or run_id that fails validation (one line naming the field and what is allowed)",
    429: "the run queue is full (max_queue); retry after Retry-After seconds",
}


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
    dask = _Dask(int(lim["workers"]))

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

    @app.get("/health", response_model=Health, responses=_errors(400))
    async def health() -> Health:
        running, queued = runs.counts()
        return Health(status="ok", running=running, queued=queued)

    @app.get("/limits", response_model=Limits, responses=_errors(400))
    async def limits() -> dict:
        return limits_for(device)

    @app.get("/runs/{run_id}", responses=_errors(400, 404, 422), response_model=dict[str, Any])
    def show(run_id: str = Path(description="a run_id: 1-128 of [A-Za-z0-9._-], starting with a letter or "
                                            "digit", json_schema_extra={"pattern": RUN_ID_PATTERN})) -> dict:
        try:
            hit = runner.lookup(run_id)
        except StoreError as e:  # not a valid run_id at all
            raise HTTPException(422, _line(e)) from None
        if hit is None:
            raise HTTPException(404, f"run_id: no run {run_id!r}")
        return hit.manifest

    ndjson = {"application/x-ndjson": {"schema": {"type": "string"}}}
    body_doc = {"requestBody": {"required": True, "content": {"application/json": {"schema": _spec_schema()}}}}

    @app.post("/runs", openapi_extra=body_doc, response_class=StreamingResponse,
              responses={200: {"description": "NDJSON progress lines, then the run_id or the error",
                               "content": ndjson},
                         **_errors(400, 413, 422, 429)})
    async def submit(request: Request):
        try:
            body = loads(await request.body(), "body", max_bytes=int(lim["max_body_bytes"]))
        except ValueError as e:
            raise HTTPException(400, _line(e)) from None
        if not isinstance(body, dict):
            raise HTTPException(422, f"spec: Input should be a valid dictionary (a RunSpec object), "
                                     f"got {type(body).__name__}")
        try:
            spec = RunSpec.build(**body)
        except (SpecError, ValueError, TypeError) as e:
            raise HTTPException(422, _line(e)) from None
        why = limit_message(spec, lim)
        if why:
            raise HTTPException(400, why)
        try:  # resolves model/data refs: bad refs fail here, before streaming
            run_id = await run_in_threadpool(runner.run_id, spec)
            hit = await run_in_threadpool(runner.lookup, run_id)
        except (ValueError, LookupError, OSError, StoreError) as e:
            raise HTTPException(422, _line(e)) from None
        if hit is not None:
            return _RunStream(_one({"run_id": run_id, "cached": True}), lambda: None)
        listener = _Listener()
        try:
            job = runs.attach(spec, run_id, listener)
        except QueueFull:
            raise HTTPException(429, f"queue: {runs.max_queue} runs are already queued or running "
                                     f"(max_queue); retry later", headers={"Retry-After": "5"}) from None

        async def lines():
            while True:
                msg = await listener.queue.get()
                yield json.dumps(msg) + "\n"
                if "run_id" in msg or "error" in msg:
                    return

        return _RunStream(lines(), lambda: runs.detach(job, listener))

    sweep_doc = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": SweepRequest.model_json_schema()}}}}

    @app.post("/sweeps", openapi_extra=sweep_doc, response_class=StreamingResponse,
              responses={200: {"description": "NDJSON lines: progress, one per settled point, then the points "
                                              "or the error", "content": ndjson},
                         **_errors(400, 413, 422, 429)})
    async def submit_sweep(request: Request):
        from backend.dask_sweep import grid, sweep

        try:
            body = loads(await request.body(), "body", max_bytes=int(lim["max_body_bytes"]))
        except ValueError as e:
            raise HTTPException(400, _line(e)) from None
        if not isinstance(body, dict):
            raise HTTPException(422, f"sweep: Input should be a valid dictionary (a grid object), "
                                     f"got {type(body).__name__}")
        try:
            req = SweepRequest.model_validate(body)
        except ValueError as e:
            errs = getattr(e, "errors", lambda: [])() or [{}]
            loc = ".".join(str(x) for x in errs[0].get("loc", ())) or "sweep"
            raise HTTPException(422, f"{loc}: {errs[0].get('msg', _line(e))}") from None
        n = len(req.models) * len(req.probes) * len(req.ablations) * len(req.data)
        if n > int(lim["max_sweep_points"]):
            raise HTTPException(400, f"sweep: {n} points asked, at most {lim['max_sweep_points']} allowed "
                                     "(max_sweep_points of this backend; make the grid smaller)")
        try:
            specs = grid(req.models, req.probes, req.ablations, req.data, req.params)
        except (SpecError, ValueError, TypeError) as e:
            raise HTTPException(422, _line(e)) from None
        for spec in specs:
            why = limit_message(spec, lim)
            if why:
                raise HTTPException(400, why)
        try:  # every point's refs resolve (and pass the config's checks) before anything streams
            for spec in specs:
                await run_in_threadpool(runner.run_id, spec)
        except (ValueError, LookupError, OSError, StoreError) as e:
            raise HTTPException(422, _line(e)) from None
        listener = _Listener()

        def work(job: _SweepJob) -> dict:
            points = sweep(specs, store=str(runner.store.root), client=dask.get, cancel=job.token,
                           progress=lambda f, m: listener.put({"progress": f, "message": m}), remote=True,
                           limit_s=float(lim["max_run_seconds"]),
                           on_point=lambda i, p: listener.put({"point": i, **p.to_dict()}))
            counts: dict[str, int] = {}
            for p in points:
                counts[p.status] = counts.get(p.status, 0) + 1
            return {"points": [p.to_dict() for p in points], "counts": counts}

        try:
            job = runs.start_sweep(work, listener)
        except QueueFull:
            raise HTTPException(429, f"queue: {runs.max_queue} runs are already queued or running "
                                     f"(max_queue); retry later", headers={"Retry-After": "5"}) from None

        async def lines():
            while True:
                msg = await listener.queue.get()
                yield json.dumps(msg) + "\n"
                if "points" in msg or ("error" in msg and "point" not in msg):
                    return

        return _RunStream(lines(), job.detach)

    return app


async def _one(msg: dict):
    yield json.dumps(msg) + "\n"
