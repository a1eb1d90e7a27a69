"""The runs a dashboard session computes, with progress and cancel.

:func:`start` submits a RunSpec to the backend client in a thread (the client runs the CLI in a child
process, or posts to an HTTP backend); the script never blocks on it. :func:`watch`, called at the end
of every script run (after the page rendered), shows each running job in the sidebar (a progress bar with
the stage, the percentage, the elapsed and the estimated remaining time, and a **Cancel** button) and
waits for it, refreshing the bar; when a job ends the app reruns and shows its traces, its error, or that
it was cancelled.

Cancelling: the Cancel button, or the page going away (the tab closed or reloaded, the browser's
connection lost, Streamlit's Stop): the script run is then stopped (``StopException``), and
:func:`guard` cancels the session's jobs before it ends. A watchdog thread also cancels the jobs of a
session that is no longer connected (for a tab closed while no script run watched). A cancelled run stops
its child process (``backend.client``: SIGTERM, the run's ``CancelToken``, SIGKILL after a grace time)
and stores nothing. Interacting with the page while a run computes does not cancel it: the next script
run watches it again.

Caps (``backend.limits``): at most ``session_runs`` jobs per browser connection (1 when hosted) and
``max_queue`` jobs computing in this dashboard process, across all connections.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from backend.client import Cancelled, Client, RunFailed
from backend.spec import RunSpec, SpecError

_JOBS = "_hs_jobs"  # session state: job id -> Job (running, or finished and not yet reported)
_SLOT = "_hs_job_slot"  # session state: the sidebar container the progress is drawn in (this run)
_LOCK = threading.Lock()
_COMPUTING: set[str] = set()  # ids of the jobs computing in this process, every session
DISCONNECT_GRACE_S = 5.0  # a session disconnected this long has its jobs cancelled (not a brief reconnect)
TICK_S = 0.25  # how often watch() redraws the bars (and so notices a Cancel click or a closed tab)


@dataclass(eq=False)
class Job:
    spec: RunSpec
    label: str  # e.g. "longppl on zoo/swa64"
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    frac: float = 0.0
    stage: str = "starting"
    status: str = "running"  # running | ok | failed | cancelled
    run_id: str | None = None
    error: str | None = None
    applied: bool = False  # on_done ran (the store's caches were refreshed for it)
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def remaining(self) -> float | None:
        """Seconds left, from the rate so far (None until there is a rate to go by)."""
        if self.frac < 0.02 or self.frac >= 1.0:
            return None
        return self.elapsed * (1.0 - self.frac) / self.frac

    def text(self) -> str:
        """``longppl on zoo/swa64: document 2/8 — 25% · 12 s elapsed · about 36 s left``."""
        if self.cancel.is_set() and self.status == "running":
            return f"{self.label}: cancelling… · {duration(self.elapsed)} elapsed"
        left = self.remaining()
        rest = f"about {duration(left)} left" if left is not None else "estimating the time left"
        return (f"{self.label}: {self.stage[:100]} — {self.frac:.0%} · {duration(self.elapsed)} elapsed · "
                f"{rest}")


def duration(s: float) -> str:
    s = max(0, round(s))
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60:02d} s"


def _jobs() -> dict[str, Job]:
    return st.session_state.setdefault(_JOBS, {})


def running() -> list[Job]:
    return [j for j in _jobs().values() if j.status == "running"]


def running_for(spec: RunSpec) -> Job | None:
    key = spec.canonical_json()
    return next((j for j in running() if j.spec.canonical_json() == key), None)


def refusal(spec: RunSpec, lim: dict) -> str | None:
    """Why this session may not start ``spec`` now (the per-connection and per-process caps), or None."""
    if running_for(spec):
        return "this run is already computing (see its progress in the sidebar)"
    per_session = int(lim.get("session_runs", 1))
    if len(running()) >= per_session:
        return (f"{per_session} run{'s' if per_session > 1 else ''} per browser connection at once here "
                "(session_runs); wait for it or cancel it")
    with _LOCK:
        busy = len(_COMPUTING)
    if busy >= int(lim.get("max_queue", 4)):
        return f"{busy} runs are computing on this dashboard (max_queue); try again shortly"
    return None


def _session_id() -> str | None:
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        return ctx.session_id if ctx else None
    except Exception:  # noqa: BLE001 - no runtime (bare mode): no watchdog
        return None


def _connected(session_id: str) -> bool | None:
    """Whether the browser of ``session_id`` is connected (None: no Streamlit runtime to ask)."""
    try:
        from streamlit import runtime

        if not runtime.exists():
            return None
        return runtime.get_instance().is_active_session(session_id)
    except Exception:  # noqa: BLE001 - an internal API moved: no watchdog rather than a crash
        return None


def _accepts_cancel(client: Client) -> bool:
    try:
        return "cancel" in inspect.signature(client.submit).parameters
    except (TypeError, ValueError):
        return False


def _work(job: Job, client: Client, session_id: str | None) -> None:
    def progress(frac: float, msg: str) -> None:
        job.frac, job.stage = min(max(float(frac), 0.0), 1.0), str(msg)
        if job.cancel.is_set():
            raise Cancelled("run: cancelled; nothing was stored")  # a client without a cancel argument

    stop_watchdog = threading.Event()
    if session_id is not None:
        threading.Thread(target=_watchdog, args=(job, session_id, stop_watchdog), daemon=True).start()
    try:
        kwargs: dict[str, Any] = {"cancel": job.cancel} if _accepts_cancel(client) else {}
        job.run_id = client.submit(job.spec, on_progress=progress, **kwargs)
        job.status = "ok"
    except Cancelled:
        job.status = "cancelled"
    except (RunFailed, SpecError, OSError, ValueError) as e:
        job.status, job.error = ("cancelled", None) if job.cancel.is_set() else ("failed", str(e))
    except Exception as e:  # noqa: BLE001 - reported in the UI, never a dead thread with a spinning bar
        job.status, job.error = "failed", f"{type(e).__name__}: {e}"
    finally:
        job.ended = time.monotonic()
        stop_watchdog.set()
        with _LOCK:
            _COMPUTING.discard(job.id)


def _watchdog(job: Job, session_id: str, stop: threading.Event) -> None:
    gone_since: float | None = None
    while not stop.wait(1.0):
        if _connected(session_id) is False:
            gone_since = gone_since or time.monotonic()
            if time.monotonic() - gone_since >= DISCONNECT_GRACE_S:
                job.cancel.set()
                return
        else:
            gone_since = None


def start(spec: RunSpec, client: Client, label: str) -> Job:
    """Start computing ``spec`` in a thread (check :func:`refusal` first)."""
    job = Job(spec=spec, label=label)
    with _LOCK:
        _COMPUTING.add(job.id)
    _jobs()[job.id] = job
    job.thread = threading.Thread(target=_work, args=(job, client, _session_id()), daemon=True,
                                  name=f"hybridscope-run-{job.id}")
    job.thread.start()
    return job


def request_cancel(job_id: str) -> None:
    """The Cancel button's callback."""
    job = _jobs().get(job_id)
    if job is not None:
        job.cancel.set()


def cancel_all(wait_s: float = 15.0) -> None:
    """Cancel every running job of this session and wait (bounded) for their children to stop."""
    jobs = running()
    for job in jobs:
        job.cancel.set()
    deadline = time.monotonic() + wait_s
    for job in jobs:
        if job.thread is not None:
            job.thread.join(max(0.0, deadline - time.monotonic()))


@contextlib.contextmanager
def guard():
    """Around a script run: when the run is stopped (tab closed, connection lost, Stop), cancel the
    session's jobs. A rerun (any other interaction) leaves them computing."""
    try:
        yield
    except BaseException as e:
        if type(e).__name__ == "StopException":
            cancel_all()
        raise


def slot() -> None:
    """Reserve the place of the progress bars (the top of the sidebar's run panel)."""
    st.session_state[_SLOT] = st.container()


def _report(job: Job) -> None:
    took = duration(job.elapsed)
    if job.status == "ok":
        st.success(f"Computed {job.label} in {took}.", icon="✅")
    elif job.status == "cancelled":
        st.warning(f"Cancelled {job.label} after {took}: its process was stopped and nothing was stored.",
                   icon="🛑")
    else:
        from app.state import shown

        st.error(f"Run failed: {shown(job.error, 300)}")


def watch(on_done) -> None:
    """Report finished jobs once; while jobs run, draw their bars and Cancel buttons and wait for them.
    ``on_done(job)`` runs once for each job that succeeded, then the app reruns to show its traces."""
    where = st.session_state.get(_SLOT) or st.sidebar
    jobs = _jobs()
    fresh = [j for j in jobs.values() if j.status == "ok" and not j.applied]
    if fresh:  # finished while no run watched it (the page was being used): show its traces first
        _apply(fresh, on_done)
        st.rerun()
    for job in [j for j in jobs.values() if j.status != "running"]:
        with where:
            _report(job)
        del jobs[job.id]
    active = running()
    if not active:
        return
    bars = {}
    with where:
        for job in active:
            bars[job.id] = st.progress(job.frac, text=job.text())
            st.button("Cancel", key=f"cancel-{job.id}", on_click=request_cancel, args=(job.id,),
                      help="stop this run; nothing of it is stored")
    while any(j.status == "running" for j in active):
        time.sleep(TICK_S)
        for job in active:
            bars[job.id].progress(job.frac, text=job.text())  # also where a Cancel click / Stop interrupts
    _apply([j for j in active if j.status == "ok"], on_done)
    st.rerun()


def _apply(jobs: list[Job], on_done) -> None:
    for job in jobs:
        on_done(job)
        job.applied = True
