"""Shared pieces of the browser tests (Playwright + Debian chromium): the module-wide browser, a fresh
page per test, and starting the dashboard (the fake-client app by default) over a store and a
precomputed folder. The ``browser`` / ``page`` fixtures live in tests/app/conftest.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from app import serve
from tests.app.conftest import FAKE_APP

CHROMIUM, FLAGS = serve.CHROMIUM, serve.FLAGS
TIMEOUT_MS = 60_000
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason="Debian chromium not installed (/usr/bin/chromium)")


def start_dashboard(store: Path, precomputed: Path, app: str | None = FAKE_APP) -> tuple[subprocess.Popen, str]:
    """Start the dashboard over ``store``; returns (process, base URL) once /_stcore/health answers."""
    env = {"HYBRIDSCOPE_STORE": str(store), "HYBRIDSCOPE_PRECOMPUTED": str(precomputed), "OMP_NUM_THREADS": "1"}
    return serve.start(env, app) if app else serve.start(env)
