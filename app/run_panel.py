"""The run panel (sidebar, every view): models and ablations A/B, the ablation editor, dataset and
probe parameters, and submission to the backend (:mod:`app.jobs`: a thread per run, a progress bar with
stage, percentage, elapsed and remaining time, and Cancel). Also the "missing traces" prompt the views
show, and :func:`build_spec`: the RunSpec a view looks its runs up by. On a hosted dashboard
(``HYBRIDSCOPE_HOSTED=1``) the caps are shown at the top of the panel and ``file:`` data is refused.

The backend client is ``backend.client.default_client`` (an in-process CLI child, or HTTP when
``HYBRIDSCOPE_BACKEND_URL`` is set). Tests install a double through :data:`CLIENT_FACTORY`; the app
ships none (the double and its served entry script live in tests/app/).
"""

from __future__ import annotations

import os
import typing
from collections.abc import Callable
from typing import Any

import streamlit as st

from app import data, defaults, jobs, probe_params, session, state
from app.state import BUILTIN_DATA, RUN_PROBES, VIEW_PROBE, ViewState
from backend.client import Client, default_client
from backend.limits import over_limits  # the one definition of what fits a backend
from backend.probes.registry import PROBES
from backend.spec import RunSpec, SpecError
from models.ablation import Ablation, AblationError
from models.ablation_text import TEXT_EXAMPLE

CLIENT_FACTORY: Callable[[], Client] | None = None  # tests install a double here
DEMO_MODEL = "tiny/SSSF"  # a random tiny native model: always available, for trying things out
FIELDS = {
    "window": "window",
    "pe": "pe",
    "rf": "receptive field",
    "sinks": "sinks",
    "skip": "skip layers",
    "heads": "mask heads",
}


def client() -> Client:
    if CLIENT_FACTORY is not None:
        return CLIENT_FACTORY()
    return default_client(store=str(data.store_dir()))


@st.cache_data(ttl=60, show_spinner=False)
def _limits(backend: str) -> dict:
    try:
        return dict(client().limits())
    except Exception as e:  # noqa: BLE001 - an unreachable backend is reported, not raised
        return {"error": f"backend unreachable: {e}"}


def limits() -> dict:
    """What the backend accepts (cached for a minute: an HTTP backend is asked over the network)."""
    keys = ("HYBRIDSCOPE_BACKEND_URL", "HYBRIDSCOPE_MAX_TOKENS", "HYBRIDSCOPE_MAX_DOCS", "HYBRIDSCOPE_HOSTED",
            "HYBRIDSCOPE_SESSION_RUNS")
    return _limits("|".join([os.environ.get(k, "") for k in keys] + [repr(CLIENT_FACTORY)]))


SHOWN_LIMITS = ("max_tokens", "max_docs", "max_run_seconds", "session_runs")  # what a user can act on


def limits_text(lim: dict) -> str:
    if "error" in lim:
        return str(lim["error"])
    parts = [f"{k.replace('_', ' ')} {v:g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
             for k, v in lim.items() if k in SHOWN_LIMITS]
    where = "hosted" if lim.get("hosted") else lim.get("device", "backend")
    return f"{where}: " + (", ".join(parts) or "no limits")


def hosted_caps(lim: dict) -> str | None:
    """The caps of a hosted dashboard, in words (None elsewhere)."""
    if not lim.get("hosted"):
        return None
    n = int(lim.get("session_runs", 1))
    return (f"Hosted demo: runs of at most {lim['max_tokens']} tokens and {lim['max_docs']} documents, "
            f"{n} run{'s' if n > 1 else ''} at a time per browser tab, {lim['max_run_seconds']:g} s each; "
            "file: datasets are off.")


def model_options(vs: ViewState) -> list[str]:
    opts = data.known_models() or [DEMO_MODEL]
    extra = [m for m in (vs.model, vs.model_b, *vs.models) if m and m not in opts]
    return opts + extra


def model_a(vs: ViewState) -> str | None:
    return vs.model or (data.known_models() or [DEMO_MODEL])[0]


def model_b(vs: ViewState) -> str | None:
    return vs.model_b or model_a(vs)


def sides(vs: ViewState) -> list[tuple[str, str | None, str]]:
    """[(label, model, ablation text)] for A, and B when comparing."""
    out = [("A", model_a(vs), vs.abl)]
    if vs.cmp:
        out.append(("B", model_b(vs), vs.abl_b))
    return out


def params_of(vs: ViewState, probe: str) -> dict[str, Any]:
    """The params a view asks ``probe`` for: its dashboard defaults, with the URL's overrides when it is
    the run panel's probe (raises ValueError on overrides that do not fit)."""
    base = defaults.params_for(probe)
    return probe_params.resolve(vs.params, probe, base) if probe == vs.effective_probe else base


def build_spec(
    vs: ViewState, model: str | None, abl: str, probe: str | None = None, extra_params: dict | None = None
) -> RunSpec:
    """The RunSpec of ``probe`` (default: the run panel's) on ``model`` with ablation ``abl``: the
    dataset and params of the URL, else the dashboard defaults (SpecError/ValueError on bad input)."""
    probe = probe or vs.effective_probe
    return RunSpec.build(
        model=model or DEMO_MODEL,
        probe=probe,
        data=vs.data or defaults.data_for(probe),
        ablation=abl,
        params={**params_of(vs, probe), **(extra_params or {})},
    )


def refusal(spec: RunSpec, lim: dict) -> str | None:
    """Why this dashboard does not compute ``spec`` now: too large for the backend, ``file:`` data on a
    hosted dashboard, or the per-connection / per-process caps of :mod:`app.jobs`."""
    why = over_limits(spec, lim)
    if why:
        return why
    if lim.get("hosted") and (spec.data or "").startswith("file:"):
        return "file: datasets are off on this hosted dashboard (use zoo:val, zoo:test or stdlib)"
    return jobs.refusal(spec, lim)


def submit(spec: RunSpec) -> jobs.Job | None:
    """Start computing ``spec`` (its progress and Cancel button appear in the sidebar; the app reruns
    when the traces are in), or say why not."""
    lim = limits()
    why = refusal(spec, lim)
    if why:
        st.error(
            f"Refused: {why}. Limits of this backend — {limits_text(lim)}. Lower the probe parameters, "
            "or point the dashboard at a GPU backend (HYBRIDSCOPE_BACKEND_URL)."
        )
        return None
    return jobs.start(spec, client(), f"{spec.probe} on {spec.model}")


def finished(job: jobs.Job) -> None:
    """A job's traces are in the store: this session shows that run for its spec."""
    data.remember(job.spec, job.run_id)
    data.invalidate()


def missing(
    label: str,
    probe: str,
    model: str | None,
    abl: str,
    vs: ViewState,
    error: str | None = None,
    extra_params: dict | None = None,
) -> None:
    """The prompt shown where a view lacks traces: what is missing, and a button to compute it."""
    what = f"**{label}**: {state.shown(model)}" + (f" with {state.shown(abl, 80)}" if abl else "")
    if error:
        st.warning(f"The last {probe} run for {what} failed: {state.shown(error, 200)}")
    else:
        st.info(f"No {probe} traces yet for {what}.")
    try:
        spec = build_spec(vs, model, abl, probe, extra_params)
    except (SpecError, ValueError) as e:
        st.error(f"Cannot compute it: {state.shown(e, 300)}")
        return
    why = over_limits(spec, lim := limits())
    if why:
        st.error(f"Cannot compute it here: {why} (limits — {limits_text(lim)}).")
        return
    if jobs.running_for(spec):
        st.info("Computing it — progress and Cancel in the sidebar.")
        return
    if st.button(f"Compute {probe} for {label}", key=f"compute-{probe}-{label}") and submit(spec):
        st.info("Computing it — progress and Cancel in the sidebar.")


# ---------------------------------------------------------------------------------------------
# sidebar
# ---------------------------------------------------------------------------------------------
SAME = "(same as A)"
# Keys of the sidebar's two expanders (their open state). Their content is drawn only while open, so a
# rerun (a view switch) neither builds nor sends the editor's and the parameters' widgets; the probe and
# dataset pickers are drawn always: they are bound to the URL, which drops a bound widget not drawn.
EDITOR_OPEN, COMPUTE_OPEN = "x_editor", "x_compute"


def render(vs: ViewState) -> None:
    caps = hosted_caps(limits())
    if caps:
        st.info(caps, icon="ℹ️")
    jobs.slot()
    opts = model_options(vs)
    st.selectbox("Model A", opts, **session.bound("model"))
    st.text_input(
        "Ablation A",
        placeholder="none, e.g. rf[full]=512",
        help="compact text form, e.g. " + TEXT_EXAMPLE,
        **session.bind("abl", from_widget=str.strip),
    )
    session.show_error("w_abl")
    st.toggle("Compare A vs B", **session.bound("cmp"))
    if vs.cmp:
        st.selectbox("Model B", [None, *opts], format_func=lambda v: v or SAME, **session.bound("model_b"))
        st.text_input(
            "Ablation B",
            placeholder="none, e.g. pe[full]=nope",
            help="compact text form, e.g. " + TEXT_EXAMPLE,
            **session.bind("abl_b", from_widget=str.strip),
        )
        session.show_error("w_abl_b")
    editor_box = st.expander("Ablation editor", key=EDITOR_OPEN, on_change="rerun")
    if editor_box.open:  # drawn only while open: its widgets hold nothing the URL needs
        with editor_box:
            editor(vs)
    compute_box = st.expander("Compute a run", key=COMPUTE_OPEN, on_change="rerun")
    with compute_box:
        compute_form(vs, full=bool(compute_box.open))


def _segment(field: str) -> str:
    """The widgets of one editor row -> one text-form segment."""
    if field in ("window", "pe", "rf"):
        sel = st.selectbox("Layers", ["all", "full", "swa", "linear", "indices"], key="ed_sel")
        if sel == "indices":
            sel = st.text_input("Layer indices", "0", key="ed_idx", help="e.g. 0,4,8-11")
        if field == "pe":
            value = st.selectbox("Positional encoding", ["nope", "rope"], key="ed_pe")
        elif field == "window":
            value = st.text_input("Window (tokens, or none = full causal)", "64", key="ed_win")
        else:
            value = st.number_input("Last k tokens", 1, 1 << 20, 512, key="ed_rf")
        return f"{field}[{sel}]={value}"
    if field == "sinks":
        return f"sinks={st.number_input('Sink tokens', 0, 1 << 16, 4, key='ed_sinks')}"
    if field == "skip":
        return "skip=" + st.text_input("Layers to skip", "0", key="ed_skip", help="e.g. 3,5-7")
    return "heads=" + st.text_input("Heads to mask (layer.head)", "0.0", key="ed_heads", help="e.g. 2.1,5.0")


def combine(current: str, segment: str) -> str:
    """Add ``segment`` to ablation text ``current``: same field/selector is replaced, lists are merged."""
    new = Ablation.from_text(segment)
    keep = [s for s in current.split(";") if s]
    if not (new.skip_layers or new.mask_heads):
        head = new.to_text().split("=")[0] + "="
        keep = [s for s in keep if not s.startswith(head)]
    return Ablation.from_text(";".join(keep)).merge(new).to_text()


def editor(vs: ViewState) -> None:
    side = st.radio("Edit ablation", ["A", "B"] if vs.cmp else ["A"], horizontal=True, key="ed_side")
    field = st.selectbox("Field", list(FIELDS), format_func=FIELDS.get, key="ed_field")
    segment = _segment(field)
    c1, c2 = st.columns(2)
    name = "abl" if side == "A" else "abl_b"
    if c1.button("Add", key="ed_add"):
        try:
            session.update(**{name: combine(getattr(vs, name), segment)})
        except (AblationError, ValueError) as e:
            st.error(state.shown(e, 300))
        else:
            st.rerun()
    if c2.button("Clear", key="ed_clear"):
        session.update(**{name: ""})
        st.rerun()


def _param_widget(probe: str, name: str, info: Any, value: Any, apply: Callable[[Any], None]) -> None:
    key = f"p_{probe}_{name}"
    ann, args = info.annotation, typing.get_args(info.annotation)
    lo = next((m.ge for m in info.metadata if hasattr(m, "ge")), None)
    hi = next((m.le for m in info.metadata if hasattr(m, "le")), None)
    if typing.get_origin(ann) is tuple:
        st.text_input(name, help="comma-separated", **session.bind_value(key, ",".join(map(str, value)), apply))
    elif typing.get_origin(ann) is typing.Literal:
        st.selectbox(name, list(args), **session.bind_value(key, value, apply))
    elif ann is int:
        st.number_input(name, min_value=lo, max_value=hi, step=1, **session.bind_value(key, int(value), apply))
    elif ann is float:
        st.number_input(name, step=0.5, **session.bind_value(key, float(value), apply))
    else:
        help = "empty = the default shown; none = unset" if value else "empty = default"
        st.text_input(name, help=help, **session.bind_value(key, value or "", apply))
    session.show_error(key)


VIEW_DEFAULT = "(this view's)"  # constant labels: Streamlit's binding keys a selectbox value by its label
DATA_DEFAULT = "(default)"


def _probe_changed() -> None:
    chosen = st.session_state.get("probe")
    session.update(probe=None if chosen == VIEW_PROBE[session.current().view] else chosen)


def _data_changed() -> None:
    chosen = st.session_state.get("data")
    session.update(data=None if chosen == defaults.data_for(session.url_state().effective_probe) else chosen)


def defaults_text(probe: str) -> str:
    """What the run panel uses for ``probe`` when the URL says nothing (the dashboard defaults)."""
    data_ref = defaults.data_for(probe) or "the probe's own"
    params = probe_params.format_params(defaults.params_for(probe)) or "the probe's defaults"
    return f"Defaults for {probe}: dataset {data_ref}; parameters {params}."


def compute_form(vs: ViewState, full: bool = True) -> None:
    """The probe and dataset pickers; with ``full`` (the expander is open) also the probe's parameters,
    the limits and the Run buttons."""
    st.selectbox(
        "Probe",
        [None, *RUN_PROBES],
        format_func=lambda p: p or VIEW_DEFAULT,
        on_change=_probe_changed,
        help=f"this view's probe: {VIEW_PROBE[vs.view]}",
        **session.bound("probe"),
    )
    probe = vs.effective_probe
    data_opts = [None, *BUILTIN_DATA, *([vs.data] if vs.data and vs.data not in BUILTIN_DATA else [])]
    st.selectbox(
        "Dataset",
        data_opts,
        format_func=lambda d: d or DATA_DEFAULT,
        on_change=_data_changed,
        **session.bound("data"),
    )
    if not full:
        return
    st.caption(defaults_text(probe))
    model_cls = PROBES[probe].params
    base = defaults.params_for(probe)
    try:
        current = probe_params.full(params_of(vs, probe), probe)
    except ValueError:
        current = probe_params.full(base, probe)
    for name, info in model_cls.model_fields.items():

        def apply(v: Any, name: str = name) -> None:
            texts = dict(seg.split("=", 1) for seg in session.url_state().params.split(";") if seg)
            texts[name] = v.strip() if isinstance(v, str) else str(v)
            merged = ";".join(f"{k}={t}" for k, t in texts.items() if t != "")
            session.update(params=probe_params.canonical(merged, probe, base))

        _param_widget(probe, name, info, current[name], apply)
    lim = limits()
    st.caption(f"Limits here — {limits_text(lim)}")
    for col, (label, model, abl) in zip(st.columns(len(sides(vs))), sides(vs)):
        if col.button(f"Run {label}", key=f"run-{label}", help=f"{probe} on {model}"):
            try:
                spec = build_spec(vs, model, abl)
            except (SpecError, ValueError) as e:
                st.error(state.shown(e, 300))
            else:
                submit(spec)
