"""Fixtures shared by the zoo test modules."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """The small deterministic corpus build that test_zoo_data.py checks (read-only for its users)."""
    from tests.zoo.test_zoo_data import SMALL
    from zoo.build import build_data

    out = tmp_path_factory.mktemp("zoo_data")
    build_data(out, **SMALL)
    return out
