"""What the recurrent handlers share: the causal depthwise short convolution of HF mixers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN


def causal_conv(x: torch.Tensor, conv: nn.Conv1d, activation: str | None) -> torch.Tensor:
    """``x [B, L, C]`` through ``conv`` (depthwise, kernel K, causal: the output at t reads t-K+1..t)
    and ``activation`` (None = none), as HF's ``causal_conv1d_fn`` reference; returns [B, L, C]."""
    length = x.shape[1]
    out = F.conv1d(x.transpose(1, 2).to(conv.weight.dtype), conv.weight, conv.bias,
                   padding=conv.weight.shape[-1] - 1, groups=x.shape[-1])[..., :length]
    if activation is not None:
        out = ACT2FN[activation](out)
    return out.to(x.dtype).transpose(1, 2)
