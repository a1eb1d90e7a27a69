"""One definition of the run-size limits: the HTTP server and the dashboard's local client agree."""

from __future__ import annotations

import warnings

from backend.client import LocalClient
from backend.limits import limits_for
from backend.server import make_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


def test_server_and_local_client_report_the_same_cpu_limits(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDSCOPE_MAX_TOKENS", "4096")
    monkeypatch.setenv("HYBRIDSCOPE_MAX_DOCS", "3")
    served = TestClient(make_app(str(tmp_path / "store")), base_url="http://127.0.0.1").get("/limits").json()
    assert served == LocalClient().limits()
    assert (served["device"], served["max_tokens"], served["max_docs"]) == ("cpu", 4096, 3)


def test_gpu_limits_are_larger_and_ignore_the_cpu_settings(monkeypatch):
    monkeypatch.setenv("HYBRIDSCOPE_MAX_TOKENS", "16")
    gpu, cpu = limits_for("cuda"), limits_for("cpu")
    assert gpu["max_tokens"] == 1 << 20 and cpu["max_tokens"] == 16 and gpu["max_docs"] > cpu["max_docs"]
