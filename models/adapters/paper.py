"""The paper's own checkpoints (Qiao et al.): remote-code hybrids whose config exposes two evaluation
knobs, ``eval_sliding_window`` (None = off) and ``eval_attention_sink_size``, read by their own modeling
code at forward time. They window the full-attention layers (all alike) and keep the first
``eval_attention_sink_size`` tokens visible to them, which is HybridScope's ``rf[full]=k;sinks=n`` (or
``window[full]=k;sinks=n``) where the model has no sliding layers (HybridScope's sinks apply to every
windowed layer, so with sliding layers only ``sinks=0`` maps exactly).

:class:`PaperAdapter` (chosen for a remote-code config, i.e. a class transformers does not ship, with
``eval_sliding_window`` and no adapter of its own for its model type) maps window / sinks ablations onto
those knobs inside ``apply()`` and restores them after; an ablation that windows no full-attention layer
leaves them as config.json has them, so the empty ablation is the checkpoint's own forward. The model's
own code does the windowing, so nothing depends on how it computes attention. A window change the knobs
cannot express (another window per full layer, a sliding layer's window) is refused with one line from the
config alone (:meth:`PaperAdapter.check_plans_for`, before weights load); ``pe`` / ``skip_layers`` /
``mask_heads`` use the generic HF hooks. A built-in transformers class whose config merely carries the
knobs gets the generic adapter (its code ignores them). Remote code is loaded only with
``HYBRIDSCOPE_TRUST_REMOTE_CODE=1`` (``backend/model_support.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from models.adapters.base import UnsupportedModel
from models.adapters.hf import HFAdapter
from models.plan import FULL, LayerPlan, ModelInfo

WINDOW_KNOB, SINKS_KNOB = "eval_sliding_window", "eval_attention_sink_size"


REMOTE_MODULES = "transformers_modules"  # where transformers puts the classes of a checkpoint's own code


def has_knobs(config) -> bool:
    """A remote-code config (its class defined by the checkpoint's own code) with the evaluation knobs."""
    return hasattr(config, WINDOW_KNOB) and type(config).__module__.split(".")[0] == REMOTE_MODULES


class PaperAdapter(HFAdapter):
    family = "paper checkpoint"

    @classmethod
    def kernel_gaps(cls, config) -> list[str]:
        return []  # windows go through the checkpoint's own knobs, not HybridScope's kernel

    @classmethod
    def check_plans_for(cls, config, info: ModelInfo, plans: Sequence[LayerPlan]) -> None:
        cls.knobs(plans, info)

    @classmethod
    def knobs(cls, plans: Sequence[LayerPlan], info: ModelInfo) -> tuple[int | None, int]:
        """(eval_sliding_window, eval_attention_sink_size) expressing ``plans``' windows, or UnsupportedModel."""
        full = {(p.window, p.sinks) for p in plans if p.kind == FULL}
        others = [i for i, p in enumerate(plans) if p.kind != FULL and p.is_attention and p.window != info.windows[i]]
        if not others and any(p.sinks for p in plans if p.kind != FULL):
            raise UnsupportedModel(
                f"ablation.sinks: this {cls.family}'s {SINKS_KNOB} keeps sinks for its windowed full-attention "
                "layers only, while HybridScope's sinks apply to every windowed layer (its sliding layers too); "
                "allowed here: sinks=0, or sinks on a checkpoint without sliding layers"
            )
        if len(full) > 1 or others:
            raise UnsupportedModel(
                f"ablation: this {cls.family} windows attention only through its config's {WINDOW_KNOB} / "
                f"{SINKS_KNOB}, i.e. every full-attention layer alike; allowed: rf[full]=k or window[full]=k "
                "(with sinks), pe, skip_layers, mask_heads"
            )
        window, sinks = full.pop() if full else (None, 0)
        return window, sinks if window is not None else 0

    def _apply(self, plans: Sequence[LayerPlan], info: ModelInfo, stack: contextlib.ExitStack,
               force_kernel: bool = False) -> None:
        if force_kernel:
            raise UnsupportedModel(f"force_kernel: this {self.family} computes attention in its own code; "
                                   "allowed: False")
        window, sinks = self.knobs(plans, info)
        configs = [c for c in self.configs() if has_knobs(c)] or [self.config]
        for cfg in configs if window is not None else ():  # full layers as loaded: knobs as config.json has them
            stack.callback(setattr, cfg, WINDOW_KNOB, getattr(cfg, WINDOW_KNOB))
            stack.callback(setattr, cfg, SINKS_KNOB, getattr(cfg, SINKS_KNOB, 0))
            setattr(cfg, WINDOW_KNOB, window)
            setattr(cfg, SINKS_KNOB, sinks)
        self._install_hooks(plans, info, stack)
