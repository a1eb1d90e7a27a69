"""Dashboard defaults: the dataset and probe parameters a view asks for when the URL names none.

The bundle root (``backend.paths.precomputed_root()``) may hold ``dashboard.json``, written alongside
the bundled store so that the embedded demo finds its runs by their exact RunSpec::

    {"probes": {"longppl": {"data": "zoo:test", "params": {"n_docs": 16, "trunc_len": 256}}, ...}}

Per probe: ``data`` (a dataset ref; absent = the probe's own default) and ``params`` (absent = the
probe's defaults). A probe not listed uses the probe's defaults. The run panel shows these values as
the defaults and the URL holds only what differs from them (``app.probe_params``). Torch-free.
A broken file is ignored as a whole (:func:`problem` says why; the app shows it as a warning).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend import paths
from backend.spec import RunSpec, SpecError

FILE = "dashboard.json"
_MODEL = "zoo/defaults-check"  # any valid ref: RunSpec validates data and params, never the model


@dataclass(frozen=True)
class Defaults:
    data: dict[str, str] = field(default_factory=dict)  # probe -> dataset ref
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # probe -> canonical params
    problem: str | None = None


def parse(obj: Any) -> Defaults:
    """The defaults in a decoded ``dashboard.json`` (SpecError naming the entry when it is not valid)."""
    if not isinstance(obj, dict) or set(obj) - {"about", "probes"} or not isinstance(obj.get("probes", {}), dict):
        raise SpecError('dashboard.json: expected {"about": text, "probes": {probe: {"data": ..., "params": {...}}}}')
    data, params = {}, {}
    for probe, entry in obj.get("probes", {}).items():
        if not isinstance(entry, dict) or set(entry) - {"data", "params"}:
            raise SpecError(f"dashboard.json: probes.{probe}: expected an object with data and/or params")
        try:
            spec = RunSpec.build(model=_MODEL, probe=probe, data=entry.get("data"), params=entry.get("params") or {})
        except SpecError as e:
            raise SpecError(f"dashboard.json: probes.{probe}: {e}") from None
        if spec.data is not None:
            data[probe] = spec.data
        params[probe] = spec.params
    return Defaults(data, params)


_CACHE: dict[tuple[str, int], Defaults] = {}


def path() -> Path:
    return paths.precomputed_root() / FILE


def load() -> Defaults:
    """The defaults of the current bundle (re-read when the file changes; none when it is absent)."""
    p = path()
    try:
        key = (str(p), p.stat().st_mtime_ns)
    except OSError:
        return Defaults()
    if key not in _CACHE:
        try:
            _CACHE[key] = parse(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:  # SpecError and JSONDecodeError are ValueErrors
            _CACHE[key] = Defaults(problem=f"Ignored {p.name}: {e}")
    return _CACHE[key]


def data_for(probe: str) -> str | None:
    """The dataset ref a view uses for ``probe`` when the URL names none (None = the probe's default)."""
    return load().data.get(probe)


def params_for(probe: str) -> dict[str, Any]:
    """The params (canonical: non-default values only) a view uses for ``probe`` when the URL has none."""
    return dict(load().params.get(probe, {}))


def problem() -> str | None:
    return load().problem


__all__ = ["FILE", "Defaults", "data_for", "load", "params_for", "parse", "path", "problem"]
