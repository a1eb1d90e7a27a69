"""HTTP backend (FastAPI): the same RunSpec as payload; progress streamed as NDJSON lines.

    POST /runs       body: RunSpec JSON -> lines {"progress": f, "message": m} ... then {"run_id": ...}
                     or {"error": ...}; a spec that fails validation is a 422 with a one-line detail
    GET  /runs/{id}  the run's manifest (404 if unknown, 422 if not a valid run_id)
    GET  /limits     what this backend accepts (device, max tokens)
Serve with ``python -m backend serve --port 8765`` (binds 127.0.0.1).
"""

from __future__ import annotations

import json
import queue
import threading
from typing import Any

from fastapi import Body, FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse


def make_app(store: str | None = None) -> FastAPI:
    from backend.runner import Runner
    from backend.spec import RunSpec, SpecError
    from backend.store import StoreError

    runner = Runner(store)
    app = FastAPI(title="HybridScope backend")

    @app.exception_handler(RequestValidationError)
    async def one_line_422(request, exc: RequestValidationError) -> JSONResponse:
        """A body that is not a JSON object (or not JSON) gets the same one-line detail as a bad spec."""
        err = (exc.errors() or [{}])[0]
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "spec"
        return JSONResponse({"detail": f"{loc}: {err.get('msg', 'invalid request')}"}, status_code=422)

    @app.get("/limits")
    def limits() -> dict:
        import torch

        from backend.limits import limits_for

        return limits_for("cuda" if torch.cuda.is_available() else "cpu")

    @app.get("/runs/{run_id}")
    def show(run_id: str) -> dict:
        try:
            hit = runner.lookup(run_id)
        except StoreError as e:  # not a valid run_id at all
            raise HTTPException(422, str(e).splitlines()[0]) from None
        if hit is None:
            raise HTTPException(404, f"run_id: no run {run_id!r}")
        return hit.manifest

    @app.post("/runs")
    def submit(body: dict[str, Any] = Body(...)) -> StreamingResponse:  # noqa: B008
        try:
            spec = RunSpec.build(**body)
            runner.run_id(spec)  # resolves model/data refs: bad refs fail here, before streaming
        except (SpecError, ValueError, TypeError) as e:
            raise HTTPException(422, str(e).splitlines()[0]) from None
        q: queue.Queue = queue.Queue()

        def work() -> None:
            try:
                res = runner.run(spec, lambda f, m: q.put({"progress": f, "message": m}))
                q.put({"run_id": res.run_id, "cached": res.cached})
            except Exception as e:  # noqa: BLE001 - reported to the client
                q.put({"error": (str(e).splitlines() or [type(e).__name__])[0]})

        threading.Thread(target=work, daemon=True).start()

        def stream():
            while True:
                msg = q.get()
                yield json.dumps(msg) + "\n"
                if "run_id" in msg or "error" in msg:
                    return

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    return app
