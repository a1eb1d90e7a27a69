"""Arrow schemas of the trace tables, and validation of tables on their way into the store.

Every table starts with ``run_id`` (string). Documents are referred to by ``doc``: the index (int32) of
the document in the run's dataset sample, in sampling order. Fields marked nullable may hold nulls;
all others must not. This module needs only pyarrow, so the app can import it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


class SchemaError(ValueError):
    """A table handed to the store does not match its schema (the message names table and column)."""


def _f(name: str, typ: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, typ, nullable=nullable)


_RUN = _f("run_id", pa.string())
_LAYER = _f("layer", pa.int16())
_HEAD = _f("head", pa.int16())

SCHEMAS: dict[str, pa.Schema] = {
    "token_loss": pa.schema([
        _RUN, _f("doc", pa.int32()), _f("pos", pa.int32()), _f("token_id", pa.int32()),
        _f("token", pa.string()), _f("char_start", pa.int32()), _f("char_end", pa.int32()),
        _f("nll", pa.float32()), _f("is_key", pa.bool_()),
    ]),
    "longppl": pa.schema([
        _RUN, _f("doc", pa.int32()), _f("n_tokens", pa.int32()), _f("n_key", pa.int32()),
        _f("ppl", pa.float64()), _f("longppl", pa.float64(), nullable=True),  # null when n_key == 0
    ]),
    "key_tokens": pa.schema([
        _RUN, _f("doc", pa.int32()), _f("char_start", pa.int32()), _f("char_end", pa.int32()),
        _f("pos", pa.int32()), _f("score", pa.float32()),
    ]),
    "position_loss": pa.schema([
        _RUN, _f("bucket_start", pa.int32()), _f("bucket_end", pa.int32()),
        _f("mean_nll", pa.float64()), _f("n", pa.int64()),
    ]),
    "niah": pa.schema([
        _RUN, _f("length", pa.int32()), _f("depth", pa.float32()), _f("sample", pa.int32()),
        _f("expected", pa.string()), _f("predicted", pa.string()), _f("correct", pa.bool_()),
    ]),
    "head_scores": pa.schema([
        _RUN, _LAYER, _HEAD, _f("layer_type", pa.string()),
        _f("score", pa.float32(), nullable=True),  # null for heads of non-attention layers
        _f("n_samples", pa.int32()), _f("metric", pa.string()),
    ]),
    "attention_rows": pa.schema([
        _RUN, _LAYER, _HEAD, _f("query_pos", pa.int32()), _f("rank", pa.int16()),
        _f("key_pos", pa.int32()), _f("weight", pa.float32()), _f("token", pa.string()),
    ]),
    "head_entropy": pa.schema([
        _RUN, _LAYER, _HEAD, _f("query_pos", pa.int32()), _f("entropy", pa.float32()),
    ]),
    "longppl_corpus": pa.schema([  # definition: "reference" (Fang et al.'s script) / "pooled"
        _RUN, _f("definition", pa.string()), _f("n_docs", pa.int32()), _f("n_tokens", pa.int64()),
        _f("n_key", pa.int64()), _f("ppl", pa.float64()), _f("longppl", pa.float64(), nullable=True),
    ]),
    "influence": pa.schema([  # gradient influence: distance bin [start, end) from the last position
        _RUN, _f("doc", pa.int32()), _f("bin_start", pa.int32()), _f("bin_end", pa.int32()),
        _f("mean", pa.float64()), _f("max", pa.float64()), _f("n", pa.int32()),
    ]),
    "layer_probe": pa.schema([  # layer -1: the embeddings; feature "hidden" (after the layer) / "delta"
        _RUN, _f("set", pa.string()), _LAYER, _f("layer_type", pa.string()), _f("feature", pa.string()),
        _f("accuracy", pa.float64()), _f("n_train", pa.int32()), _f("n_test", pa.int32()),
        _f("chance", pa.float64()),
    ]),
    "qk_distance": pa.schema([
        _RUN, _LAYER, _HEAD, _f("kv_head", pa.int16()), _f("step", pa.int64()),
        _f("tokens", pa.int64(), nullable=True), _f("q_dist", pa.float64()), _f("k_dist", pa.float64()),
    ]),
    "attributions": pa.schema([
        _RUN, _f("pos", pa.int32()), _f("token_id", pa.int32()), _f("token", pa.string()),
        _f("char_start", pa.int32()), _f("char_end", pa.int32()), _f("attribution", pa.float32()),
        _f("is_needle", pa.bool_()), _f("is_target", pa.bool_()),
    ]),
    "sweep": pa.schema([  # name: the series; metric: "longppl" / "ppl" (sweep), "retrieval_mass" (formation)
        _RUN, _f("name", pa.string()), _f("metric", pa.string()), _f("x", pa.float64()), _f("y", pa.float64()),
        _f("label", pa.string(), nullable=True),
    ]),
}

TABLES: tuple[str, ...] = tuple(SCHEMAS)


def schema_id(table: str) -> str:
    """Short hash of a table's current schema (names, types, nullability), recorded in manifests so a
    reader knows when files of one table may differ in schema."""
    desc = [(f.name, str(f.type), f.nullable) for f in SCHEMAS[table]]
    return hashlib.sha256(repr(desc).encode()).hexdigest()[:16]

_DUCKDB_TYPES = {
    pa.string(): "VARCHAR", pa.int16(): "SMALLINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
    pa.float32(): "FLOAT", pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN",
}


def duckdb_type(t: pa.DataType) -> str:
    """The DuckDB SQL type name of an Arrow type used in SCHEMAS."""
    return _DUCKDB_TYPES[t]


def validate_table(name: str, data: pa.Table | Mapping[str, Any], run_id: str) -> pa.Table:
    """Return ``data`` as a pyarrow Table with exactly the schema of table ``name``.

    ``data`` is a pyarrow Table or a mapping column name -> sequence (list, numpy array, pyarrow array).
    The ``run_id`` column may be omitted (it is filled with ``run_id``); if present it must equal
    ``run_id`` on every row. Columns are cast to the schema type only when the cast is safe (no overflow,
    no truncation). Raises SchemaError naming the table and the column for unknown tables, missing or
    unexpected columns, unequal column lengths, impossible casts and nulls in non-nullable columns.
    """
    if name not in SCHEMAS:
        raise SchemaError(f"table: unknown table {name!r}; allowed: {', '.join(TABLES)}")
    schema = SCHEMAS[name]
    if isinstance(data, pa.Table):
        cols: dict[str, Any] = {c: data.column(c) for c in data.column_names}
        if len(set(data.column_names)) != len(data.column_names):
            raise SchemaError(f"table {name!r}: duplicate column names {data.column_names}")
    elif isinstance(data, Mapping):
        cols = dict(data)
    else:
        raise SchemaError(f"table {name!r}: expected a pyarrow.Table or a dict of columns, "
                          f"got {type(data).__name__}")
    expected = set(schema.names)
    extra = sorted(set(cols) - expected)
    if extra:
        raise SchemaError(f"table {name!r}: unexpected column(s) {extra}; allowed: {schema.names}")
    missing = [c for c in schema.names if c not in cols and c != "run_id"]
    if missing:
        raise SchemaError(f"table {name!r}: missing column(s) {missing}")

    arrays: list[pa.Array | pa.ChunkedArray] = []
    n_rows: int | None = None
    for field in schema:
        if field.name not in cols:
            continue
        arr = _to_arrow(name, field, cols[field.name])
        if n_rows is not None and len(arr) != n_rows:
            raise SchemaError(f"table {name!r}: column {field.name!r} has {len(arr)} rows, "
                              f"expected {n_rows} like the columns before it")
        n_rows = len(arr)
        arrays.append(arr)
    n_rows = n_rows or 0
    if "run_id" in cols:
        ids = arrays[0]
        if n_rows and (ids.null_count or not pc.all(pc.equal(ids, run_id)).as_py()):
            raise SchemaError(f"table {name!r}: column 'run_id' must equal {run_id!r} on every row")
    else:
        arrays.insert(0, pa.array([run_id] * n_rows, pa.string()))
    for field, arr in zip(schema, arrays, strict=True):
        if not field.nullable and arr.null_count:
            raise SchemaError(f"table {name!r}: column {field.name!r} has {arr.null_count} null(s) "
                              f"but is not nullable")
    return pa.Table.from_arrays(arrays, schema=schema)


def _to_arrow(table: str, field: pa.Field, values: Any) -> pa.Array | pa.ChunkedArray:
    """One column converted to ``field.type`` with a safe cast; SchemaError names table and column."""
    where = f"table {table!r}: column {field.name!r}"
    try:
        if isinstance(values, pa.ChunkedArray | pa.Array):
            arr = values
        else:
            arr = pa.array(values)
    except (pa.ArrowException, TypeError, ValueError) as e:
        raise SchemaError(f"{where}: cannot convert to {field.type}: {e}") from None
    if arr.type == field.type:
        return arr
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), field.type)
    t, want = pa.types, field.type
    ok_kind = (
        (t.is_string(want) and (t.is_string(arr.type) or t.is_large_string(arr.type)))
        or (t.is_boolean(want) and t.is_boolean(arr.type))
        or (t.is_integer(want) and t.is_integer(arr.type))
        or (t.is_floating(want) and (t.is_floating(arr.type) or t.is_integer(arr.type)))
    )
    if not ok_kind:
        raise SchemaError(f"{where}: expected {field.type}, got {arr.type}")
    try:
        if pa.types.is_floating(field.type):
            return arr.cast(field.type, safe=False)  # float64 -> float32 rounding is intended
        return arr.cast(field.type, safe=True)
    except pa.ArrowInvalid as e:
        raise SchemaError(f"{where}: values do not fit {field.type}: {e}") from None
