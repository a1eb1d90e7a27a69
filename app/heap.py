"""Keep the garbage collection Streamlit runs after every script run cheap.

Streamlit calls ``gc.collect()`` over all generations after each script run (``runner.postScriptGC``, on
by default). Over this app's heap (Altair's Vega-Lite schema, pandas, pyarrow, DuckDB, the caches) that
took ~100-150 ms of CPU per rerun on the 2-core development machine, and it holds the GIL while the
run's last messages (its final deltas, "script finished") wait to be sent: every view switch waited for
it. :func:`freeze`, called at the start of each run, moves every object alive then (imports, caches,
session state: what survived the previous run's collection) into the permanent generation
(:func:`gc.freeze`), so the collection after the run only scans what this run allocated. Every
:data:`FULL_EVERY`-th run unfreezes the heap instead, so that run's collection is a full one: reference
cycles among older objects are still freed, within :data:`FULL_EVERY` runs. At exit the heap is
unfrozen, so the interpreter's last collection sees everything (extension types report no leaks).
"""

from __future__ import annotations

import atexit
import gc
import threading

FULL_EVERY = 50  # one full collection per this many script runs (all sessions together)

_LOCK = threading.Lock()
_runs = 0
atexit.register(gc.unfreeze)


def freeze() -> bool:
    """Freeze the heap for this script run's post-run collection; returns False on the runs that
    unfreeze it instead (their collection is a full one)."""
    global _runs
    with _LOCK:
        _runs += 1
        if _runs % FULL_EVERY == 0:
            gc.unfreeze()
            return False
        gc.freeze()
        return True


__all__ = ["FULL_EVERY", "freeze"]
