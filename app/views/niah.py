"""NIAH: needle-in-a-haystack accuracy over context length x needle depth, A vs B."""

from __future__ import annotations

import streamlit as st

from app import charts, data, session
from app.state import ViewState
from app.views import header, side_runs


def render(vs: ViewState) -> None:
    header(
        "Needle in a haystack",
        "Accuracy of retrieving a planted fact, by context length and by where "
        "the needle sits (depth 0 = start, 1 = end). With A vs B, the last map is B − A.",
    )
    found = [s for s in side_runs(vs, "niah") if s.run_id]
    grids = {s.label: data.niah_grid(s.run_id) for s in found}
    for side in found:
        g = grids[side.label]
        if not g.empty and not (g["acc"] > 0).any():
            st.warning(
                f"{side.name} retrieves no needle: accuracy is 0 in all {len(g)} cells "
                f"(lengths {int(g['length'].min())}–{int(g['length'].max())})."
            )
    if found:
        best = data.query(
            "SELECT count(DISTINCT r.model) AS models, max(CASE WHEN n.correct THEN 1 ELSE 0 END) AS any_ok "
            "FROM niah n JOIN runs r USING (run_id) WHERE r.status = 'ok'"
        )
        if not best.empty and int(best["models"].iloc[0]) > 1 and not int(best["any_ok"].iloc[0] or 0):
            st.info(f"No model in the store retrieves a needle: all {int(best['models'].iloc[0])} score 0.")
    cols = st.columns(max(len(found), 1))
    for col, side in zip(cols, found, strict=False):
        with col:
            charts.show(f"niah {side.label}", charts.niah_heatmap, grids[side.label], side.name)
    if len(found) == 2:
        merged = grids["A"].merge(grids["B"], on=["length", "depth"], suffixes=("_a", "_b"))
        if merged.empty:
            st.info("A and B share no (length, depth) cells.")
        else:
            merged["delta"] = merged["acc_b"] - merged["acc_a"]
            merged["n"] = merged["n_a"]
            charts.show("niah delta", charts.niah_heatmap, merged, "B − A", delta=True)
    for side in found:
        fails = data.query(
            "SELECT length, depth, sample, expected, predicted FROM niah WHERE run_id = ? "
            "AND NOT correct ORDER BY length, depth, sample",
            (side.run_id,),
            max_rows=1000,
        )
        box = st.expander(f"{side.name}: {len(fails)} failed samples", key=f"niah-fails-{side.label}",
                          on_change="rerun")
        if box.open:  # the table is drawn only while open (a closed one still costs the browser a grid)
            with box:
                st.dataframe(fails, hide_index=True, width="stretch")
                charts.table_downloads(fails, f"niah failures {side.label}")


if __name__ == "__main__":  # run as a page by st.navigation
    render(session.current())
