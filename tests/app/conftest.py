"""Fixtures for the dashboard tests: a temp trace store with synthetic runs, and AppTest helpers.

The app is pointed at the store with HYBRIDSCOPE_STORE (and an empty HYBRIDSCOPE_PRECOMPUTED: no
dashboard defaults), and the fake client is installed as ``run_panel.CLIENT_FACTORY`` (AppTest runs the
app in this process), so no test ever submits a real run. Served apps (browser tests) run
tests/app/fake_app.py, which installs the same fake in the server process.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.app.fake_client import FakeClient, write_synthetic

ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "app" / "main.py")
FAKE_APP = "tests/app/fake_app.py"  # the served app with the fake client (relative to ROOT)
MODELS = ("zoo/swa64", "zoo/gdn")
ABLATIONS = ("", "rf[full]=64")
PROBES = ("token_loss", "longppl", "niah", "retrieval_heads", "attention_rows", "gradient_influence",
          "retrieval_probe", "qk_distance", "attributions")


def build_store(root: Path) -> dict[tuple[str, str, str], str]:
    """Synthetic runs for every model x ablation x probe, plus one sweep per model and one formation series."""
    ids = {}
    for model in MODELS:
        for abl in ABLATIONS:
            for probe in PROBES:
                ids[(model, abl, probe)] = write_synthetic(root, model, probe, abl)
        ids[(model, "", "sweep")] = write_synthetic(root, model, "sweep", "")
    ids[("zoo/swa64", "", "formation")] = write_synthetic(root, "zoo/swa64", "sweep", data="formation:test")
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


def install_fake(monkeypatch) -> None:
    """The fake backend client for the app run by AppTest in this process."""
    from app import data, run_panel

    monkeypatch.setattr(run_panel, "CLIENT_FACTORY", lambda: FakeClient(data.store_dir()))


@pytest.fixture
def env(monkeypatch, tmp_path):
    """Point the app at an empty precomputed dir and the fake client; returns the fake-client log path."""
    pre = tmp_path / "precomputed"
    pre.mkdir()
    log = tmp_path / "fake_log.jsonl"
    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(pre))
    monkeypatch.setenv("HYBRIDSCOPE_FAKE_LOG", str(log))
    install_fake(monkeypatch)
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


def make_app(page: str = "overview", **query: str | list[str]):
    """AppTest of the dashboard opened at ``/<page>?<query>``."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(MAIN, default_timeout=60)
    if page != "overview":
        at.switch_page(f"views/{page}.py")
    for k, v in query.items():
        at.query_params[k] = v
    return at


def run_app(page: str = "overview", **query: str | list[str]):
    at = make_app(page, **query).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def open_panel(at, *keys: str):
    """``at`` rerun with the sidebar expanders ``keys`` open (``app.run_panel.EDITOR_OPEN`` /
    ``COMPUTE_OPEN``: their content is drawn only while open), as a click on each would."""
    for key in keys:
        at.session_state[key] = True
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def link(at) -> dict[str, str | list[str]]:
    """The query of the sidebar permalink (AppTest has no browser to write bound widgets into its URL;
    the permalink is what the app says the URL is), as ``at.query_params`` shows a query: a repeated
    parameter as a list."""
    query = parse_qs(urlsplit(at.sidebar.code[0].value).query, keep_blank_values=True)
    return {k: (v if len(v) > 1 else v[0]) for k, v in query.items()}


def charts(at) -> list:
    return list(at.get("vega_lite_chart"))


def texts(at, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]


# ---------------------------------------------------------------- browser tests (tests/app/browser.py)
@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    from tests.app.browser import CHROMIUM, FLAGS

    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    from tests.app.browser import TIMEOUT_MS

    pg.set_default_timeout(TIMEOUT_MS)
    yield pg
    ctx.close()
