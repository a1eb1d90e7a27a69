"""Probe name -> implementation (imports torch; the torch-free names and params live in backend.params)."""

from __future__ import annotations

from collections.abc import Callable

from backend.spec import RunSpec


def probe_function(name: str) -> Callable:
    from backend.probes import attention_rows, longppl, niah, retrieval_heads, sweep, token_loss

    return {
        "token_loss": token_loss.run,
        "key_tokens": longppl.run_key_tokens,
        "longppl": longppl.run_longppl,
        "niah": niah.run,
        "retrieval_heads": retrieval_heads.run,
        "attention_rows": attention_rows.run,
        "sweep": sweep.run,
    }[name]


def dependencies(spec: RunSpec) -> list[RunSpec]:
    if spec.probe == "longppl":
        from backend.probes.longppl import dependencies as deps

        return deps(spec)
    if spec.probe == "sweep":
        from backend.probes.sweep import dependencies as sweep_deps

        return sweep_deps(spec)
    return []
