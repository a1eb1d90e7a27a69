"""python -m backend sweep on Dask: a 2-worker LocalCluster on CPU, end to end with tiny models; every
listening socket on loopback; cached points not recomputed; a failing point stored as an error while the
rest go on; cancel."""

from __future__ import annotations

import json
import threading

import psutil
import pytest

from backend import cli
from backend.dask_sweep import cluster_client, grid, sweep
from backend.store import TraceStore

LOOPBACK = {"127.0.0.1", "::1"}


@pytest.fixture(scope="module")
def client():
    with cluster_client(n_workers=2) as c:
        yield c


def _listening() -> list[tuple[int, str, int]]:
    me = psutil.Process()
    out = []
    for p in [me, *me.children(recursive=True)]:
        try:
            out += [(p.pid, c.laddr.ip, c.laddr.port) for c in p.net_connections(kind="inet")
                    if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            pass
    return out


def test_every_listening_socket_of_the_cluster_is_on_loopback(client):
    assert len(client.scheduler_info()["workers"]) == 2
    socks = _listening()
    pids = {pid for pid, _, _ in socks}
    assert len(pids) >= 3  # this process (scheduler) and the two worker processes (nanny + worker)
    assert all(ip in LOOPBACK for _, ip, _ in socks), socks
    for w in client.scheduler_info()["workers"]:
        assert w.startswith("tcp://127.0.0.1:")


def test_two_worker_sweep_end_to_end_cached_and_failing_points(client, tmp_path):
    store = str(tmp_path / "store")
    specs = grid(["tiny/SF", "tiny/SMGF"], ["token_loss"], ["", "rf[all]=8"], ["stdlib"],
                 {"n_docs": 1, "max_tokens": 64})
    specs += grid(["tiny/SF"], ["qk_distance"])  # a tiny model has no checkpoint series: the point fails
    seen = []
    points = sweep(specs, store=store, client=client, progress=lambda f, m: seen.append(f))
    assert [p.status for p in points] == ["ok"] * 4 + ["error"]
    assert "has no checkpoint series" in points[-1].error and seen[-1] == 1.0
    ts = TraceStore(store)
    assert all(ts.has(p.run_id, status="ok") for p in points[:4])
    assert ts.manifest(points[-1].run_id)["status"] == "error"  # the failure is stored with the run
    again = sweep(specs, store=store, client=client)
    assert [p.status for p in again] == ["cached"] * 4 + ["error"]  # ok points never resubmitted
    assert [p.run_id for p in again] == [p.run_id for p in points]


def test_cancel_stops_pending_points(client, tmp_path):
    cancel = threading.Event()
    specs = grid(["tiny/SSSF"], ["token_loss"], [f"window[swa]={w}" for w in range(2, 14)], ["stdlib"],
                 {"n_docs": 1, "max_tokens": 1024})
    points = sweep(specs, store=str(tmp_path / "s"), client=client, cancel=cancel,
                   progress=lambda f, m: cancel.set() if f > 0 else None)
    statuses = [p.status for p in points]
    assert "cancelled" in statuses and set(statuses) <= {"ok", "cancelled"}


def test_cli_sweep_on_a_local_cluster(tmp_path, capsys):
    code = cli.main(["sweep", "--model", "tiny/SF", "--probe", "token_loss", "--ablation", "", "--ablation",
                     "rf[all]=4", "--data", "stdlib", "--param", "n_docs=1", "--param", "max_tokens=48",
                     "--workers", "2", "--store", str(tmp_path / "store"), "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0 and [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[1]["spec"]["ablation"] == {"receptive_field": {"all": 4}}


def test_cli_sweep_bad_input_is_one_line(capsys):
    assert cli.main(["sweep", "--probe", "token_loss"]) == 2
    assert capsys.readouterr().err == "error: sweep: give at least one --model and one --probe\n"
