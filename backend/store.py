"""The trace store: one directory per run, Parquet per table, a manifest written last.

Layout::

    <root>/runs/<run_id>/manifest.json
    <root>/runs/<run_id>/<table>.parquet

A writer writes every table to ``<table>.parquet.tmp-<uuid>`` and renames it into place, then writes the
manifest the same way. A run exists for readers exactly when its manifest exists, and a manifest only
appears after all its tables are in place, so a writer killed at any point leaves nothing visible; its
leftovers are ignored by readers and removed by :meth:`TraceStore.gc`, which every writable store runs
when it is opened (for leftovers older than ``GC_ON_OPEN_S``). Every file is fsynced before its rename
and the directory after it, so a completed run also survives a power loss. There is no writer lock: the
runner makes sure one run_id is computed once.

A bundled store (``precomputed/store``, marked by a ``READ_ONLY`` file, which any copy keeps) is
read-only whatever path names it: opening it for writing is a StoreError. Only a tool that maintains
the bundle (``python -m zoo rekey``) passes ``allow_bundled=True``. Reading (DuckDB views, read-only SQL) lives in
``backend.store_reader``; both modules need only pyarrow/duckdb, never torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from backend.schema import SCHEMAS, schema_id, validate_table

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TMP_MARK = ".tmp-"
READ_ONLY_MARK = "READ_ONLY"  # a file in a bundled store's root: never written by a runner
GC_ON_OPEN_S = 600.0  # leftovers of killed writers older than this are removed when a store is opened
_BUNDLED = Path(__file__).resolve().parents[1] / "precomputed" / "store"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# keys of ``meta`` that become top-level manifest fields; everything else is kept under "meta"
_TOP_META = ("code_version", "fingerprints", "durations")


class StoreError(Exception):
    """The store cannot do what was asked (bad run_id, read-only or unwritable store, run exists...)."""


def code_version() -> str:
    """Version of the installed hybridscope package, or "dev" when running from a source tree."""
    try:
        from importlib.metadata import version

        return version("hybridscope")
    except Exception:  # noqa: BLE001 - not installed: a source checkout
        return "dev"


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a safe directory name (1-128 of [A-Za-z0-9._-], not starting with . - _)."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise StoreError(f"run_id: {run_id!r} is not allowed; use 1-128 characters of [A-Za-z0-9._-] "
                         "starting with a letter or digit")
    return run_id


def canonical_json(obj: Any) -> str:
    """Compact JSON with sorted keys: the canonical form of specs in manifests."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _spec_dict(spec: Any) -> dict:
    if hasattr(spec, "model_dump"):
        spec = spec.model_dump(mode="json")
    if not isinstance(spec, Mapping):
        raise StoreError(f"spec: expected a dict (or pydantic model), got {type(spec).__name__}")
    try:
        return json.loads(canonical_json(dict(spec)))
    except (TypeError, ValueError) as e:
        raise StoreError(f"spec: not JSON-serialisable: {e}") from None


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)``, fsync it, rename tmp over ``path`` and fsync the directory; the tmp
    file is removed on failure."""
    tmp = path.with_name(f"{path.name}{TMP_MARK}{uuid.uuid4().hex}")
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent, directory=True)


def is_bundled(root: str | os.PathLike) -> bool:
    """Whether ``root`` is a bundled, read-only store (its ``READ_ONLY`` mark, or this checkout's
    ``precomputed/store`` by any name)."""
    root = Path(root).expanduser().resolve()
    return (root / READ_ONLY_MARK).is_file() or root == _BUNDLED.resolve()


def _age(path: Path, now: float) -> float:
    """Seconds since ``path`` was modified; 0 when it vanished meanwhile (someone is working on it)."""
    try:
        return now - path.stat().st_mtime
    except OSError:
        return 0.0


def read_manifest(path: Path) -> dict:
    """Parse one manifest file; StoreError when it is not a valid manifest."""
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StoreError(f"manifest {path}: unreadable: {e}") from None
    if not isinstance(m, dict) or m.get("status") not in ("ok", "error") or "run_id" not in m:
        raise StoreError(f"manifest {path}: not a HybridScope run manifest")
    return m


class TraceStore:
    """A directory of runs. ``read_only=True`` stores (e.g. precomputed/) refuse every write."""

    def __init__(self, root: str | os.PathLike, read_only: bool = False, allow_bundled: bool = False):
        self.root = Path(root).expanduser().resolve()
        self.read_only = read_only
        self.runs_dir = self.root / "runs"
        if not read_only and not allow_bundled and is_bundled(self.root):
            raise StoreError(f"store: {self.root} is a bundled read-only store; new runs need another "
                             "store (--store DIR or HYBRIDSCOPE_STORE)")
        if not read_only:
            try:
                self.runs_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"store: cannot create {self.runs_dir}: {e.strerror}") from None
            if not os.access(self.runs_dir, os.W_OK | os.X_OK):
                raise StoreError(f"store: {self.runs_dir} is not writable")
            self.gc(GC_ON_OPEN_S)

    def __repr__(self) -> str:
        return f"TraceStore({str(self.root)!r}, read_only={self.read_only})"

    # ---- paths -------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / check_run_id(run_id)

    def table_path(self, run_id: str, table: str) -> Path:
        return self.run_dir(run_id) / f"{table}.parquet"

    # ---- reading -----------------------------------------------------------------------------
    def has(self, run_id: str, status: str | None = None) -> bool:
        """True when the run's manifest exists (and, if given, its status is ``status``)."""
        m = self.manifest(run_id)
        return m is not None and (status is None or m["status"] == status)

    def manifest(self, run_id: str) -> dict | None:
        """The run's manifest as a dict, or None when the run does not exist (is not complete)."""
        path = self.run_dir(run_id) / MANIFEST
        if not path.exists():
            return None
        return read_manifest(path)

    def runs(self) -> list[str]:
        """run_ids of all complete runs (any status), sorted."""
        if not self.runs_dir.is_dir():
            return []
        return sorted(p.parent.name for p in self.runs_dir.glob(f"*/{MANIFEST}"))

    def read_table(self, run_id: str, table: str) -> pa.Table:
        """One table of a complete, successful run (pyarrow). StoreError if the run or table is absent."""
        m = self.manifest(run_id)
        if m is None or m["status"] != "ok":
            raise StoreError(f"run {run_id}: no successful run in {self.root}")
        if table not in m.get("rows", {}):
            raise StoreError(f"run {run_id}: has no table {table!r}; it has {sorted(m.get('rows', {}))}")
        return pq.read_table(self.table_path(run_id, table))

    # ---- writing -----------------------------------------------------------------------------
    def _writable(self) -> None:
        if self.read_only:
            raise StoreError(f"store {self.root} is read-only")

    def _clear(self, run_id: str, overwrite: bool) -> Path:
        """Make the run invisible (manifest removed first) and remove its old tables."""
        d = self.run_dir(run_id)
        m = d / MANIFEST
        if m.exists():
            old = read_manifest(m)
            if old["status"] == "ok" and not overwrite:
                raise StoreError(f"run {run_id}: already stored; pass overwrite=True to replace it")
            m.unlink(missing_ok=True)
        d.mkdir(parents=True, exist_ok=True)
        for p in d.glob("*.parquet"):
            p.unlink(missing_ok=True)
        return d

    def write_run(self, run_id: str, spec: Any, tables: Mapping[str, pa.Table | Mapping[str, Any]],
                  meta: Mapping[str, Any] | None = None, overwrite: bool = False) -> dict:
        """Store a successful run; returns its manifest.

        ``tables``: table name -> pyarrow Table or dict of columns, validated against backend.schema.
        ``meta``: optional ``code_version`` (str), ``fingerprints`` (dict), ``durations`` (dict of
        seconds) become top-level manifest fields; other keys (e.g. ``ablation_text``) go under "meta".
        A run that already succeeded is only replaced with ``overwrite=True``; a failed one always is.
        Everything is validated before anything is written.
        """
        self._writable()
        check_run_id(run_id)
        spec_d = _spec_dict(spec)
        if not isinstance(tables, Mapping):
            raise StoreError(f"tables: expected a dict name -> table, got {type(tables).__name__}")
        validated = {name: validate_table(name, t, run_id) for name, t in tables.items()}
        manifest = self._manifest(run_id, spec_d, "ok", None, meta)
        manifest["rows"] = {name: t.num_rows for name, t in validated.items()}
        manifest["files"] = {name: f"{name}.parquet" for name in validated}
        manifest["schemas"] = {name: schema_id(name) for name in validated}
        d = self._clear(run_id, overwrite)
        for name, t in validated.items():
            _write_atomic(d / f"{name}.parquet", lambda p, t=t: pq.write_table(t, p, compression="zstd"))
        self._write_manifest(d, manifest)
        return manifest

    def write_error(self, run_id: str, spec: Any, message: str,
                    meta: Mapping[str, Any] | None = None, overwrite: bool = False) -> dict:
        """Store a failed run: a manifest with status "error", the message, and no tables."""
        self._writable()
        check_run_id(run_id)
        manifest = self._manifest(run_id, _spec_dict(spec), "error", str(message), meta)
        manifest["rows"], manifest["files"], manifest["schemas"] = {}, {}, {}
        d = self._clear(run_id, overwrite)
        self._write_manifest(d, manifest)
        return manifest

    def _manifest(self, run_id: str, spec: dict, status: str, error: str | None,
                  meta: Mapping[str, Any] | None) -> dict:
        meta = dict(meta or {})
        extra = {k: v for k, v in meta.items() if k not in _TOP_META}
        m = {
            "format": FORMAT_VERSION,
            "run_id": run_id,
            "status": status,
            "error": error,
            "spec": spec,
            "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "code_version": str(meta.get("code_version") or code_version()),
            "fingerprints": dict(meta.get("fingerprints") or {}),
            "durations": {k: float(v) for k, v in dict(meta.get("durations") or {}).items()},
            "meta": extra,
        }
        try:
            canonical_json(m)
        except (TypeError, ValueError) as e:
            raise StoreError(f"meta: not JSON-serialisable: {e}") from None
        return m

    def _write_manifest(self, d: Path, manifest: dict) -> None:
        text = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False)
        _write_atomic(d / MANIFEST, lambda p: p.write_text(text, encoding="utf-8"))

    def delete(self, run_id: str) -> bool:
        """Remove a run (manifest first, so it disappears atomically). Returns whether it existed."""
        self._writable()
        d = self.run_dir(run_id)
        existed = (d / MANIFEST).exists()
        (d / MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(d, ignore_errors=True)
        return existed

    def gc(self, min_age_s: float = 3600.0) -> list[Path]:
        """Remove leftovers of killed writers; returns the removed paths.

        Removes ``*.tmp-*`` files and run directories without a manifest, but only when they are older
        than ``min_age_s`` seconds, so a writer working right now is not disturbed.
        """
        self._writable()
        removed: list[Path] = []
        now = time.time()
        if not self.runs_dir.is_dir():
            return removed
        for d in sorted(self.runs_dir.iterdir()):
            if not d.is_dir():
                continue
            files = list(d.iterdir())
            if not (d / MANIFEST).exists():
                if all(_age(p, now) >= min_age_s for p in [d, *files]):
                    shutil.rmtree(d, ignore_errors=True)
                    removed.append(d)
                continue
            for p in files:
                if TMP_MARK in p.name and _age(p, now) >= min_age_s:
                    p.unlink(missing_ok=True)
                    removed.append(p)
        return removed


__all__ = ["SCHEMAS", "StoreError", "TraceStore", "canonical_json", "check_run_id", "is_bundled",
           "read_manifest"]
