"""What a backend accepts: the one place that defines every limit (torch-free).

``limits_for(device)`` is what ``GET /limits`` of the HTTP server answers and what the dashboard's
local client reports, so both sides refuse the same runs. Three profiles:

* ``cpu`` (a local machine, the embedded default): 8192 tokens, 8 documents per run;
* ``cuda`` (a GPU backend): 1M tokens, 1000 documents;
* hosted (``HYBRIDSCOPE_HOSTED=1``, e.g. the public Space, on any device): the CPU sizes halved, a
  shorter queue and wall-clock limit, and no ``file:`` data unless ``HYBRIDSCOPE_DATA_ROOTS`` names
  directories (see :func:`backend.paths.file_data_roots`).

Run sizes (``max_tokens``, ``max_docs``) may be changed on CPU / hosted with ``HYBRIDSCOPE_MAX_TOKENS``
/ ``HYBRIDSCOPE_MAX_DOCS`` (a GPU backend ignores them). The serving limits may be changed everywhere:
``HYBRIDSCOPE_MAX_QUEUE`` (runs admitted at once, computing or waiting; more get HTTP 429),
``HYBRIDSCOPE_WORKERS`` (runs computed at once), ``HYBRIDSCOPE_MAX_RUN_SECONDS`` (wall-clock per run,
dependencies included; a run past it is cancelled and stores nothing), ``HYBRIDSCOPE_MAX_BODY_BYTES``
(HTTP request body; more get HTTP 413), ``HYBRIDSCOPE_SQL_TIMEOUT_S`` and ``HYBRIDSCOPE_SQL_MAX_ROWS``
(read-only SQL), ``HYBRIDSCOPE_SESSION_RUNS`` (runs one dashboard browser connection may have computing
at once: 2 on CPU, 4 on a GPU, 1 hosted), ``HYBRIDSCOPE_MAX_SWEEP_POINTS`` (points of one ``POST /sweeps``
grid: 64 on CPU, 4096 on a GPU, 8 hosted; a sweep is one admitted job of the queue, its Dask cluster has
``workers`` workers). ``MAX_JSON_DEPTH`` bounds the nesting of any JSON input (HTTP
body, ``--spec-json``).

:func:`over_limits` tells why a spec is too large for a backend; :func:`listen_host` is the address
every server HybridScope starts binds to (``HYBRIDSCOPE_LISTEN_HOST``, default ``127.0.0.1``).
"""

from __future__ import annotations

import os
from typing import Any

CPU_MAX_TOKENS, CPU_MAX_DOCS = 8192, 8
GPU_MAX_TOKENS, GPU_MAX_DOCS = 1 << 20, 1000
MAX_JSON_DEPTH = 32  # nesting of any JSON input; a RunSpec needs 4
_PROFILES: dict[str, dict[str, int | float]] = {
    "cpu": {"max_tokens": CPU_MAX_TOKENS, "max_docs": CPU_MAX_DOCS, "workers": 1, "max_queue": 4,
            "max_run_seconds": 900.0, "max_body_bytes": 64 << 10, "sql_timeout_s": 30.0, "sql_max_rows": 100_000,
            "session_runs": 2, "max_sweep_points": 64},
    "cuda": {"max_tokens": GPU_MAX_TOKENS, "max_docs": GPU_MAX_DOCS, "workers": 1, "max_queue": 16,
             "max_run_seconds": 3600.0, "max_body_bytes": 64 << 10, "sql_timeout_s": 30.0, "sql_max_rows": 100_000,
             "session_runs": 4, "max_sweep_points": 4096},
    "hosted": {"max_tokens": CPU_MAX_TOKENS // 2, "max_docs": CPU_MAX_DOCS // 2, "workers": 1, "max_queue": 2,
               "max_run_seconds": 300.0, "max_body_bytes": 16 << 10, "sql_timeout_s": 10.0, "sql_max_rows": 10_000,
               "session_runs": 1, "max_sweep_points": 8},
}
_SIZE_ENV = {"max_tokens": "HYBRIDSCOPE_MAX_TOKENS", "max_docs": "HYBRIDSCOPE_MAX_DOCS"}
_SERVING_ENV = {
    "workers": "HYBRIDSCOPE_WORKERS", "max_queue": "HYBRIDSCOPE_MAX_QUEUE",
    "max_run_seconds": "HYBRIDSCOPE_MAX_RUN_SECONDS", "max_body_bytes": "HYBRIDSCOPE_MAX_BODY_BYTES",
    "sql_timeout_s": "HYBRIDSCOPE_SQL_TIMEOUT_S", "sql_max_rows": "HYBRIDSCOPE_SQL_MAX_ROWS",
    "session_runs": "HYBRIDSCOPE_SESSION_RUNS", "max_sweep_points": "HYBRIDSCOPE_MAX_SWEEP_POINTS",
}


def hosted() -> bool:
    """Whether this backend serves the public (``HYBRIDSCOPE_HOSTED=1``)."""
    return os.environ.get("HYBRIDSCOPE_HOSTED") == "1"


def _env_number(name: str, default: int | float) -> int | float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = type(default)(raw)
    except ValueError:
        raise ValueError(f"{name}: {raw!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"{name}: must be positive, got {raw!r}")
    return value


def limits_for(device: str) -> dict[str, Any]:
    """Every limit of a backend running on ``device`` ("cpu" or "cuda"), environment applied.

    Keys: ``device``, ``max_tokens``, ``max_docs`` (run size), then ``workers``, ``max_queue``,
    ``max_run_seconds``, ``max_body_bytes``, ``sql_timeout_s``, ``sql_max_rows``, ``session_runs`` (the
    dashboard's runs per browser connection), ``max_sweep_points`` (points of one HTTP sweep), and ``hosted``.
    """
    device = "cuda" if device == "cuda" else "cpu"
    profile = "hosted" if hosted() else device
    base = _PROFILES[profile]
    out: dict[str, Any] = {"device": device}
    for key, env in _SIZE_ENV.items():
        out[key] = int(base[key]) if device == "cuda" and profile != "hosted" else _env_number(env, int(base[key]))
    for key, env in _SERVING_ENV.items():
        out[key] = _env_number(env, base[key])
    out["hosted"] = profile == "hosted"
    return out


def cpu_limits() -> dict:
    """The limits of a CPU backend (what the dashboard's child-process runs accept)."""
    return limits_for("cpu")


def sql_limits() -> dict[str, Any]:
    """``{"sql_timeout_s", "sql_max_rows"}`` of read-only SQL (the same on every device)."""
    lim = limits_for("cpu")
    return {k: lim[k] for k in ("sql_timeout_s", "sql_max_rows")}


def run_size(spec: Any) -> tuple[int, int]:
    """(tokens, documents) a spec asks for: the largest ``max_tokens`` / NIAH length, and ``n_docs``."""
    p = spec.typed_params
    tokens = max([getattr(p, "max_tokens", 0), *getattr(p, "lengths", ())])
    return int(tokens), int(getattr(p, "n_docs", 0))


def limit_violation(spec: Any, lim: dict) -> tuple[str, str] | None:
    """``(limit name, why)`` when ``spec`` is too large for a backend with limits ``lim``, else None."""
    tokens, docs = run_size(spec)
    if "max_tokens" in lim and tokens > int(lim["max_tokens"]):
        return "max_tokens", f"{tokens} tokens asked, at most {lim['max_tokens']} allowed"
    if "max_docs" in lim and docs > int(lim["max_docs"]):
        return "max_docs", f"{docs} documents asked, at most {lim['max_docs']} allowed"
    return None


def over_limits(spec: Any, lim: dict) -> str | None:
    """Why ``spec`` is too large for this backend, or None when it fits."""
    v = limit_violation(spec, lim)
    return v[1] if v else None


def limit_message(spec: Any, lim: dict) -> str | None:
    """The one-line refusal of an over-limit spec (HTTP 400, CLI exit 2), or None when it fits."""
    v = limit_violation(spec, lim)
    if v is None:
        return None
    name, why = v
    where = "hosted" if lim.get("hosted") else lim.get("device", "this")
    return f"params: {why} ({name} of this {where} backend; lower the probe parameters)"


def listen_host() -> str:
    """The address servers bind to: ``HYBRIDSCOPE_LISTEN_HOST``, default loopback only."""
    return os.environ.get("HYBRIDSCOPE_LISTEN_HOST") or "127.0.0.1"


__all__ = [
    "CPU_MAX_DOCS", "CPU_MAX_TOKENS", "GPU_MAX_DOCS", "GPU_MAX_TOKENS", "MAX_JSON_DEPTH", "cpu_limits", "hosted",
    "limit_message", "limit_violation", "limits_for", "listen_host", "over_limits", "run_size", "sql_limits",
]
