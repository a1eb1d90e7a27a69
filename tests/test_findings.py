"""precomputed/findings.json (the verdicts the Overview titles its findings with) agrees with FINDINGS.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

PRE = Path(__file__).resolve().parents[1] / "precomputed"


def test_every_verdict_is_the_one_findings_md_states():
    verdicts = json.loads((PRE / "findings.json").read_text())["findings"]
    text = (PRE / "FINDINGS.md").read_text()
    assert len(verdicts) == 4
    for i, v in enumerate(verdicts, start=1):
        para = re.search(rf"^{i}\. \*\*.*?(?=^\d\. \*\*|^\*\*What is bundled)", text, re.S | re.M).group(0)
        stated = re.search(r"\*\*\s+\*([^*.]+)", para).group(1).lower()  # "*Partly reproduced.*"
        assert stated.startswith(v["verdict"]), (i, stated, v["verdict"])


def test_chance_level_is_the_one_findings_md_states():
    chance = json.loads((PRE / "findings.json").read_text())["retrieval_chance"]
    assert f"chance ≈ {chance:g}" in (PRE / "FINDINGS.md").read_text()
