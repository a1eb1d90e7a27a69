"""Fixtures for the dashboard tests: a temp trace store with synthetic runs, and AppTest helpers.

The app is pointed at the store with HYBRIDSCOPE_STORE (and an empty HYBRIDSCOPE_PRECOMPUTED), and
uses the fake client (HYBRIDSCOPE_CLIENT=fake), so no test ever submits a real run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.fake_client import write_synthetic

ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "app" / "main.py")
MODELS = ("zoo/swa64", "zoo/gdn")
ABLATIONS = ("", "rf[full]=64")
PROBES = ("token_loss", "longppl", "niah", "retrieval_heads", "attention_rows")


def build_store(root: Path) -> dict[tuple[str, str, str], str]:
    """Synthetic runs for every model x ablation x probe, plus one sweep per model."""
    ids = {}
    for model in MODELS:
        for abl in ABLATIONS:
            for probe in PROBES:
                ids[(model, abl, probe)] = write_synthetic(root, model, probe, abl)
        ids[(model, "", "sweep")] = write_synthetic(root, model, "sweep", "")
    return ids


@pytest.fixture(scope="session")
def base_store(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("store")
    return root, build_store(root)


def _clear_caches() -> None:
    import streamlit as st

    from app import data

    st.cache_data.clear()
    st.cache_resource.clear()
    data._GEN.clear()


@pytest.fixture
def env(monkeypatch, tmp_path):
    """Point the app at an empty precomputed dir and the fake client; returns the fake-client log path."""
    pre = tmp_path / "precomputed"
    pre.mkdir()
    log = tmp_path / "fake_log.jsonl"
    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(pre))
    monkeypatch.setenv("HYBRIDSCOPE_CLIENT", "fake")
    monkeypatch.setenv("HYBRIDSCOPE_FAKE_LOG", str(log))
    monkeypatch.delenv("HYBRIDSCOPE_BACKEND_URL", raising=False)
    monkeypatch.delenv("HYBRIDSCOPE_ALLOW_FILE_DATA", raising=False)
    monkeypatch.delenv("HYBRIDSCOPE_MODEL_ROOTS", raising=False)
    _clear_caches()
    yield log
    _clear_caches()


@pytest.fixture
def store(base_store, env, monkeypatch) -> dict:
    """The shared read-only synthetic store (tests must not write to it)."""
    root, ids = base_store
    monkeypatch.setenv("HYBRIDSCOPE_STORE", str(root))
    return ids


@pytest.fixture
def own_store(base_store, env, monkeypatch, tmp_path) -> Path:
    """A private copy of the synthetic store, for tests that compute (fake) runs."""
    root = tmp_path / "store"
    shutil.copytree(base_store[0], root)
    monkeypatch.setenv("HYBRIDSCOPE_STORE", str(root))
    return root


@pytest.fixture
def empty_store(env, monkeypatch, tmp_path) -> Path:
    root = tmp_path / "empty"
    monkeypatch.setenv("HYBRIDSCOPE_STORE", str(root))
    return root


def make_app(**query: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(MAIN, default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    return at


def run_app(**query: str):
    at = make_app(**query).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at) -> list:
    return list(at.get("vega_lite_chart"))


def texts(at, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]
