"""Apply an :class:`~models.ablation.Ablation` to a model for the duration of a ``with`` block.

    with apply_ablation(model, Ablation.from_text("window[swa]=64;pe[full]=nope")) as plans:
        logits = model(input_ids).logits

Native models (anything exposing ``model_info()``, ``set_plans(plans)`` and ``current_plans()``,
i.e. ``models.modeling.HybridForCausalLM``): the ablation is resolved against
``model.model_info()``, the plans are set, and the plans that were active before are restored
on exit, also when the block raises. Weights are never touched. Other models are delegated to
``models.adapters.adapter_for(model)``, whose ``.info()`` gives the ``ModelInfo`` and whose
``.apply(plans)`` context manager installs and removes the plans.

Nesting is refused: resolving an inner ablation "on top of" an outer one is ambiguous (does an
inner ``window[all]`` override an outer ``rf[full]``?), so a second ``apply_ablation`` on a model
that already has one active raises :class:`~models.ablation.AblationError`. Combine them first
with ``outer.merge(inner)`` and apply the result once. Resolution errors are raised before the
model is changed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from models.ablation import Ablation, AblationError
from models.plan import LayerPlan

_ACTIVE: set[int] = set()  # id() of models inside an apply_ablation block
_LOCK = threading.Lock()


def is_native(model: Any) -> bool:
    """True for models that take plans directly (the native HybridForCausalLM interface)."""
    return all(callable(getattr(model, name, None)) for name in ("model_info", "set_plans", "current_plans"))


@contextmanager
def apply_ablation(model: Any, ablation: Ablation | str | None) -> Iterator[list[LayerPlan]]:
    """Run the ``with`` block with ``ablation`` applied to ``model``; yields the resolved plans.

    ``ablation`` may be an :class:`Ablation`, its text form, or None (= empty ablation). An
    empty ablation still sets the native plans, so the block sees the unmodified model even if
    plans had been changed by hand before.
    """
    if ablation is None:
        ablation = Ablation()
    elif isinstance(ablation, str):
        ablation = Ablation.from_text(ablation)
    elif not isinstance(ablation, Ablation):
        raise AblationError(f"ablation: expected an Ablation, its text form or None, got "
                            f"{type(ablation).__name__}; allowed: Ablation, str, None")
    key = id(model)
    with _LOCK:
        if key in _ACTIVE:
            raise AblationError("ablation: an ablation is already applied to this model; nested "
                                "apply_ablation is not supported; allowed: one apply_ablation(model, "
                                "outer.merge(inner)) instead")
        _ACTIVE.add(key)
    try:
        if is_native(model):
            with _apply_native(model, ablation) as plans:
                yield plans
        else:
            from models.adapters import adapter_for

            adapter = adapter_for(model)
            plans = ablation.resolve(adapter.info())
            with adapter.apply(plans):
                yield plans
    finally:
        with _LOCK:
            _ACTIVE.discard(key)


@contextmanager
def _apply_native(model: Any, ablation: Ablation) -> Iterator[list[LayerPlan]]:
    plans = ablation.resolve(model.model_info())
    previous = list(model.current_plans())
    try:
        model.set_plans(plans)
        yield plans
    finally:
        model.set_plans(previous)
