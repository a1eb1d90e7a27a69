"""The HTTP server protects itself: limits (400 naming the limit, 413 body, 429 queue full), Host
header check, wall-clock limit, a disconnected client cancels its run (nothing stored), /health answers
within a second during a burst, and ``serve`` binds 127.0.0.1. One real ``python -m backend serve``
process on 127.0.0.1 for the live tests (stopped by PID); the others use the app in-process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import httpx
import pytest

from app.serve import stop
from backend.server import make_app
from backend.store import TraceStore
from tests.netcheck import LOOPBACK_V4, listening

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[2]
SLOW = {"lengths": [512], "depths": [0.0, 0.25, 0.5, 0.75, 1.0], "samples": 8, "max_new_tokens": 8}


def slow_run(seed: int = 0) -> dict:
    """A NIAH run of 40 prompts (about half a second each on CPU): progress before every prompt."""
    return {"model": "tiny/MF", "probe": "niah", "params": {**SLOW, "seed": seed}}


def stored(root: Path) -> list[Path]:
    """Every file under the store's runs/ (a partial run would leave some)."""
    return sorted(p for p in (root / "runs").rglob("*") if p.is_file()) if (root / "runs").is_dir() else []


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(tmp_path / "precomputed"))
    for k in ("HYBRIDSCOPE_MAX_TOKENS", "HYBRIDSCOPE_MAX_DOCS", "HYBRIDSCOPE_HOSTED", "HYBRIDSCOPE_DATA_ROOTS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HYBRIDSCOPE_MAX_BODY_BYTES", "8192")
    return TestClient(make_app(str(tmp_path / "store")), base_url="http://127.0.0.1"), tmp_path / "store"


def test_over_limit_runs_get_400_naming_the_limit(client):
    c, store = client
    cases = [
        ({"probe": "token_loss", "params": {"max_tokens": 1 << 20, "n_docs": 1}}, "max_tokens"),
        ({"probe": "token_loss", "params": {"max_tokens": 64, "n_docs": 10000}}, "max_docs"),
        ({"probe": "niah", "params": {"lengths": [256, 65536]}}, "max_tokens"),
        ({"probe": "longppl", "params": {"n_docs": 9, "max_tokens": 64, "trunc_len": 32, "stride": 16}}, "max_docs"),
    ]
    for spec, limit in cases:
        r = c.post("/runs", json={"model": "tiny/SF", "data": "stdlib", **spec})
        assert r.status_code == 400, r.text
        detail = r.json()["detail"]
        assert "\n" not in detail and f"({limit} of this cpu backend" in detail and "allowed" in detail, detail
    assert stored(store) == []


def test_body_size_depth_and_host_are_checked_before_anything_runs(client):
    c, store = client
    r = c.post("/runs", content=b'{"model": "' + b"a" * 9000 + b'"}', headers={"content-type": "application/json"})
    assert (r.status_code, r.text) == (413, "Content Too Large")
    r = c.post("/runs", content=b"[" * 40 + b"]" * 40)
    assert r.status_code == 400 and r.json() == {"detail": "body: JSON nested deeper than 32 levels"}
    huge = b'{"model": "tiny/SF", "probe": "token_loss", "params": {"n_docs": ' + b"9" * 4400 + b"}}"
    r = c.post("/runs", content=huge)
    assert r.status_code == 400 and r.json()["detail"].startswith("body: Exceeds the limit"), r.text
    r = c.post("/runs", content=b'{"model": "tiny/SF", "probe": "longppl", "params": {"alpha": NaN}}')
    assert r.status_code == 400 and r.json() == {"detail": "body: NaN is not allowed (finite numbers only)"}
    for host in ("evil.example", "127.0.0.1.evil.example", "localhost.:80"):
        r = c.get("/limits", headers={"host": host})
        assert (r.status_code, r.text) == (400, "Invalid host header"), host
    for host in ("127.0.0.1:8765", "localhost", "[::1]:9"):
        assert c.get("/health", headers={"host": host}).status_code == 200, host
    assert stored(store) == []


def test_wall_clock_limit_stops_the_run_and_stores_nothing(client, monkeypatch, tmp_path):
    monkeypatch.setenv("HYBRIDSCOPE_MAX_RUN_SECONDS", "1")
    c = TestClient(make_app(str(tmp_path / "store2")), base_url="http://127.0.0.1")
    t0 = time.monotonic()
    with c.stream("POST", "/runs", json=slow_run()) as r:
        lines = [json.loads(x) for x in r.iter_lines() if x]
    assert time.monotonic() - t0 < 15
    assert lines[-1] == {"error": "run: stopped at the wall-clock limit of 1 s (max_run_seconds); "
                                  "nothing was stored"}
    assert stored(tmp_path / "store2") == [] and c.get("/health").json()["running"] == 0


# ------------------------------------------------------------------------------------------------
# a real server process
# ------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python -m backend serve`` with 1 worker and a queue of 2, its store, PID and base URL."""
    tmp = tmp_path_factory.mktemp("live")
    port = free_port()
    env = {**os.environ, "HYBRIDSCOPE_PRECOMPUTED": str(tmp / "precomputed"), "HYBRIDSCOPE_WORKERS": "1",
           "HYBRIDSCOPE_MAX_QUEUE": "2", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for k in ("HYBRIDSCOPE_HOSTED", "HYBRIDSCOPE_LISTEN_HOST", "HYBRIDSCOPE_MAX_RUN_SECONDS"):
        env.pop(k, None)
    log = open(tmp / "server.log", "w+b")  # noqa: SIM115 - closed below; a file, never a full pipe
    proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--port", str(port), "--store",
                             str(tmp / "store")], cwd=REPO, env=env, stdout=log, stderr=log,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"server did not start: {log.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.2)
        yield {"base": base, "pid": proc.pid, "store": tmp / "store", "port": port}
    finally:
        stop(proc)  # by PID: SIGTERM, then SIGKILL
        log.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("Threads:"))
    return int(line.split()[1])


def wait_idle(base: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        h = httpx.get(f"{base}/health", timeout=5).json()
        if h["running"] == 0 and h["queued"] == 0 or time.monotonic() > deadline:
            return h
        time.sleep(0.1)


def test_serve_listens_on_loopback_only(server):
    assert listening(server["port"]) == [("tcp", LOOPBACK_V4)]  # 127.0.0.1, nothing else


def test_disconnected_client_cancels_its_run_and_nothing_is_stored(server):
    base, pid = server["base"], server["pid"]
    with httpx.Client(timeout=60) as http, http.stream("POST", f"{base}/runs", json=slow_run(1)) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        first = [json.loads(next(lines)) for _ in range(3)]  # loading, then the first prompts
        assert first[0]["message"] == "loading tiny/MF" and "NIAH length 512" in first[2]["message"]
        assert httpx.get(f"{base}/health", timeout=5).json()["running"] == 1
    t0 = time.monotonic()
    assert wait_idle(base) == {"status": "ok", "running": 0, "queued": 0}
    assert time.monotonic() - t0 < 10  # stopped at the next prompt, not after all 40
    before = cpu_seconds(pid)
    time.sleep(1.0)
    assert cpu_seconds(pid) - before < 0.3  # no run burning CPU any more
    assert stored(server["store"]) == []  # no tables, no manifest, no error run


def test_burst_is_bounded_429_beyond_the_queue_and_health_answers_within_a_second(server):
    base, pid = server["base"], server["pid"]
    results: dict[int, tuple[int, object]] = {}
    clients: list[httpx.Client] = []
    started = threading.Barrier(13)
    holding = threading.Event()

    def submit(i: int) -> None:
        c = httpx.Client(timeout=60)
        clients.append(c)
        started.wait()
        with c.stream("POST", f"{base}/runs", json=slow_run(100 + i)) as r:
            if r.status_code != 200:
                r.read()
                results[i] = (r.status_code, (r.json(), r.headers.get("retry-after")))
                return
            results[i] = (200, None)  # admitted (the queued one has no line until the first run ends)
            holding.wait(30)  # keep the stream open until every request is answered

    workers = [threading.Thread(target=submit, args=(i,)) for i in range(12)]
    for w in workers:
        w.start()
    started.wait()
    health_s = []
    for _ in range(8):
        t0 = time.monotonic()
        h = httpx.get(f"{base}/health", timeout=5)
        health_s.append(time.monotonic() - t0)
        assert h.status_code == 200
        time.sleep(0.2)
    n_threads = threads(pid)
    deadline = time.monotonic() + 30
    while len(results) < 12 and time.monotonic() < deadline:  # a loaded machine answers slowly
        time.sleep(0.05)
    holding.set()
    for w in workers:
        w.join(60)
    for c in clients:
        c.close()
    codes = sorted(code for code, _ in results.values())
    assert codes == [200, 200] + [429] * 10, results
    for _, (detail, retry) in (v for v in results.values() if v[0] == 429):
        assert detail == {"detail": "queue: 2 runs are already queued or running (max_queue); retry later"}
        assert retry == "5"
    assert max(health_s) < 1.0, health_s
    assert n_threads < 60, n_threads  # bounded: one worker, not a thread per request
    assert wait_idle(base) == {"status": "ok", "running": 0, "queued": 0}
    assert stored(server["store"]) == []  # both admitted runs were cancelled when their clients left


def test_identical_requests_share_one_run_and_it_outlives_one_leaving_client(server):
    base = server["base"]
    spec = {"model": "tiny/SF", "probe": "niah", "params": {"lengths": [512], "depths": [0.5], "samples": 3,
                                                           "max_new_tokens": 8}}
    with httpx.Client(timeout=60) as a, httpx.Client(timeout=60) as b:
        with a.stream("POST", f"{base}/runs", json=spec) as ra:
            assert ra.status_code == 200
            next(ra.iter_lines())
            with b.stream("POST", f"{base}/runs", json=spec) as rb:
                assert rb.status_code == 200
                ra.close()  # one client leaves; the other still waits on the run
                last = [json.loads(x) for x in rb.iter_lines() if x][-1]
    assert set(last) == {"run_id", "cached"}, last
    assert TraceStore(server["store"]).has(last["run_id"], status="ok")
    TraceStore(server["store"]).delete(last["run_id"])


@pytest.mark.parametrize("argv, message", [
    (["--port", "99999"], "error: argument --port: invalid port '99999'; allowed: an integer 1-65535"),
    (["--port", "0x10"], "error: argument --port: invalid port '0x10'"),
    (["--host", "256.1.1.1"], "error: serve: cannot listen on 256.1.1.1:"),
])
def test_serve_bad_port_or_host_is_one_line(argv, message, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYBRIDSCOPE_PRECOMPUTED": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "backend", "serve", *argv, "--store", str(tmp_path / "s")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == "" and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith(message) and "Traceback" not in p.stderr


def test_serve_port_in_use_is_one_line(server, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYBRIDSCOPE_PRECOMPUTED": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "backend", "serve", "--port", str(server["port"]), "--store",
                        str(tmp_path / "s")], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith(f"error: serve: cannot listen on 127.0.0.1:{server['port']} (")
