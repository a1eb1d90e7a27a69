"""``python -m backend models``: every known model ref, whether HybridScope supports it and which ablation
toggles apply, from configs alone (no weight is read; :func:`backend.model_support.support`).

``rows()`` is the ``--json`` output (one :func:`support` dict per ref, plus the ``tiny/<pattern>`` refs
described by the layer kinds their letters stand for); ``table(rows)`` the readable form. Each model is
``supported`` (every probe; its toggles listed), ``plain_probes_only`` (its layers are unknown to the
adapters: the empty ablation of token_loss / longppl / niah still runs through its own forward) or
``refused`` (nothing runs), with the reason in both forms.
"""

from __future__ import annotations

from backend.model_refs import list_models
from backend.model_support import support
from models.adapters import PLAIN_ONLY, REFUSED, SUPPORTED
from models.plan import CHUNKED, FULL, LAYER_LETTERS, SWA

TINY_REF = "tiny/<pattern of F,S,M,G>"
SHORT_KIND = {FULL: "full", SWA: "swa", CHUNKED: "chunked"}  # the selector words of these kinds
SHORT_TOGGLE = {"receptive_field": "rf", "skip_layers": "skip", "mask_heads": "heads"}  # the text form's keys
COLUMNS = ("model", "type", "adapter", "layers", "toggles", "notes")


def rows() -> list[dict]:
    """One support dict per model ref (zoo, model roots), then the tiny native refs."""
    out = [support(ref) for ref in list_models()]
    tiny = support("tiny/" + "".join(LAYER_LETTERS))
    return out + [{**tiny, "ref": TINY_REF}]


def layers_text(kinds: list[str]) -> str:
    """``"4: swa×2 full×2"``: the number of layers, then each kind (selector word where one exists) with
    its count, in order of first appearance."""
    if not kinds:
        return "-"
    counts: dict[str, int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    return f"{len(kinds)}: " + " ".join(f"{SHORT_KIND.get(k, k)}×{n}" for k, n in counts.items())


def notes_text(row: dict) -> str:
    """The notes cell: for a model whose layers the adapters do not know, which probes still run and why
    there are no toggles (``plain probes only (token_loss, longppl, niah): <reason>``); for a model nothing
    runs on, ``not supported: <reason>``; else remote code, what the attention kernel lacks, ..."""
    status = row.get("status") or (SUPPORTED if row["supported"] else REFUSED)
    if status == REFUSED:
        return f"not supported: {row['reason']}"
    notes = ["remote code"] if row.get("remote_code") else []
    if status == PLAIN_ONLY:
        return "; ".join([*notes, f"plain probes only ({', '.join(row['plain_probes'])}): {row['reason']}"])
    if row.get("kernel_gaps"):
        notes.append("no window/sinks changes on attention layers (kernel lacks " + "; ".join(row["kernel_gaps"]) + ")")
    if row["ref"] == TINY_REF:
        notes.append("random native model, layers from the letters (" +
                     ", ".join(f"{k}={SHORT_KIND.get(v, v)}" for k, v in LAYER_LETTERS.items()) + ")")
    return "; ".join(notes)


def table(listing: list[dict]) -> str:
    """Aligned columns: model, model type, adapter, layers, toggles (the ablation text form's keys), notes."""
    cells = [COLUMNS] + [(
        r["ref"],
        r.get("model_type") or "-",
        r.get("adapter") or "-",
        layers_text(r.get("layer_types") or []) if r["ref"] != TINY_REF else "any of " + ", ".join(
            SHORT_KIND.get(k, k) for k in LAYER_LETTERS.values()),
        ",".join(SHORT_TOGGLE.get(t, t) for t in r["toggles"]) or "-",
        notes_text(r),
    ) for r in listing]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS) - 1)]
    return "\n".join(
        ("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]).rstrip()
        for row in cells
    )
