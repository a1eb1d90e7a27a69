"""Where things live on disk: the one place that reads the path settings (torch-free).

Every function reads its environment variable when it is called, so a test or a tool that points
HybridScope elsewhere sets the variable (``monkeypatch.setenv``, or the environment of a child
process) and nothing caches a stale copy:

* ``HYBRIDSCOPE_PRECOMPUTED``: the bundle (``zoo/`` checkpoints, ``data/`` held-out documents,
  ``store/`` read-only traces); default ``<repo>/precomputed``.
* ``HYBRIDSCOPE_STORE``: the user's trace store (new runs); default a user cache directory.
* ``HYBRIDSCOPE_MODEL_ROOTS``: ``os.pathsep``-separated directories holding user checkpoints.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def precomputed_root() -> Path:
    """The bundle root (``HYBRIDSCOPE_PRECOMPUTED``, else ``<repo>/precomputed``)."""
    env = os.environ.get("HYBRIDSCOPE_PRECOMPUTED")
    return Path(env).expanduser() if env else REPO_ROOT / "precomputed"


def zoo_root() -> Path:
    """Bundled checkpoints: ``zoo/<name>`` refs resolve to ``zoo_root() / name``."""
    return precomputed_root() / "zoo"


def bundled_data_root() -> Path:
    """Bundled held-out documents: data ref ``zoo:<split>`` is ``bundled_data_root() / f"{split}.jsonl"``."""
    return precomputed_root() / "data"


def precomputed_store() -> Path:
    """The bundled, read-only trace store."""
    return precomputed_root() / "store"


def store_root() -> Path:
    """The user trace store (``HYBRIDSCOPE_STORE``, else a user cache directory)."""
    env = os.environ.get("HYBRIDSCOPE_STORE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("hybridscope")) / "store"


def model_roots() -> list[Path]:
    """Directories under which user checkpoints are looked up (``HYBRIDSCOPE_MODEL_ROOTS``)."""
    env = os.environ.get("HYBRIDSCOPE_MODEL_ROOTS", "")
    return [Path(p).expanduser() for p in env.split(os.pathsep) if p]


__all__ = [
    "REPO_ROOT", "bundled_data_root", "model_roots", "precomputed_root", "precomputed_store", "store_root",
    "zoo_root",
]
