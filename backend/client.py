"""How the dashboard asks the backend for runs, without importing torch.

``LocalClient`` (the default) runs ``python -m backend run ... --json --progress`` in a child
process, so the dashboard process stays torch-free; progress arrives as JSON lines on stderr.
``HttpClient`` posts the same RunSpec to a FastAPI backend (``HYBRIDSCOPE_BACKEND_URL``).
Both return the run_id once the traces are in the store (or raise ``RunFailed``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from backend.limits import cpu_limits
from backend.spec import RunSpec

Progress = Callable[[float, str], None]
ROOT = Path(__file__).resolve().parents[1]


class RunFailed(RuntimeError):
    """The backend refused or failed the run; the message is for the user."""


class Client(Protocol):
    def submit(self, spec: RunSpec, on_progress: Progress | None = None) -> str: ...

    def limits(self) -> dict: ...


class LocalClient:
    def __init__(self, store: str | None = None, python: str = sys.executable) -> None:
        self.store = store
        self.python = python

    def limits(self) -> dict:
        return cpu_limits()

    def submit(self, spec: RunSpec, on_progress: Progress | None = None) -> str:
        cmd = [self.python, "-m", "backend", "run", "--spec-json", spec.canonical_json(), "--json", "--progress"]
        if self.store:
            cmd += ["--store", self.store]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        err_lines: list[str] = []
        assert proc.stderr is not None and proc.stdout is not None
        for line in proc.stderr:
            if line.startswith('{"progress"'):
                msg = json.loads(line)
                if on_progress:
                    on_progress(float(msg["progress"]), str(msg.get("message", "")))
            else:
                err_lines.append(line.rstrip())
        out = proc.stdout.read()
        if proc.wait() != 0:
            raise RunFailed((err_lines or ["backend run failed"])[-1].removeprefix("error: "))
        return json.loads(out)["run_id"]


class HttpClient:
    def __init__(self, url: str, timeout: float = 3600.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def limits(self) -> dict:
        import httpx

        return httpx.get(f"{self.url}/limits", timeout=10).json()

    def submit(self, spec: RunSpec, on_progress: Progress | None = None) -> str:
        import httpx

        with httpx.stream("POST", f"{self.url}/runs", json=spec.canonical(), timeout=self.timeout) as r:
            if r.status_code != 200:
                r.read()
                raise RunFailed(_detail(r))
            for line in r.iter_lines():
                msg = json.loads(line)
                if "progress" in msg and on_progress:
                    on_progress(float(msg["progress"]), str(msg.get("message", "")))
                if "error" in msg:
                    raise RunFailed(msg["error"])
                if "run_id" in msg:
                    return msg["run_id"]
        raise RunFailed("backend closed the stream without a run_id")


def _detail(r) -> str:
    """The one-line refusal of an HTTP backend: ``{"detail": ...}``, or a plain-text body (host check,
    body limit)."""
    try:
        detail = r.json().get("detail")
    except ValueError:
        detail = None
    return str(detail or r.text.strip() or f"HTTP {r.status_code}").splitlines()[0]


def default_client(store: str | None = None) -> Client:
    url = os.environ.get("HYBRIDSCOPE_BACKEND_URL")
    return HttpClient(url) if url else LocalClient(store=store)
