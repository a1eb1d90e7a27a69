"""What a backend accepts: the one place that defines the run-size limits (torch-free).

``limits_for(device)`` is what ``GET /limits`` of the HTTP server answers and what the dashboard's
local client reports, so both sides refuse the same runs. On CPU (the embedded default, the hosted
Space) the operator may lower or raise them with ``HYBRIDSCOPE_MAX_TOKENS`` / ``HYBRIDSCOPE_MAX_DOCS``.
"""

from __future__ import annotations

import os

CPU_MAX_TOKENS, CPU_MAX_DOCS = 8192, 8
GPU_MAX_TOKENS, GPU_MAX_DOCS = 1 << 20, 1000


def limits_for(device: str) -> dict:
    """``{"device", "max_tokens", "max_docs"}`` for a backend running on ``device`` ("cpu" or "cuda")."""
    if device == "cuda":
        return {"device": "cuda", "max_tokens": GPU_MAX_TOKENS, "max_docs": GPU_MAX_DOCS}
    return {
        "device": "cpu",
        "max_tokens": int(os.environ.get("HYBRIDSCOPE_MAX_TOKENS", CPU_MAX_TOKENS)),
        "max_docs": int(os.environ.get("HYBRIDSCOPE_MAX_DOCS", CPU_MAX_DOCS)),
    }


def cpu_limits() -> dict:
    """The limits of a CPU backend (what the dashboard's child-process runs accept)."""
    return limits_for("cpu")
