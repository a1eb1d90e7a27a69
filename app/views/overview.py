"""Overview: the paper's four findings (DESIGN.md), each a live chart from the store and one sentence,
titled as the paper's claim plus the bundled zoo's verdict (``precomputed/findings.json``)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app import charts, data, findings, session
from app.state import ViewState
from app.views import header

FINDINGS = [
    (
        "Short context barely cares, long context does",
        "Efficient-attention design barely moves plain perplexity (PPL) but changes LongPPL — the loss on "
        "tokens that need long-range context — a lot, at least early in training.",
    ),
    (
        "Full attention carries long-range retrieval",
        "Restricting the full-attention layers to the last k tokens makes LongPPL shoot up; restricting the "
        "efficient layers (SWA, Mamba-2, GDN) barely moves it.",
    ),
    (
        "Large-window laziness",
        "With a large sliding window most dependencies are local, so retrieval heads in the full-attention "
        "layers form later; small windows force full attention to retrieve.",
    ),
    (
        "NoPE on full attention helps small-window hybrids",
        "Dropping RoPE from the full-attention layers only (e.g. SWA-128-NoPE) improves long-context "
        "retrieval at negligible short-context cost.",
    ),
]


def heading(i: int, verdict: findings.Verdict | None) -> str:
    """The paper's claim, attributed, plus the bundled zoo's verdict when the bundle gives one."""
    claim = FINDINGS[i][0]
    word = claim.split()[0]
    keep = word[1:] != word[1:].lower()  # an acronym such as NoPE keeps its capitals
    title = f"{i + 1}. Paper: {claim if keep else claim[0].lower() + claim[1:]}"
    return f"{title} — bundled zoo: {verdict.verdict}" if verdict else title


def _finding(i: int, verdict: findings.Verdict | None) -> None:
    st.subheader(heading(i, verdict))
    st.write(FINDINGS[i][1])
    if verdict and verdict.detail:
        st.caption(f"In the bundled zoo: {verdict.verdict} — {verdict.detail} (FINDINGS.md).")


def _empty(what: str, where: str) -> None:
    st.info(f"No {what} in the store yet — compute them from the {where} view (sidebar → Compute a run).")


def finding_ppl(models: list[str]) -> None:
    df = data.longppl_summary()
    df = df[df["ablation"] == ""]
    if df.empty:
        return _empty("LongPPL traces", "LongPPL")
    long = df.melt(id_vars=["model", "ablation"], value_vars=["ppl", "longppl"], var_name="metric")
    long["metric"] = long["metric"].map({"ppl": "PPL", "longppl": "LongPPL"})
    charts.show("finding 1 ppl vs longppl", charts.ppl_bars, long.dropna(), models, by="model")


def finding_sweep(models: list[str]) -> None:
    by_metric = data.receptive_field_sweeps()
    if not by_metric:
        return _empty("receptive-field sweeps", "LongPPL")
    if "LongPPL" not in by_metric:
        st.caption("LongPPL is undefined for these runs (the evaluator found no key tokens); PPL is shown.")
    for metric, df in by_metric.items():
        charts.show(f"finding 2 receptive field sweep {metric}", charts.rf_sweep_panels, df, y_title=metric)


def best_head_bars(scores: pd.DataFrame, models: list[str]) -> alt.Chart:
    return (
        alt.Chart(scores)
        .mark_bar()
        .encode(
            x=alt.X("model:N", title=None, axis=charts.label_axis()),
            y=alt.Y("best:Q", title="max retrieval score (full-attention heads)"),
            color=alt.Color("model:N", scale=charts.model_scale(models), legend=None),
            tooltip=["model", alt.Tooltip("best:Q", format=".3f"), alt.Tooltip("mean:Q", format=".3f")],
        )
        .properties(height=240)
    )


def niah_bars(df: pd.DataFrame, models: list[str]) -> alt.Chart:
    """Mean NIAH accuracy per model x ablation; NoPE models/ablations drawn solid, others faded."""
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("ablation:N", title=None, axis=charts.label_axis()),
            xOffset="model:N",
            y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), title="NIAH accuracy"),
            color=alt.Color("model:N", scale=charts.model_scale(models), legend=charts.legend("model")),
            opacity=alt.condition("datum.nope", alt.value(1.0), alt.value(0.55)),
            tooltip=["model", "ablation", alt.Tooltip("accuracy:Q", format=".2f"), "n"],
        )
        .properties(height=240)
    )


def finding_formation(models: list[str]) -> None:
    df = data.formation_series()
    if not df.empty:
        charts.show(
            "finding 3 retrieval head formation",
            charts.sweep_chart,
            df,
            models,
            x_title="training step",
            y_title="max retrieval score",
        )
        return
    scores = data.query(
        "SELECT r.model, r.ablation, max(h.score) AS best, avg(h.score) AS mean FROM head_scores h "
        "JOIN runs r USING (run_id) WHERE r.status = 'ok' AND h.layer_type = 'full_attention' "
        "GROUP BY r.model, r.ablation"
    )
    scores = scores[scores["ablation"].fillna("") == ""]
    if scores.empty:
        return _empty("retrieval-head maps", "Retrieval heads")
    st.caption(
        "No checkpoint series in the store: showing the strongest full-attention retrieval head of "
        "each final model instead."
    )
    charts.show("finding 3 retrieval head strength", best_head_bars, scores, models)


def compare_bars(df: pd.DataFrame, models: list[str]) -> alt.Chart:
    """df: model, metric, value -> one bar per model in one panel per metric (each its own y scale)."""
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("model:N", title=None, axis=charts.label_axis()),
            y=alt.Y("value:Q", title=None),
            color=alt.Color("model:N", scale=charts.model_scale(models), legend=None),
            column=alt.Column("metric:N", title=None, sort=NOPE_METRICS),
            tooltip=["model", "metric", alt.Tooltip("value:Q", format=".3f")],
        )
        .properties(width=alt.Step(40), height=200)
        .resolve_scale(y="independent")
    )


NOPE_METRICS = ["PPL", "LongPPL", "best full-attention retrieval score"]


def nope_pairs(names: list[str]) -> list[str]:
    """NoPE models and their RoPE twins (``x_nope`` and ``x``), when both are in ``names``."""
    out = []
    for m in names:
        twin = m.replace("_nope", "")
        if m != twin and twin in names:
            out += [twin, m]
    return out


def finding_nope(models: list[str]) -> None:
    df = data.query(
        "SELECT r.model, r.ablation, avg(CASE WHEN n.correct THEN 1.0 ELSE 0.0 END) AS accuracy, "
        "count(*) AS n FROM niah n JOIN runs r USING (run_id) WHERE r.status = 'ok' "
        "GROUP BY r.model, r.ablation"
    )
    if df.empty:
        return _empty("NIAH traces", "NIAH")
    if (df["accuracy"] > 0).any():
        df["ablation"] = [data.meaning(a, m) for a, m in zip(df["ablation"].fillna(""), df["model"], strict=True)]
        df["nope"] = df["model"].str.contains("nope", case=False) | df["ablation"].str.contains("NoPE")
        charts.show("finding 4 nope niah accuracy", niah_bars, df, models)
        return
    st.warning(
        f"No model retrieves a needle: NIAH accuracy is 0 for all {df['model'].nunique()} models, so "
        "NIAH cannot compare NoPE with RoPE here. Shown instead: the NoPE models next to their RoPE twins."
    )
    pairs = nope_pairs(sorted(set(data.known_models())))
    if not pairs:
        return
    summary = data.longppl_summary()
    summary = summary[(summary["ablation"] == "") & summary["model"].isin(pairs)]
    rows = [(m, "PPL", v) for m, v in zip(summary["model"], summary["ppl"], strict=True)]
    rows += [(m, "LongPPL", v) for m, v in zip(summary["model"], summary["longppl"], strict=True)]
    best = data.query(
        "SELECT r.model, max(h.score) AS best FROM head_scores h JOIN runs r USING (run_id) WHERE r.status = 'ok' "
        "AND h.layer_type = 'full_attention' AND coalesce(r.ablation, '') = '' GROUP BY r.model"
    )
    rows += [(m, NOPE_METRICS[2], v) for m, v in zip(best["model"], best["best"], strict=True) if m in pairs]
    table = pd.DataFrame(rows, columns=["model", "metric", "value"]).dropna()
    if not table.empty:
        charts.show("finding 4 nope vs rope", compare_bars, table, models)


def render(vs: ViewState) -> None:
    header(
        "What each layer does at long context",
        'HybridScope makes the findings of Qiao et al., "Rethinking the Role of Efficient Attention in '
        'Hybrid Architectures", visible from the traces in the store. Every chart below is live.',
    )
    findings_md = data.precomputed_dir() / "FINDINGS.md"
    if findings_md.is_file():  # first: whether the bundled zoo reproduces the findings frames every chart
        text = findings_md.read_text(encoding="utf-8", errors="replace")[:50_000]
        paragraphs = [p for p in text.split("\n\n") if p.strip() and not p.lstrip().startswith("#")]
        if paragraphs:
            st.info(paragraphs[0])
        with st.expander("FINDINGS.md — what the bundled zoo reproduces, with its numbers"):
            st.markdown(text)
    models = data.known_models()
    verdicts = findings.verdicts()
    for i, fn in enumerate((finding_ppl, finding_sweep, finding_formation, finding_nope)):
        _finding(i, verdicts[i])
        fn(models)
    if not len(pd.DataFrame(data.runs())):
        st.info("The store is empty. Pick a model in the sidebar and compute a run, or bundle precomputed/.")


if __name__ == "__main__":  # run as a page by st.navigation
    render(session.current())
