"""The probe registry: every probe declared in one place (torch-free, so the app can import it).

A :class:`Probe` names its params class (``backend.params``), its version (part of every run_id: bump
it whenever the probe's numbers could change), the tables it writes, whether it makes its own inputs
(synthetic prompts: a dataset is then only a haystack), and its run and dependency functions as
``"module:function"`` references, imported on first use (those modules import torch).

``run(ctx)`` receives a :class:`backend.probes.context.ProbeContext` with the ablation applied and the
dependencies' results in ``ctx.deps``; ``dependencies(spec, info)`` returns the RunSpecs to run first,
given the :class:`models.plan.ModelInfo` of the loaded model (layer types from its loaded config).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import NamedTuple

from backend import params as P


class Probe(NamedTuple):
    params: type  # pydantic params class (backend.params)
    version: str
    description: str
    tables: tuple[str, ...]
    run: str  # "module:function"
    dependencies: str | None = None  # "module:function" or None
    makes_inputs: bool = False  # synthetic prompts (NIAH, passkey); data is only the haystack text
    internal: bool = False  # computed as another probe's dependency, not offered to users
    layers: bool = True  # reads the model's layers (types, heads, hooks); False: only its own forward and
    # head, so the empty ablation runs on any causal LM that loads (PLAIN_PROBES)

    def run_function(self) -> Callable:
        return _resolve(self.run)

    def dependency_specs(self, spec, info) -> list:
        return _resolve(self.dependencies)(spec, info) if self.dependencies else []


def _resolve(ref: str) -> Callable:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


_P = "backend.probes."
PROBES: dict[str, Probe] = {
    "token_loss": Probe(
        P.TokenLossParams, "1", "per-token NLL with positions; loss-vs-position buckets",
        ("token_loss", "position_loss"), _P + "token_loss:run", layers=False,
    ),
    "key_tokens": Probe(
        P.KeyTokenParams, "3", "LongPPL key tokens (character spans) chosen by an evaluator",
        ("key_tokens",), _P + "longppl:run_key_tokens", internal=True, layers=False,
    ),
    "longppl": Probe(
        P.LongPPLParams, "3",
        "LongPPL (Fang et al. 2025) and PPL per document; corpus values by both definitions",
        ("longppl", "longppl_corpus", "token_loss", "position_loss"), _P + "longppl:run_longppl",
        _P + "longppl:dependencies", layers=False,
    ),
    "niah": Probe(
        P.NIAHParams, "1", "needle-in-a-haystack / passkey accuracy over length x depth",
        ("niah",), _P + "niah:run", makes_inputs=True, layers=False,
    ),
    "retrieval_heads": Probe(
        P.RetrievalHeadParams, "3", "attention mass from the query onto the needle, per head",
        ("head_scores",), _P + "retrieval_heads:run", makes_inputs=True,
    ),
    "attention_rows": Probe(
        P.AttentionRowParams, "1", "top-k attended keys and entropy for chosen heads/queries",
        ("attention_rows", "head_entropy"), _P + "attention_rows:run",
    ),
    "sweep": Probe(
        P.SweepParams, "5", "LongPPL and PPL vs receptive field k of the full vs the efficient layers",
        ("sweep",), _P + "sweep:run", _P + "sweep:dependencies",
    ),
    "gradient_influence": Probe(
        P.GradientInfluenceParams, "1", "gradient norm of the last positions' logits w.r.t. each input embedding, "
        "binned by distance", ("influence",), _P + "gradient_influence:run",
    ),
    "retrieval_probe": Probe(
        P.RetrievalProbeParams, "2", "logistic-regression probe of the needle's class on each layer's last-token state",
        ("layer_probe",), _P + "retrieval_probe:run", makes_inputs=True,
    ),
    "qk_distance": Probe(
        P.QKDistanceParams, "1", "Q/K weight distance to the final checkpoint over training, per full-attention head",
        ("qk_distance",), _P + "qk_distance:run", makes_inputs=True,
    ),
    "attributions": Probe(
        P.AttributionParams, "1", "Integrated Gradients (captum) of the answer token over the input embeddings",
        ("attributions",), _P + "attributions:run", makes_inputs=True,
    ),
}

USER_PROBES = tuple(name for name, p in PROBES.items() if not p.internal)  # what users may ask for
# the probes that need no adapter knowledge of the model's layers: with the empty ablation they run on any
# causal LM that loads, through its own forward and head (backend.forward)
PLAIN_PROBES = tuple(name for name in USER_PROBES if not PROBES[name].layers)
