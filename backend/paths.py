"""Where things live on disk: the one place that reads the path settings (torch-free).

Every function reads its environment variable when it is called, so a test or a tool that points
HybridScope elsewhere sets the variable (``monkeypatch.setenv``, or the environment of a child
process) and nothing caches a stale copy:

* ``HYBRIDSCOPE_PRECOMPUTED``: the bundle (``zoo/`` checkpoints, ``data/`` held-out documents,
  ``store/`` read-only traces); default ``<repo>/precomputed``.
* ``HYBRIDSCOPE_STORE``: the user's trace store (new runs); default on a hosted backend
  (``HYBRIDSCOPE_HOSTED=1``) ``<HYBRIDSCOPE_PERSISTENT_DIR>/hybridscope/store`` when that directory
  (default ``/data``, a Hugging Face Space's persistent storage) exists and is writable, else a user
  cache directory.
* ``HYBRIDSCOPE_WEIGHTS_CACHE``: where xz-packed checkpoint weights are unpacked (``backend.packed_weights``);
  default ``<persistent dir>/hybridscope/weights`` hosted, else a user cache directory.
* ``HYBRIDSCOPE_MODEL_ROOTS``: ``os.pathsep``-separated directories holding user checkpoints.
* ``HYBRIDSCOPE_DATA_ROOTS``: ``os.pathsep``-separated directories that ``file:`` datasets may be read
  from (see :func:`file_data_roots`).

Every ref resolves to a real path inside its root, symlinks resolved (:func:`inside`).
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


def persistent_dir() -> Path | None:
    """A hosted backend's persistent storage (``HYBRIDSCOPE_PERSISTENT_DIR``, default ``/data``) when it
    exists and is writable; None elsewhere."""
    from backend.limits import hosted

    if not hosted():
        return None
    path = Path(os.environ.get("HYBRIDSCOPE_PERSISTENT_DIR") or "/data")
    return path if path.is_dir() and os.access(path, os.W_OK | os.X_OK) else None


def _user_dir(env_var: str, name: str) -> Path:
    """``$env_var`` if set; else hosted, ``<persistent dir>/hybridscope/<name>``; else a user cache dir."""
    env = os.environ.get(env_var)
    if env:
        return Path(env).expanduser()
    persistent = persistent_dir()
    if persistent is not None:
        return persistent / "hybridscope" / name
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("hybridscope")) / name


def store_root() -> Path:
    """The user trace store (``HYBRIDSCOPE_STORE``; else hosted, the persistent storage when there is
    one; else a user cache directory)."""
    return _user_dir("HYBRIDSCOPE_STORE", "store")


def weights_cache_root() -> Path:
    """Unpacked copies of xz-packed checkpoints (``HYBRIDSCOPE_WEIGHTS_CACHE``; see store_root)."""
    return _user_dir("HYBRIDSCOPE_WEIGHTS_CACHE", "weights")


def model_roots() -> list[Path]:
    """Directories under which user checkpoints are looked up (``HYBRIDSCOPE_MODEL_ROOTS``)."""
    env = os.environ.get("HYBRIDSCOPE_MODEL_ROOTS", "")
    return [Path(p).expanduser() for p in env.split(os.pathsep) if p]


def data_roots() -> list[Path]:
    """Directories ``file:`` datasets may be read from (``HYBRIDSCOPE_DATA_ROOTS``)."""
    env = os.environ.get("HYBRIDSCOPE_DATA_ROOTS", "")
    return [Path(p).expanduser() for p in env.split(os.pathsep) if p]


def file_data_roots(remote: bool) -> list[Path] | None:
    """Where ``file:`` data may come from: None = anywhere (a local command line), a list = only inside
    those directories (empty: file data is off).

    ``HYBRIDSCOPE_DATA_ROOTS`` confines every run; without it, a request from the network (``remote``:
    the HTTP server) or a hosted backend (``HYBRIDSCOPE_HOSTED=1``) may read no files at all.
    """
    from backend.limits import hosted

    roots = data_roots()
    if roots:
        return roots
    return [] if remote or hosted() else None


def inside(path: Path, root: Path) -> Path | None:
    """``path`` with symlinks resolved when it lies inside ``root`` (also resolved), else None.

    Never raises for odd input (a name too long, a loop of symlinks): such a path is not inside.
    """
    try:
        real, base = path.resolve(), root.resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return real if real == base or base in real.parents else None


__all__ = [
    "REPO_ROOT", "bundled_data_root", "data_roots", "file_data_roots", "inside", "model_roots",
    "persistent_dir", "precomputed_root", "precomputed_store", "store_root", "weights_cache_root", "zoo_root",
]
