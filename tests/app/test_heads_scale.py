"""The retrieval-head maps' colour scale (issue 14, item 4, and its per-map toggle): one absolute scale,
anchored at chance and shared by every map, by default; per map on request; the choice is a bound
permalink parameter (``scale=per-map``) of the Retrieval heads page."""

from __future__ import annotations

import json

import pyarrow as pa

from app import findings
from app.state import DEFAULT, parse
from tests.app.conftest import link, run_app, texts

QUERY = {"model": "zoo/swa64", "cmp": "true", "abl_b": "rf[full]=64"}  # two maps: A and B


def score_scales(node) -> list[dict]:
    """The colour scales of every ``score`` encoding in a Vega-Lite spec."""
    if isinstance(node, list):
        return [sc for v in node for sc in score_scales(v)]
    if not isinstance(node, dict):
        return []
    color = node.get("encoding", {}).get("color", {})
    own = [color["scale"]] if color.get("field") == "score" else []
    return own + [sc for v in node.values() for sc in score_scales(v)]


def maps(at) -> list[tuple[list[float], float]]:
    """(colour-scale domain of the score, strongest head in the map's data) of each head map."""
    out = []
    for chart in at.get("vega_lite_chart"):
        scales = score_scales(json.loads(chart.proto.spec))
        if scales:  # the chart's tables travel beside the spec, as Arrow streams
            tables = [pa.ipc.open_stream(d.data.data).read_all() for d in chart.proto.datasets]
            scores = [s for t in tables if "score" in t.column_names for s in t["score"].to_pylist()]
            out.append((scales[0]["domain"], max(s for s in scores if s is not None)))
    return out


def test_the_toggle_switches_between_one_shared_domain_and_one_per_map(store):
    chance = findings.retrieval_chance()
    at = run_app("retrieval_heads", **QUERY)
    assert at.radio(key="scale").value == "shared" and "scale" not in link(at)
    shared = maps(at)
    assert len(shared) == 2 and shared[0][0] == shared[1][0]  # one domain for both maps
    lo, hi = shared[0][0]
    assert lo == chance and hi >= max(top for _, top in shared)  # the store's strongest head brightest
    assert shared[0][1] != shared[1][1]  # the two maps' own maxima differ, so per-map domains will too

    at.radio(key="scale").set_value("per-map").run()
    assert not at.exception
    per_map = maps(at)
    for domain, top in per_map:
        assert domain == [chance, max(top, 2 * chance)]  # chance darkest, this map's strongest head brightest
    assert per_map[0][0] != per_map[1][0] and [d for d, _ in per_map] != [d for d, _ in shared]
    assert any(c.startswith("Colour scale per map") for c in texts(at, "caption"))
    assert link(at) == {**QUERY, "scale": "per-map"}

    back = run_app("retrieval_heads", **link(at))  # the permalink opens the same view
    assert back.radio(key="scale").value == "per-map" and maps(back) == per_map
    assert link(back) == link(at) and back.warning.len == 0

    back.radio(key="scale").set_value("shared").run()
    assert maps(back) == shared and "scale" not in link(back)  # the default leaves the link


def test_a_bad_or_misplaced_scale_is_ignored_with_a_warning(store):
    state, warnings = parse({"scale": "log"}, "retrieval_heads")
    assert state.scale == DEFAULT.scale and len(warnings) == 1
    assert "scale" in warnings[0] and "must be one of shared, per" in warnings[0]
    at = run_app("niah", scale="per-map")  # a Retrieval heads parameter on another page does nothing
    assert any("only the Retrieval heads page uses it" in w.replace("\\", "") for w in texts(at, "warning"))
    assert "scale" not in link(at)
