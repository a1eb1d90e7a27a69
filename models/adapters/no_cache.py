"""The one rule for HybridScope's forwards of HF models: no KV cache.

An HF decoder called without ``use_cache`` takes ``config.use_cache`` (True in most checkpoints) and keeps
every attention layer's k / v in a ``DynamicCache`` for the whole call: at 131,072 tokens in bf16 that is
256 MiB per layer of a 16-layer Qwen3 (4 GiB), as much again as the forward itself. HybridScope's probes
run whole sequences once and never decode from a cache, so inside ``adapter.apply(...)`` and
``adapter.capture(...)`` (``models.adapters.base``) and in ``own_logits`` every forward of the model and of
its decoder runs with ``use_cache=False`` unless the caller asks for a cache: a call that passes
``use_cache`` or ``past_key_values`` itself (``generate``, a KV-cache decoding step) is left as it is.
Outputs are unchanged (the cache is only kept, never read, in a full-sequence forward); only
``past_key_values`` of the output is None.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterable

from torch import nn

NOWHERE = sys.maxsize  # the position of an argument that cannot be passed positionally


def _positions(module: nn.Module) -> tuple[int, int] | None:
    """(position of ``use_cache``, position of ``past_key_values``) among the positional parameters of
    ``module.forward`` (:data:`NOWHERE` when keyword-only or absent), or None when the forward takes no
    ``use_cache`` at all (neither by name nor through ``**kwargs``)."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    names = {p.name for p in params}
    if "use_cache" not in names and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    positional = [p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                        inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    return tuple(positional.index(n) if n in positional else NOWHERE for n in ("use_cache", "past_key_values"))


def _hook(use_at: int, past_at: int):
    def pre_hook(module, args, kwargs):
        if len(args) > min(use_at, past_at) or kwargs.get("use_cache") is not None or (
                kwargs.get("past_key_values") is not None):
            return None  # the caller decided (or decodes from its own cache): left as it is
        return args, {**kwargs, "use_cache": False}

    return pre_hook


def no_kv_cache(stack: contextlib.ExitStack, modules: Iterable[nn.Module]) -> None:
    """Until ``stack`` closes, calls of each of ``modules`` (the model, its decoder) that do not pass
    ``use_cache`` or ``past_key_values`` run with ``use_cache=False``; a module whose forward takes no
    ``use_cache`` is left alone."""
    seen: set[int] = set()
    for module in modules:
        if id(module) in seen:
            continue
        seen.add(id(module))
        at = _positions(module)
        if at is not None:
            stack.callback(module.register_forward_pre_hook(_hook(*at), with_kwargs=True).remove)
