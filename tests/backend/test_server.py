"""HTTP backend (FastAPI TestClient and a real uvicorn server for HttpClient) and LocalClient,
which runs the CLI in a child process: progress arrives, then the run_id of a stored run."""

from __future__ import annotations

import json
import socket
import threading
import time
import warnings

import pytest

from backend.client import HttpClient, LocalClient, RunFailed
from backend.runner import Runner
from backend.server import make_app
from backend.spec import RunSpec
from backend.store import TraceStore

with warnings.catch_warnings():  # starlette's notice about its httpx-based test client
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A document, a short document and an isolated store (no precomputed/ store)."""
    (tmp_path / "doc.txt").write_text("".join(f"line {i}: a document for the server. " for i in range(5)))
    (tmp_path / "short.txt").write_text("a")
    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(tmp_path / "precomputed"))  # this process and children
    monkeypatch.delenv("HYBRIDSCOPE_MAX_TOKENS", raising=False)
    monkeypatch.delenv("HYBRIDSCOPE_MAX_DOCS", raising=False)
    monkeypatch.setenv("HYBRIDSCOPE_DATA_ROOTS", str(tmp_path))  # file data over HTTP only from here
    return {"doc": f"file:{tmp_path / 'doc.txt'}", "short": f"file:{tmp_path / 'short.txt'}",
            "store": str(tmp_path / "store")}


def body(data: str, **kw) -> dict:
    params = {"n_docs": 1, "max_tokens": 80}
    return {"model": "tiny/SF", "probe": "token_loss", "data": data, "params": params, **kw}


def post(client: TestClient, payload) -> tuple[int, list]:
    with client.stream("POST", "/runs", json=payload) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, [r.json()]
        return 200, [json.loads(line) for line in r.iter_lines() if line]


def test_post_streams_progress_then_run_id(env):
    client = TestClient(make_app(env["store"]), base_url="http://127.0.0.1")
    status, lines = post(client, body(env["doc"], ablation="skip=0"))
    assert status == 200 and len(lines) >= 3
    *progress, last = lines
    assert all(set(p) == {"progress", "message"} and 0.0 <= p["progress"] <= 1.0 for p in progress)
    assert progress[0]["message"] == "loading tiny/SF"
    assert progress[-1] == {"progress": 1.0, "message": "done"}
    spec = RunSpec.build(**body(env["doc"], ablation="skip=0"))
    run_id = Runner(env["store"], read_only_roots=[]).run_id(spec)
    assert last == {"run_id": run_id, "cached": False}

    r = client.get(f"/runs/{run_id}")
    assert r.status_code == 200
    m = r.json()
    assert m["status"] == "ok" and m["spec"] == spec.canonical() and m["rows"]["token_loss"] == 79
    assert TraceStore(env["store"]).has(run_id, status="ok")
    assert post(client, body(env["doc"], ablation="skip=0")) == (200, [{"run_id": run_id, "cached": True}])


@pytest.mark.parametrize("payload, expected", [
    ({"model": "tiny/SF", "probe": "nope"}, "probe: unknown probe 'nope'"),
    ({"model": "nope/x", "probe": "token_loss", "data": "stdlib"}, "model: unknown model 'nope/x'"),
    ({"model": "tiny/SF", "probe": "token_loss", "ablation": "window[swaa]=4"}, "unknown selector 'swaa'"),
    ({"model": "tiny/SF", "probe": "token_loss", "params": {"foo": 1}}, "params.foo: Extra inputs"),
    ({"model": "tiny/SF", "probe": "token_loss", "params": {"max_tokens": -1}}, "params.max_tokens"),
    ({"model": "tiny/SF", "probe": "longppl", "params": {"trunc_len": 32, "stride": 40}}, "stride must be <"),
    ({"model": "tiny/SF", "probe": "token_loss", "colour": "red"}, "colour: Extra inputs are not permitted"),
    ({"model": "tiny/SF"}, "probe: Field required"),
    ({"model": "tiny/SF", "probe": "token_loss", "data": "file:/nonexistent.txt"},
     "data: 'file:/nonexistent.txt' is not inside an allowed data directory"),
    ([1, 2], "spec: Input should be a valid dictionary"),
])
def test_bad_spec_is_422_with_one_line(env, payload, expected):
    client = TestClient(make_app(env["store"]), base_url="http://127.0.0.1")
    status, (detail,) = post(client, payload)
    assert status == 422 and isinstance(detail["detail"], str), detail
    assert "\n" not in detail["detail"] and expected in detail["detail"], detail
    assert TraceStore(env["store"]).runs() == []  # refused before anything ran


def test_failed_run_streams_its_error(env):
    client = TestClient(make_app(env["store"]), base_url="http://127.0.0.1")
    status, lines = post(client, body(env["short"]))
    assert status == 200 and lines[-1] == {"error": "data: document has 1 token(s); at least 2 are needed"}
    (run_id,) = TraceStore(env["store"]).runs()
    assert client.get(f"/runs/{run_id}").status_code == 404  # stored as an error, not as a result


def test_get_unknown_and_invalid_run_ids_and_limits(env):
    client = TestClient(make_app(env["store"]), base_url="http://127.0.0.1")
    r = client.get("/runs/abc123")
    assert r.status_code == 404 and r.json() == {"detail": "run_id: no run 'abc123'"}
    r = client.get("/runs/.hidden")
    assert r.status_code == 422 and r.json()["detail"].startswith("run_id: '.hidden' is not allowed")
    served = client.get("/limits").json()
    assert served == LocalClient().limits() and served["device"] == "cpu" and served["hosted"] is False
    assert (served["max_tokens"], served["max_docs"]) == (8192, 8)


def test_local_client_submit(env):
    seen = []
    client = LocalClient(store=env["store"])
    spec = RunSpec.build(**body(env["doc"]))
    run_id = client.submit(spec, on_progress=lambda f, m: seen.append((f, m)))
    assert run_id == Runner(env["store"], read_only_roots=[]).run_id(spec)
    assert TraceStore(env["store"]).has(run_id, status="ok")
    assert seen[0] == (0.0, "loading tiny/SF") and seen[-1] == (1.0, "done")
    assert all(0.0 <= f <= 1.0 for f, _ in seen)
    with pytest.raises(RunFailed, match=r"^data: document has 1 token\(s\); at least 2 are needed$"):
        client.submit(RunSpec.build(**body(env["short"])))
    assert client.limits()["device"] == "cpu"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_client_against_a_live_server(env):
    import uvicorn

    port = free_port()
    config = uvicorn.Config(make_app(env["store"]), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        client, seen = HttpClient(f"http://127.0.0.1:{port}"), []
        spec = RunSpec.build(**body(env["doc"], ablation="window[all]=8"))
        run_id = client.submit(spec, on_progress=lambda f, m: seen.append((f, m)))
        assert run_id == Runner(env["store"], read_only_roots=[]).run_id(spec) and seen[-1] == (1.0, "done")
        assert client.submit(spec) == run_id
        with pytest.raises(RunFailed, match="model: unknown model 'nope/x'"):
            client.submit(RunSpec.build(model="nope/x", probe="token_loss", data=env["doc"]))
        with pytest.raises(RunFailed, match="data: document has 1 token"):
            client.submit(RunSpec.build(**body(env["short"])))
        assert client.limits()["device"] == "cpu"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
