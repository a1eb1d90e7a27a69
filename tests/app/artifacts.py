"""Where browser tests save their screenshots: ``$HYBRIDSCOPE_TEST_ARTIFACTS`` (CI may collect it), else
``out/test-artifacts/`` in the checkout (git-ignored). :func:`screenshot` writes ``<folder>/<name>.png``."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def artifacts_dir() -> Path:
    env = os.environ.get("HYBRIDSCOPE_TEST_ARTIFACTS")
    folder = Path(env) if env else ROOT / "out" / "test-artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(page, name: str) -> Path:
    """A full-page PNG of a Playwright page."""
    path = artifacts_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
