"""Cancelling a run through the dashboard's clients: LocalClient stops its child process (SIGTERM -> the
CLI's CancelToken), the child is gone afterwards, and the store holds nothing of the run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from backend.client import EXIT_CANCELLED, Cancelled, LocalClient, RunFailed
from backend.spec import RunSpec

ROOT = Path(__file__).resolve().parents[2]
SLOW = RunSpec.build(model="tiny/SSSF", probe="token_loss", data="stdlib", params={"n_docs": 8, "max_tokens": 4096})


def _store_files(store: Path) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file()) if store.exists() else []


def test_cancel_stops_the_child_and_stores_nothing(tmp_path):
    store = tmp_path / "store"
    client, cancel, seen, result = LocalClient(store=str(store)), threading.Event(), [], {}

    def progress(frac: float, msg: str) -> None:
        seen.append((frac, msg))
        if msg.startswith("document"):
            cancel.set()  # cancelled while it computes, after its first document

    def go() -> None:
        try:
            result["run_id"] = client.submit(SLOW, on_progress=progress, cancel=cancel)
        except RunFailed as e:
            result["error"] = e

    t = threading.Thread(target=go)
    t0 = time.monotonic()
    t.start()
    t.join(timeout=120)
    assert not t.is_alive()
    assert isinstance(result.get("error"), Cancelled), result
    assert "cancelled" in str(result["error"]) and "nothing was stored" in str(result["error"])
    assert any(m.startswith("document") for _, m in seen)
    assert not psutil.pid_exists(client.pid) or psutil.Process(client.pid).status() == psutil.STATUS_ZOMBIE
    assert time.monotonic() - t0 < 90
    files = _store_files(store)
    assert not [f for f in files if f.startswith("runs/") and not f.endswith(".lock")], files


def test_an_exception_from_on_progress_stops_the_child(tmp_path):
    client = LocalClient(store=str(tmp_path / "store"))

    class Leave(Exception):
        pass

    def progress(frac: float, msg: str) -> None:
        if msg.startswith("document"):
            raise Leave

    with pytest.raises(Leave):
        client.submit(SLOW, on_progress=progress)
    assert not psutil.pid_exists(client.pid) or psutil.Process(client.pid).status() == psutil.STATUS_ZOMBIE


def test_sigterm_exits_with_the_cancelled_code_and_one_line(tmp_path):
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "backend", "run", "--spec-json", SLOW.canonical_json(), "--json", "--progress",
           "--store", str(store)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if '"document' in line:
            proc.terminate()
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == EXIT_CANCELLED
    errors = [ln for ln in rest.splitlines() if ln.startswith("error:")]
    assert errors == ["error: run: cancelled; nothing was stored"], rest[-500:]
    assert proc.stdout.read() == ""
    files = _store_files(store)
    assert not [f for f in files if f.startswith("runs/") and not f.endswith(".lock")], files
