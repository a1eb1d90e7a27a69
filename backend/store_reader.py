"""Read-only SQL over one or more trace stores (DuckDB views over the stores' Parquet files).

``StoreReader([user_store, "precomputed"])`` merges several stores (the first one wins when two hold the
same run_id). It builds, on a private in-memory DuckDB connection:

- ``runs``: one row per complete run (any status), spec fields flattened (see ``RUNS_SCHEMA``);
- one view per table of ``backend.schema.SCHEMAS`` over ``read_parquet([...])`` of the successful runs
  that have that table (``union_by_name=true`` only when the manifests' schema ids differ from the current
  schema, because it reads every file's schema on every query); a table no run has is an empty view with
  the right schema.

Nothing is loaded into memory: the views scan Parquet at query time (cost ~0.1 ms per run file per query
for a view's file list, plus the data read). After the views exist, the
connection may read only those exact files (``allowed_paths``), external access is disabled and the
configuration is locked; ``sql()`` also accepts only one SELECT/WITH/DESCRIBE/SHOW/SUMMARIZE/EXPLAIN
statement. The catalog holds no base tables, so even a data-modifying CTE has nothing to modify.

Queries do not wait for each other: each runs on its own cursor of the shared database (a refresh
swaps in a new database; queries already running finish on the old one). Each has a time limit
(``sql_timeout_s`` of ``backend.limits``; past it the query is interrupted and a one-line SqlError
says so), and ``max_rows`` caps a result while it streams (user SQL: ``sql_max_rows``).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from backend.limits import sql_limits
from backend.schema import SCHEMAS, schema_id
from backend.store import MANIFEST, StoreError, TraceStore, canonical_json, read_manifest

RUNS_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("model", pa.string()), ("probe", pa.string()), ("dataset", pa.string()),
    ("ablation", pa.string()), ("params", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("created_at", pa.timestamp("ms")), ("code_version", pa.string()), ("duration_s", pa.float64()),
    ("tables", pa.string()), ("n_rows", pa.int64()), ("store", pa.string()), ("spec", pa.string()),
    ("fingerprints", pa.string()), ("meta", pa.string()),
])
_EXPLAIN = re.compile(r"\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(.*)\Z", re.IGNORECASE | re.DOTALL)
_MODIFYING_NODE = re.compile(r'"type":"([A-Z_]*_QUERY_NODE)"')


class SqlError(ValueError):
    """A query was rejected (not read-only, more than one statement) or failed; one-line message."""


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def check_sql(query: str, con: duckdb.DuckDBPyConnection | None = None) -> str:
    """Return ``query`` if it is exactly one read-only statement, else raise SqlError.

    Allowed: SELECT / WITH / VALUES / FROM-first / DESCRIBE / SHOW / SUMMARIZE (all parse as SELECT) and
    EXPLAIN [ANALYZE] of such a statement. Data-modifying CTEs (``WITH x AS (INSERT ...)``) are refused.
    """
    if not isinstance(query, str) or not query.strip():
        raise SqlError("sql: empty query; give one SELECT statement")
    try:
        stmts = duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise SqlError(f"sql: {_one_line(e)}") from None
    if len(stmts) != 1:
        raise SqlError(f"sql: exactly one statement is allowed, got {len(stmts)}")
    stmt = stmts[0]
    inner = query
    if stmt.type == duckdb.StatementType.EXPLAIN:
        m = _EXPLAIN.match(stmt.query)
        inner_stmts = duckdb.extract_statements(m.group(1)) if m else []
        if len(inner_stmts) != 1 or inner_stmts[0].type != duckdb.StatementType.SELECT:
            raise SqlError("sql: EXPLAIN is allowed only for a SELECT statement")
        inner = m.group(1)
    elif stmt.type != duckdb.StatementType.SELECT:
        raise SqlError(f"sql: only read-only statements (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) "
                       f"are allowed, got {stmt.type.name}")
    con = con or duckdb.connect()
    tree = con.sql("SELECT json_serialize_sql(?)", params=[inner]).fetchall()[0][0]
    bad = sorted(set(_MODIFYING_NODE.findall(tree)))
    if bad:
        raise SqlError(f"sql: data-modifying statements are not allowed ({', '.join(bad)})")
    return query


def _text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return canonical_json(v)


def _ablation_text(spec: dict, meta: dict) -> str:
    if isinstance(meta.get("ablation_text"), str):
        return meta["ablation_text"]
    ab = spec.get("ablation")
    if isinstance(ab, str):
        return ab
    if not ab or (isinstance(ab, dict) and not any(ab.values())):
        return ""
    return canonical_json(ab)


def _runs_row(m: dict, root: Path) -> dict:
    spec = m.get("spec") or {}
    meta = m.get("meta") or {}
    durations = m.get("durations") or {}
    try:
        created = datetime.fromisoformat(m["created_at"]).replace(tzinfo=None)
    except (KeyError, TypeError, ValueError):
        created = None
    return {
        "run_id": m["run_id"], "model": _text(spec.get("model")), "probe": _text(spec.get("probe")),
        "dataset": _text(spec.get("data", spec.get("dataset"))), "ablation": _ablation_text(spec, meta),
        "params": canonical_json(spec.get("params") or {}), "status": m["status"], "error": m.get("error"),
        "created_at": created, "code_version": m.get("code_version"),
        "duration_s": float(durations.get("total", sum(durations.values()))) if durations else None,
        "tables": ",".join(sorted(m.get("rows") or {})), "n_rows": int(sum((m.get("rows") or {}).values())),
        "store": str(root), "spec": canonical_json(spec),
        "fingerprints": canonical_json(m.get("fingerprints") or {}),
        "meta": canonical_json(meta),
    }


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class StoreReader:
    """Merged, read-only SQL view of several trace stores. Thread-safe; queries run concurrently."""

    def __init__(self, roots: Sequence[str | os.PathLike | TraceStore]):
        self.roots = [Path(r.root if isinstance(r, TraceStore) else r).expanduser().resolve() for r in roots]
        self._lock = threading.RLock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._arrow: dict[str, pa.Table] = {}  # Arrow tables registered on every cursor (runs, empty views)
        self._key: tuple | None = None
        self._cache: dict[Path, tuple[tuple, dict]] = {}
        self.manifests: dict[str, dict] = {}
        self.roots_of: dict[str, Path] = {}
        self.skipped: list[str] = []  # why some manifests were left out (unreadable, missing table file)
        self.refresh()

    # ---- building ----------------------------------------------------------------------------
    def _scan(self) -> list[tuple[Path, Path, tuple]]:
        found = []
        for root in self.roots:
            runs = root / "runs"
            if not runs.is_dir():
                continue
            for d in sorted(runs.iterdir()):
                mp = d / MANIFEST
                try:
                    st = mp.stat()
                except OSError:
                    continue
                found.append((root, mp, (st.st_mtime_ns, st.st_size, st.st_ino)))
        return found

    def refresh(self, force: bool = False) -> bool:
        """Pick up runs written since the last refresh. Returns True when the views were rebuilt."""
        with self._lock:
            found = self._scan()
            key = tuple((str(mp), sig) for _, mp, sig in found)
            if key == self._key and not force:
                return False
            manifests, roots_of, skipped, cache = {}, {}, [], {}
            for root, mp, sig in found:
                try:
                    m = self._cache[mp][1] if self._cache.get(mp, (None,))[0] == sig else read_manifest(mp)
                except StoreError as e:
                    skipped.append(str(e))
                    continue
                cache[mp] = (sig, m)
                rid = m["run_id"]
                if rid != mp.parent.name:
                    skipped.append(f"manifest {mp}: run_id {rid!r} does not match its directory")
                    continue
                if rid in manifests:
                    continue  # an earlier root wins
                if m["status"] == "ok":
                    lost = [t for t in m.get("rows", {}) if not (mp.parent / f"{t}.parquet").is_file()]
                    if lost:
                        skipped.append(f"run {rid} in {root}: missing table file(s) {lost}")
                        continue
                manifests[rid], roots_of[rid] = m, root
            con, arrow = self._build(manifests, roots_of)
            # the old connection is dropped, not closed: queries running on its cursors finish on it
            self._con, self._arrow = con, arrow
            self.manifests, self.roots_of, self.skipped, self._cache, self._key = (
                manifests, roots_of, skipped, cache, key)
            return True

    def _build(self, manifests: dict[str, dict], roots_of: dict[str, Path]) -> tuple[duckdb.DuckDBPyConnection, dict]:
        con = duckdb.connect(":memory:")
        con.execute("SET parquet_metadata_cache=true")  # footers are read once, not on every query
        rows = [_runs_row(m, roots_of[rid]) for rid, m in sorted(manifests.items())]
        arrow = {"runs": pa.Table.from_pylist(rows, schema=RUNS_SCHEMA)}
        allowed: list[str] = []
        ok = [rid for rid, m in sorted(manifests.items()) if m["status"] == "ok"]
        for table, schema in SCHEMAS.items():
            have = [rid for rid in ok if table in (manifests[rid].get("rows") or {})]
            files = [str(roots_of[rid] / "runs" / rid / f"{table}.parquet") for rid in have]
            if files:
                cols = ", ".join(f'"{c}"' for c in schema.names)
                listing = ", ".join(_sql_str(f) for f in files)
                # union_by_name reads every file's schema on every query: only when schemas may differ
                sid = schema_id(table)
                same = all((manifests[rid].get("schemas") or {}).get(table) == sid for rid in have)
                con.execute(f'CREATE VIEW "{table}" AS SELECT {cols} FROM '
                            f"read_parquet([{listing}], union_by_name={'false' if same else 'true'})")
                allowed += files
            else:
                arrow[table] = schema.empty_table()
        con.execute(f"SET allowed_paths=[{', '.join(_sql_str(f) for f in allowed)}]")
        con.execute("SET enable_external_access=false")
        con.execute("SET lock_configuration=true")
        return con, arrow

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own to the current database, with the Arrow tables registered."""
        with self._lock:
            if self._con is None:
                raise SqlError("sql: the reader is closed")
            cur, arrow = self._con.cursor(), self._arrow
        for name, table in arrow.items():
            cur.register(name, table)
        return cur

    # ---- querying ----------------------------------------------------------------------------
    def sql(self, query: str, params: Sequence[Any] | dict | None = None,
            max_rows: int | None = None, timeout_s: float | None = None) -> pa.Table:
        """Run one read-only statement; returns a pyarrow Table (at most ``max_rows`` rows if given).

        ``timeout_s`` (default: ``sql_timeout_s`` of ``backend.limits``) interrupts a longer query.
        Raises SqlError for rejected statements, query errors and timeouts (one-line message).
        """
        timeout_s = sql_limits()["sql_timeout_s"] if timeout_s is None else timeout_s
        for attempt in (0, 1):
            cur = self._cursor()
            timer = threading.Timer(timeout_s, cur.interrupt)
            timer.daemon = True
            try:
                check_sql(query, cur)
                timer.start()
                res = cur.sql(query, params=params)
                if res is None:
                    raise SqlError("sql: the statement returned no result")
                if max_rows is None:
                    return res.to_arrow_table()
                return _head(res.to_arrow_reader(min(max(max_rows, 1), 1 << 16)), max_rows)
            except duckdb.InterruptException:
                raise SqlError(f"sql: stopped at the time limit of {timeout_s:g} s (sql_timeout_s)") from None
            except (duckdb.IOException, duckdb.PermissionException) as e:
                # a run deleted or replaced since the last refresh: rebuild the views and retry once
                if attempt == 0 and self.refresh():
                    continue
                if isinstance(e, duckdb.PermissionException):
                    raise SqlError("sql: file access is disabled; query the views "
                                   f"(runs, {', '.join(SCHEMAS)})") from None
                raise SqlError(f"sql: {_one_line(e)}") from None
            except duckdb.Error as e:
                raise SqlError(f"sql: {_one_line(e)}") from None
            finally:
                timer.cancel()
                cur.close()
        raise AssertionError("unreachable")

    def manifest(self, run_id: str) -> dict | None:
        """The manifest of a run visible to this reader (as of the last refresh), or None."""
        return self.manifests.get(run_id)

    def run_ids(self) -> list[str]:
        return sorted(self.manifests)

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None


def _head(reader: pa.RecordBatchReader, n: int) -> pa.Table:
    batches, total = [], 0
    for b in reader:
        if total >= n:
            break
        batches.append(b.slice(0, n - total))
        total += min(len(b), n - total)
    return pa.Table.from_batches(batches, schema=reader.schema)
