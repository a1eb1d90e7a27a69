"""HTTP plumbing shared by the run and sweep endpoints of ``backend.server``: one-line errors, the
request body as a bounded JSON object, admission into the run queue (429 when full), and the NDJSON
stream of one client (messages from a worker thread into its event loop; detached when it ends)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from backend.jsonin import loads


class Detail(BaseModel):
    detail: str


class QueueFull(Exception):
    """No room for another run."""


def line(e: BaseException) -> str:
    """An error as one line (its first)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class Listener:
    """One client's stream: messages from the worker thread into the client's event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()

    def put(self, msg: dict) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, msg)


class RunStream(StreamingResponse):
    """The NDJSON stream of one client; when it ends (done or the client gone) the client detaches."""

    def __init__(self, content, on_close) -> None:
        super().__init__(content, media_type="application/x-ndjson")
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


async def json_object(request: Request, lim: dict, what: str, kind: str) -> dict:
    """The body as a JSON object within ``max_body_bytes`` and the nesting bound (else HTTP 400), or a
    one-line 422 naming ``what`` when it is no object (``kind``: what it should be)."""
    try:
        body = loads(await request.body(), "body", max_bytes=int(lim["max_body_bytes"]))
    except ValueError as e:
        raise HTTPException(400, line(e)) from None
    if not isinstance(body, dict):
        raise HTTPException(422, f"{what}: Input should be a valid dictionary ({kind}), got {type(body).__name__}")
    return body


def admit(start: Callable[[], Any], max_queue: int) -> Any:
    """``start()``, or HTTP 429 (with Retry-After) when it raises QueueFull."""
    try:
        return start()
    except QueueFull:
        raise HTTPException(429, f"queue: {max_queue} runs are already queued or running "
                                 f"(max_queue); retry later", headers={"Retry-After": "5"}) from None


async def ndjson_lines(listener: Listener, last: Callable[[dict], bool]):
    """The listener's messages as NDJSON lines, up to and including the one ``last`` accepts."""
    while True:
        msg = await listener.queue.get()
        yield json.dumps(msg) + "\n"
        if last(msg):
            return


def errors(*codes: int) -> dict:
    """OpenAPI ``responses`` entries for these error codes."""
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
