"""Gated short convolutions of HF checkpoints (LFM2).

``in_proj -> (B, C, x)``; ``y = C * conv(B * x)`` (causal depthwise, width K = ``conv_L_cache``);
``out_proj``. There is no state beyond the convolution: the output at t reads only t-K+1..t, so every
receptive field k >= K (the only ones allowed: :func:`models.plan.recurrence_window`) leaves the
layer exactly as it is; ``window`` is accepted and needs no change to the computation.
"""

from __future__ import annotations

import torch

from models.adapters.recurrent.common import causal_conv

TUPLE_OUTPUT = False


def head_dim(module) -> None:
    return None


def forward(module, hidden_states: torch.Tensor, window: int | None) -> torch.Tensor:
    if window is not None and window < 1:
        raise ValueError(f"window: must be >= 1, got {window}")
    b, c, x = module.in_proj(hidden_states).chunk(3, dim=-1)
    return module.out_proj(c * causal_conv(b * x, module.conv, None))
