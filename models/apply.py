"""Apply an :class:`~models.ablation.Ablation` to a model for the duration of a ``with`` block.

    with apply_ablation(model, Ablation.from_text("window[swa]=64;pe[full]=nope")) as plans:
        logits = model(input_ids).logits

The ablation is resolved against ``adapter_for(model).info()`` (resolution errors are raised before
the model changes) and the adapter's ``apply(plans)`` installs the plans and restores the model on
exit, also when the block raises. Weights are never touched. This works the same for the native
family and every HF family with an adapter.

Nesting is refused (by the adapter: one apply per model): resolving an inner ablation "on top of" an
outer one is ambiguous (does an inner ``window[all]`` override an outer ``rf[full]``?), so a second
``apply_ablation`` on a model that already has one active raises :class:`~models.ablation.AblationError`.
Combine them first with ``outer.merge(inner)`` and apply the result once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from models.ablation import Ablation, AblationError
from models.adapters import UnsupportedModel, adapter_for
from models.plan import LayerPlan


def as_ablation(ablation: Ablation | str | None) -> Ablation:
    """An :class:`Ablation` from itself, its text form or None (= the empty ablation)."""
    if ablation is None:
        return Ablation()
    if isinstance(ablation, str):
        return Ablation.from_text(ablation)
    if not isinstance(ablation, Ablation):
        raise AblationError(f"ablation: expected an Ablation, its text form or None, got "
                            f"{type(ablation).__name__}; allowed: Ablation, str, None")
    return ablation


@contextmanager
def apply_ablation(model: Any, ablation: Ablation | str | None) -> Iterator[list[LayerPlan]]:
    """Run the ``with`` block with ``ablation`` applied to ``model``; yields the resolved plans.

    An empty ablation still installs the native plans, so the block sees the unmodified model; on a model
    the adapters do not support (:class:`~models.adapters.UnsupportedModel`) it yields no plans and
    changes nothing, so plain probes run on any causal LM.
    """
    ablation = as_ablation(ablation)
    adapter = adapter_for(model)
    try:
        info = adapter.info()
    except UnsupportedModel:
        if not ablation.is_empty:
            raise
        yield []  # the empty ablation needs no adapter support: the model runs as it is
        return
    plans = ablation.resolve(info)
    with adapter.apply(plans):
        yield plans
