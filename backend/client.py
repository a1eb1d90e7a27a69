"""How the dashboard asks the backend for runs, without importing torch.

``LocalClient`` (the default) runs ``python -m backend run ... --json --progress`` in a child
process, so the dashboard process stays torch-free; progress arrives as JSON lines on stderr.
``HttpClient`` posts the same RunSpec to a FastAPI backend (``HYBRIDSCOPE_BACKEND_URL``).
Both return the run_id once the traces are in the store (or raise ``RunFailed``).

Cancel: pass ``cancel`` (a ``threading.Event``) to ``submit``; setting it stops the run and
``submit`` raises :class:`Cancelled`. ``LocalClient`` sends the child SIGTERM (the CLI turns it into
its run's ``CancelToken``, so the run stops at its next progress report and stores nothing) and
SIGKILL after :data:`GRACE_S`; ``HttpClient`` closes the stream (the server cancels a run whose last
client left). The child is also stopped when ``submit`` leaves early for any other reason (an
exception raised by ``on_progress``, say): no run outlives the call that asked for it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from backend.limits import cpu_limits
from backend.spec import RunSpec

Progress = Callable[[float, str], None]
ROOT = Path(__file__).resolve().parents[1]
GRACE_S = 10.0  # seconds a cancelled child gets to stop at a progress report before SIGKILL
EXIT_CANCELLED = 3  # the CLI's exit code for a cancelled run (backend.cli)


class RunFailed(RuntimeError):
    """The backend refused or failed the run; the message is for the user."""


class Cancelled(RunFailed):
    """The run was cancelled (``submit(..., cancel=event)``); nothing of it was stored."""


class Client(Protocol):
    def submit(self, spec: RunSpec, on_progress: Progress | None = None,
               cancel: threading.Event | None = None) -> str: ...

    def limits(self) -> dict: ...


class LocalClient:
    def __init__(self, store: str | None = None, python: str = sys.executable) -> None:
        self.store = store
        self.python = python

    def limits(self) -> dict:
        return cpu_limits()

    def submit(self, spec: RunSpec, on_progress: Progress | None = None,
               cancel: threading.Event | None = None) -> str:
        cmd = [self.python, "-m", "backend", "run", "--spec-json", spec.canonical_json(), "--json", "--progress"]
        if self.store:
            cmd += ["--store", self.store]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.pid = proc.pid  # for tests: the child of the latest submit
        cancel = cancel or threading.Event()
        done = threading.Event()
        watcher = threading.Thread(target=_stop_when, args=(proc, cancel, done), daemon=True)
        watcher.start()
        err_lines: list[str] = []
        assert proc.stderr is not None and proc.stdout is not None
        try:
            for line in proc.stderr:
                if line.startswith('{"progress"'):
                    msg = json.loads(line)
                    if on_progress and not cancel.is_set():
                        on_progress(float(msg["progress"]), str(msg.get("message", "")))
                else:
                    err_lines.append(line.rstrip())
            out = proc.stdout.read()
            code = proc.wait()
        except BaseException:
            cancel.set()  # leaving early (an exception from on_progress, an interrupt): stop the child
            raise
        finally:
            done.set()
            watcher.join()
            proc.stdout.close()
            proc.stderr.close()
        if cancel.is_set() or code == EXIT_CANCELLED:
            raise Cancelled(_last(err_lines, "run: cancelled; nothing was stored"))
        if code != 0:
            raise RunFailed(_last(err_lines, "backend run failed"))
        return json.loads(out)["run_id"]


def _last(lines: list[str], default: str) -> str:
    return (lines or [default])[-1].removeprefix("error: ")


def _stop_when(proc: subprocess.Popen, cancel: threading.Event, done: threading.Event) -> None:
    """Wait until the run ends (``done``) or is cancelled; on cancel SIGTERM the child, SIGKILL it after
    :data:`GRACE_S`, and reap it (nothing of the child is left running)."""
    while not done.wait(0.1):
        if cancel.is_set():
            break
    if not cancel.is_set() or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass


class HttpClient:
    def __init__(self, url: str, timeout: float = 3600.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def limits(self) -> dict:
        import httpx

        return httpx.get(f"{self.url}/limits", timeout=10).json()

    def submit(self, spec: RunSpec, on_progress: Progress | None = None,
               cancel: threading.Event | None = None) -> str:
        import httpx

        cancel = cancel or threading.Event()
        with httpx.stream("POST", f"{self.url}/runs", json=spec.canonical(), timeout=self.timeout) as r:
            if r.status_code != 200:
                r.read()
                raise RunFailed(_detail(r))
            done = threading.Event()
            closer = threading.Thread(target=_close_when, args=(r, cancel, done), daemon=True)
            closer.start()
            try:
                return self._read(r, on_progress, cancel)
            except httpx.HTTPError:
                if cancel.is_set():
                    raise Cancelled("run: cancelled; the backend stops a run whose client left") from None
                raise
            finally:
                done.set()
                closer.join()

    @staticmethod
    def _read(r, on_progress: Progress | None, cancel: threading.Event) -> str:
        for line in r.iter_lines():
            if cancel.is_set():
                raise Cancelled("run: cancelled; the backend stops a run whose client left")
            msg = json.loads(line)
            if "progress" in msg and on_progress:
                on_progress(float(msg["progress"]), str(msg.get("message", "")))
            if "error" in msg:
                raise RunFailed(msg["error"])
            if "run_id" in msg:
                return msg["run_id"]
        if cancel.is_set():
            raise Cancelled("run: cancelled; the backend stops a run whose client left")
        raise RunFailed("backend closed the stream without a run_id")


def _close_when(r, cancel: threading.Event, done: threading.Event) -> None:
    """Close an HTTP run's stream when it is cancelled (the server then cancels the run)."""
    while not done.wait(0.1):
        if cancel.is_set():
            r.close()
            return


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
