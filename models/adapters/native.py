"""The native family's adapter (``model_type = "hybridscope"``, :mod:`models.modeling`).

The native mixers obey a ``plan`` attribute at forward time and record capture points themselves
(their ``_capture`` attribute); this adapter is the only code that sets either. Layer types,
windows and PE come from the loaded :class:`~models.config.HybridConfig`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from torch import nn

from models.adapters.base import ModelAdapter, register
from models.capture import Capture
from models.plan import ATTENTION_KINDS, LayerPlan, ModelInfo


@register
class NativeAdapter(ModelAdapter):
    model_types = ("hybridscope",)
    family = "HybridScope"

    def layers(self) -> nn.ModuleList:
        return self.model.model.layers

    def mixer(self, i: int) -> nn.Module:
        return self.layers()[i].mixer

    def attention_module(self, i: int) -> nn.Module:
        if self.config.layer_types[i] not in ATTENTION_KINDS:
            raise ValueError(f"layer: {i} is {self.config.layer_types[i]}, not an attention layer")
        return self.mixer(i)

    def decoder(self) -> nn.Module:
        return self.model.model

    @classmethod
    def info_for(cls, config) -> ModelInfo:
        c = config
        n = c.num_hidden_layers
        return ModelInfo(
            layer_types=tuple(c.layer_types),
            num_heads=tuple(
                c.num_attention_heads if c.layer_types[i] in ATTENTION_KINDS else c.linear_num_heads
                for i in range(n)
            ),
            windows=tuple(c.window_of(i) for i in range(n)),
            pe=tuple(c.pe_of(i) for i in range(n)),
            conv_kernel=c.conv_kernel,
        )

    def _apply(self, plans: Sequence[LayerPlan], info: ModelInfo, stack: contextlib.ExitStack) -> None:
        mixers = [self.mixer(i) for i in range(info.num_layers)]
        previous = [m.plan for m in mixers]

        def restore() -> None:
            for m, p in zip(mixers, previous, strict=True):
                m.plan = p

        stack.callback(restore)
        for m, p in zip(mixers, plans, strict=True):
            m.plan = p

    def _capture(self, cap: Capture, stack: contextlib.ExitStack) -> None:
        for i in cap.layers:
            mixer = self.mixer(i)
            mixer._capture = cap
            stack.callback(setattr, mixer, "_capture", None)
