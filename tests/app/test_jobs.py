"""Runs computed from the dashboard (app/jobs.py): progress text, cancel, the per-connection and hosted caps."""

from __future__ import annotations

import threading
import time

import pytest

from app import jobs
from app.run_panel import COMPUTE_OPEN
from backend.client import Cancelled, RunFailed
from backend.limits import cpu_limits, limits_for
from backend.spec import RunSpec
from tests.app.conftest import charts, open_panel, run_app, texts
from tests.app.test_run_panel import plain

SPEC = RunSpec.build(model="tiny/SSSF", probe="niah")


def test_progress_text_has_stage_percentage_elapsed_and_remaining():
    job = jobs.Job(spec=SPEC, label="niah on tiny/SSSF", started=time.monotonic() - 12.0)
    assert job.text().endswith("starting — 0% · 12 s elapsed · estimating the time left")
    job.frac, job.stage = 0.25, "document 2/8"
    assert job.text() == "niah on tiny/SSSF: document 2/8 — 25% · 12 s elapsed · about 36 s left"
    job.started = time.monotonic() - 125.0
    assert "2 min 05 s elapsed · about 6 min 15 s left" in job.text()
    job.cancel.set()
    assert job.text().startswith("niah on tiny/SSSF: cancelling… · 2 min 05 s elapsed")


class Blocking:
    """A client whose run computes until it is cancelled (it never finishes on its own)."""

    events: list[threading.Event] = []

    def limits(self) -> dict:
        return cpu_limits()

    def submit(self, spec, on_progress=None, cancel=None) -> str:
        Blocking.events.append(cancel)
        on_progress(0.25, "document 1/4")
        if not cancel.wait(30):
            raise AssertionError("never cancelled")
        raise Cancelled("run: cancelled; nothing was stored")


def test_a_cancelled_run_says_so_and_stores_nothing(empty_store, env, monkeypatch):
    from app import run_panel

    Blocking.events = []
    monkeypatch.setattr(run_panel, "CLIENT_FACTORY", Blocking)
    at = run_app("niah")
    # the Cancel button's callback, while the script run waits for the job (AppTest cannot click mid-run)
    timer = threading.Timer(1.0, lambda: Blocking.events[0].set())
    timer.start()
    at.button(key="compute-niah-A").click().run()
    timer.join()
    assert not at.exception
    warnings = [plain(w) for w in texts(at, "warning")]
    assert any(w.startswith("Cancelled niah on tiny/SSSF after ") and w.endswith(
        ": its process was stopped and nothing was stored.") for w in warnings), warnings
    assert charts(at) == []  # nothing was stored: the view still lacks its traces
    assert any("No niah traces yet" in plain(i) for i in texts(at, "info"))
    assert not (empty_store / "runs").exists() or not any((empty_store / "runs").iterdir())
    at.run()  # reported once
    assert not any(plain(w).startswith("Cancelled") for w in texts(at, "warning"))


class Counting:
    """A client without a ``cancel`` argument: a cancel is raised from its progress callback."""

    def limits(self) -> dict:
        return cpu_limits()

    def submit(self, spec, on_progress=None) -> str:
        for i in range(200):
            on_progress(i / 200, f"step {i}")
            time.sleep(0.05)
        return "never"


def test_a_client_without_a_cancel_argument_is_stopped_at_its_next_progress_report():
    job = jobs.Job(spec=SPEC, label="x")
    t = threading.Thread(target=jobs._work, args=(job, Counting(), None))
    t.start()
    time.sleep(0.3)
    job.cancel.set()
    t.join(5)
    assert not t.is_alive() and job.status == "cancelled" and job.run_id is None
    assert 0 < job.frac < 0.5


def test_failures_are_reported_not_raised():
    class Failing:
        def submit(self, spec, on_progress=None, cancel=None):
            raise RunFailed("model: broken")

    job = jobs.Job(spec=SPEC, label="x")
    jobs._work(job, Failing(), None)
    assert (job.status, job.error) == ("failed", "model: broken")


def test_per_connection_and_per_process_caps(monkeypatch):
    mine: dict[str, jobs.Job] = {}
    monkeypatch.setattr(jobs, "_jobs", lambda: mine)
    other = RunSpec.build(model="tiny/SSSF", probe="token_loss")
    lim = {"session_runs": 1, "max_queue": 2}
    assert jobs.refusal(SPEC, lim) is None
    mine["a"] = jobs.Job(spec=SPEC, label="niah on tiny/SSSF")
    assert jobs.refusal(SPEC, lim).startswith("this run is already computing")
    assert jobs.refusal(other, lim) == (
        "1 run per browser connection at once here (session_runs); wait for it or cancel it")
    assert jobs.refusal(other, {**lim, "session_runs": 2}) is None
    monkeypatch.setattr(jobs, "_COMPUTING", {"x", "y"})
    assert jobs.refusal(other, {**lim, "session_runs": 2}) == (
        "2 runs are computing on this dashboard (max_queue); try again shortly")


def test_hosted_limits_profile_caps_session_runs(monkeypatch):
    monkeypatch.setenv("HYBRIDSCOPE_HOSTED", "1")
    assert limits_for("cpu")["session_runs"] == 1 and limits_for("cuda")["session_runs"] == 1
    monkeypatch.setenv("HYBRIDSCOPE_SESSION_RUNS", "3")
    assert limits_for("cpu")["session_runs"] == 3
    monkeypatch.delenv("HYBRIDSCOPE_HOSTED")
    monkeypatch.delenv("HYBRIDSCOPE_SESSION_RUNS")
    assert (limits_for("cpu")["session_runs"], limits_for("cuda")["session_runs"]) == (2, 4)


def test_hosted_dashboard_shows_its_caps_and_refuses_file_data(empty_store, env, monkeypatch, tmp_path):
    monkeypatch.setenv("HYBRIDSCOPE_HOSTED", "1")
    monkeypatch.setenv("HYBRIDSCOPE_ALLOW_FILE_DATA", "1")  # even when links may name file: data
    (tmp_path / "docs.txt").write_text("hello world " * 50)
    at = open_panel(run_app("token_loss", data=f"file:{tmp_path / 'docs.txt'}"), COMPUTE_OPEN)
    infos = [plain(i) for i in texts(at.sidebar, "info")]
    assert ("Hosted demo: runs of at most 4096 tokens and 4 documents, 1 run at a time per browser tab, "
            "300 s each; file: datasets are off.") in infos, infos
    assert "Limits here — hosted: max tokens 4096, max docs 4, max run seconds 300, session runs 1" in [
        plain(c) for c in texts(at.sidebar, "caption")]
    at.button(key="run-A").click().run()
    errors = [plain(e) for e in texts(at, "error")]
    assert any(e.startswith("Refused: file: datasets are off on this hosted dashboard") for e in errors), errors
    assert not env.exists()  # nothing was submitted


@pytest.mark.parametrize("hosted", [False, True])
def test_no_hosted_banner_off_hosted(empty_store, env, monkeypatch, hosted):
    if hosted:
        monkeypatch.setenv("HYBRIDSCOPE_HOSTED", "1")
    at = run_app("niah")
    assert any(plain(i).startswith("Hosted demo:") for i in texts(at.sidebar, "info")) is hosted
