"""The bundled zoo's verdict on each of the paper's findings (``precomputed/findings.json``, the
machine-readable twin of ``FINDINGS.md``) and the chance level of retrieval-head scores.

Torch-free; a missing or broken file gives no verdicts (the Overview then titles each finding as the
paper's claim only) and the default chance level.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from backend import paths

FILE = "findings.json"
CHANCE_DEFAULT = 0.005  # FINDINGS.md: attention mass on the needle under uniform attention, bundled prompts


@dataclass(frozen=True)
class Verdict:
    verdict: str  # in FINDINGS.md's words: "reproduced", "partly reproduced", "not reproduced", ...
    detail: str

    @property
    def reproduced(self) -> bool:
        return not self.verdict.startswith(("not", "partly"))


def _load() -> dict:
    try:
        obj = json.loads((paths.precomputed_root() / FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def verdicts() -> list[Verdict | None]:
    """One entry per finding (1..4): its verdict, or None when the bundle gives none."""
    out: list[Verdict | None] = []
    items = _load().get("findings")
    for i in range(4):
        item = items[i] if isinstance(items, list) and i < len(items) else None
        ok = isinstance(item, dict) and isinstance(item.get("verdict"), str)
        out.append(Verdict(item["verdict"], str(item.get("detail", ""))) if ok else None)
    return out


def retrieval_chance() -> float:
    """Chance level of the retrieval-head score (attention mass on the needle under uniform attention)."""
    v = _load().get("retrieval_chance")
    return float(v) if isinstance(v, int | float) and 0 < v < 1 else CHANCE_DEFAULT


__all__ = ["CHANCE_DEFAULT", "Verdict", "retrieval_chance", "verdicts"]
