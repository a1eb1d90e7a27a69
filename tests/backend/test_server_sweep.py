"""POST /sweeps: the CLI's grid over HTTP, run by the same engine (backend.dask_sweep.sweep) on the server's
Dask cluster (a 2-worker LocalCluster on 127.0.0.1, CPU): progress and one line per point stream back, a
point already in the store is not recomputed, a failing point is stored as an error while the others
complete; bad grids are one-line 4xx before anything runs; the queue is shared with runs."""

from __future__ import annotations

import json
import warnings

import pytest

from backend.runner import Runner
from backend.server import make_app
from backend.spec import RunSpec
from backend.store import TraceStore

with warnings.catch_warnings():  # starlette's notice about its httpx-based test client
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

PARAMS = {"n_docs": 1, "max_tokens": 48}


@pytest.fixture
def env(tmp_path, monkeypatch):
    (tmp_path / "doc.txt").write_text("".join(f"line {i}: a document for the sweep. " for i in range(5)))
    (tmp_path / "short.txt").write_text("a")  # one token: the token_loss probe fails on it
    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(tmp_path / "precomputed"))  # workers inherit it
    monkeypatch.setenv("HYBRIDSCOPE_DATA_ROOTS", str(tmp_path))
    monkeypatch.setenv("HYBRIDSCOPE_WORKERS", "2")
    monkeypatch.delenv("HYBRIDSCOPE_DASK_SCHEDULER", raising=False)
    for k in ("HYBRIDSCOPE_MAX_TOKENS", "HYBRIDSCOPE_MAX_DOCS", "HYBRIDSCOPE_HOSTED"):
        monkeypatch.delenv(k, raising=False)
    return {"doc": f"file:{tmp_path / 'doc.txt'}", "short": f"file:{tmp_path / 'short.txt'}",
            "store": str(tmp_path / "store")}


def post(client: TestClient, payload) -> tuple[int, list]:
    with client.stream("POST", "/sweeps", json=payload) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, [r.json()]
        return 200, [json.loads(line) for line in r.iter_lines() if line]


def test_sweep_streams_points_reuses_the_store_and_stores_a_failure(env):
    cached = Runner(env["store"], read_only_roots=[]).run(
        RunSpec.build(model="tiny/SF", probe="token_loss", data=env["doc"], params=PARAMS))
    before = TraceStore(env["store"]).manifest(cached.run_id)
    grid = {"models": ["tiny/SF"], "probes": ["token_loss"], "ablations": ["", "skip=0"],
            "data": [env["doc"], env["short"]], "params": PARAMS}
    with TestClient(make_app(env["store"]), base_url="http://127.0.0.1") as client:
        status, lines = post(client, grid)
        assert status == 200, lines
        *stream, final = lines
        assert set(final) == {"points", "counts"} and final["counts"] == {"cached": 1, "ok": 1, "error": 2}
        points = final["points"]
        assert [(p["spec"].get("ablation", {}), p["spec"]["data"], p["status"]) for p in points] == [
            ({}, env["doc"], "cached"), ({}, env["short"], "error"),
            ({"skip_layers": [0]}, env["doc"], "ok"), ({"skip_layers": [0]}, env["short"], "error")]
        per_point = [m for m in stream if "point" in m]
        assert sorted(m["point"] for m in per_point) == [0, 1, 2, 3]  # each point once, when settled
        assert {m["point"]: m["status"] for m in per_point} == {i: p["status"] for i, p in enumerate(points)}
        assert all(set(m) == {"progress", "message"} for m in stream if "point" not in m)
        assert [m["progress"] for m in stream if "progress" in m][-1] == 1.0

        store = TraceStore(env["store"])
        assert points[0]["run_id"] == cached.run_id and store.manifest(cached.run_id) == before  # not recomputed
        assert store.has(points[2]["run_id"], status="ok")
        for p in (points[1], points[3]):
            assert store.manifest(p["run_id"])["status"] == "error"  # stored with its message
            assert p["error"] == "ProbeInputError: data: document has 1 token(s); at least 2 are needed"
        assert client.get(f"/runs/{points[2]['run_id']}").json()["status"] == "ok"

        status, lines = post(client, grid)  # again: the ok points come from the store
        assert status == 200 and lines[-1]["counts"] == {"cached": 2, "error": 2}
        assert [p["run_id"] for p in lines[-1]["points"]] == [p["run_id"] for p in points]


@pytest.mark.parametrize("grid, code, expected", [
    ({"models": [], "probes": ["token_loss"]}, 422, "models: List should have at least 1 item"),
    ({"models": ["tiny/SF"], "probes": ["nope"]}, 422, "probes.0: Input should be"),
    ({"models": ["tiny/SF"], "probes": ["token_loss"], "colour": 1}, 422, "colour: Extra inputs"),
    ({"models": ["tiny/SF"], "probes": ["token_loss"], "ablations": ["window[swaa]=4"], "params": PARAMS}, 422,
     "unknown selector 'swaa'"),
    ({"models": ["tiny/SF"], "probes": ["token_loss"], "params": {"foo": 1}}, 422, "params.foo: Extra inputs"),
    ({"models": ["nope/x"], "probes": ["token_loss"], "data": ["stdlib"], "params": PARAMS}, 422,
     "model: unknown model 'nope/x'"),
    ({"models": ["tiny/SF"], "probes": ["token_loss"], "data": ["file:/nonexistent.txt"], "params": PARAMS}, 422,
     "is not inside an allowed data directory"),
    ({"models": ["tiny/SF"], "probes": ["token_loss"], "params": {"n_docs": 1, "max_tokens": 9000}}, 400,
     "params: 9000 tokens asked, at most 8192 allowed (max_tokens of this cpu backend"),
    ({"models": ["tiny/SF"], "probes": ["token_loss"], "ablations": [f"skip={i}" for i in range(65)]}, 400,
     "sweep: 65 points asked, at most 64 allowed (max_sweep_points"),
    ([1], 422, "sweep: Input should be a valid dictionary"),
])
def test_bad_grid_is_one_line_before_anything_runs(env, grid, code, expected):
    client = TestClient(make_app(env["store"]), base_url="http://127.0.0.1")
    status, (detail,) = post(client, grid)
    assert status == code and "\n" not in detail["detail"] and expected in detail["detail"], detail
    assert TraceStore(env["store"]).runs() == []
    assert client.app.state.dask.client is None  # no cluster was started


def test_a_sweep_is_a_job_of_the_queue(env, monkeypatch):
    monkeypatch.setenv("HYBRIDSCOPE_MAX_QUEUE", "1")
    app = make_app(env["store"])
    runs = app.state.runs
    with runs.lock:
        runs.admitted.add(object())  # the one slot is taken (a run computing)
    client = TestClient(app, base_url="http://127.0.0.1")
    r = client.post("/sweeps", json={"models": ["tiny/SF"], "probes": ["token_loss"], "data": [env["doc"]],
                                     "params": PARAMS})
    assert r.status_code == 429 and r.headers["Retry-After"] == "5" and "max_queue" in r.json()["detail"]


def test_a_client_leaving_sets_the_sweeps_cancel_token(env):
    """What the stream's close does (``job.detach``): the token the sweep engine polls between points is set,
    the job ends and leaves the queue; a finished sweep's token is left alone."""
    import asyncio
    import threading

    from backend.server_stream import Listener as _Listener

    app = make_app(env["store"])
    runs, seen = app.state.runs, threading.Event()

    def work(job) -> dict:
        seen.set()
        for _ in range(200):  # what sweep() does: poll cancel.is_set() between points
            if job.token.is_set():
                return {"points": [], "counts": {"cancelled": 1}}
            threading.Event().wait(0.05)
        return {"error": "not cancelled"}

    async def go() -> tuple:
        listener = _Listener()
        job = runs.start_sweep(work, listener)
        await asyncio.get_running_loop().run_in_executor(None, seen.wait, 5)
        job.detach()
        final = await asyncio.wait_for(listener.queue.get(), 10)
        job.detach()  # after the end: no effect
        return final, job

    final, job = asyncio.run(go())
    assert final == {"points": [], "counts": {"cancelled": 1}}
    assert job.token.reason == "sweep: cancelled, its client disconnected" and runs.counts() == (0, 0)
