"""Small building blocks of the native hybrid model: norms, SwiGLU MLP, RoPE, short convolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """``x / rms(x) * weight`` over the last dimension, computed in float32, returned in x's dtype."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type):
            # torch's fused kernel: one pass instead of six elementwise ops, the same float32 values
            # (tests/models/test_layers.py compares it with rms_norm_reference)
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return rms_norm_reference(x, self.weight, self.eps)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The formula: float32 ``x * rsqrt(mean(x^2) + eps)``, then the weight (in x's dtype for float32)."""
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return (weight * x.to(dtype)) if dtype == torch.float32 else (weight * x).to(dtype)


class GatedRMSNorm(nn.Module):
    """RMSNorm with a SiLU gate ``z`` over groups of ``group_size`` channels of the last dimension.

    ``norm_before_gate=False`` (Mamba-2): ``rmsnorm(x * silu(z)) * weight``.
    ``norm_before_gate=True``  (Gated DeltaNet): ``rmsnorm(x) * weight * silu(z)``.
    """

    def __init__(self, dim: int, group_size: int, eps: float = 1e-6, norm_before_gate: bool = False) -> None:
        super().__init__()
        if dim % group_size != 0:
            raise ValueError(f"group_size: must divide dim ({dim}), got {group_size}")
        self.eps, self.group_size, self.norm_before_gate = eps, group_size, norm_before_gate
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x, z = x.float(), z.float()
        if not self.norm_before_gate:
            x = x * F.silu(z)
        shape = x.shape
        xg = x.reshape(*shape[:-1], shape[-1] // self.group_size, self.group_size)
        xg = xg * torch.rsqrt(xg.pow(2).mean(-1, keepdim=True) + self.eps)
        x = xg.reshape(shape) * self.weight.float()
        if self.norm_before_gate:
            x = x * F.silu(z)
        return x.to(dtype)


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``, no biases."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [L, head_dim] for integer ``positions`` [L] (computed in float32).

    Frequencies ``theta ** (-2j / head_dim)`` for j < head_dim/2, duplicated over both halves
    (the "rotate_half" convention of Llama/Qwen).
    """
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    )
    freqs = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` (the textbook form, kept as the reference)."""
    return x * cos + rotate_half(x) * sin


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [B, H, L, D] by the position tables ``cos``/``sin`` [L, D]. (NoPE: don't call it.)

    The reference formula computed per half (``[x1 c1 - x2 s1, x2 c2 + x1 s2]``): the same float
    operations on each element, so bit-identical to :func:`apply_rotary_reference`, with half-size
    temporaries and no negated copy.
    """
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos[..., :h] - x2 * sin[..., :h], x2 * cos[..., h:] + x1 * sin[..., h:]], dim=-1)


class ShortConv(nn.Module):
    """Causal depthwise conv1d of width ``kernel_size`` followed by SiLU, on [B, L, C].

    Output at position t depends on inputs t-kernel_size+1 .. t only (left zero padding).
    Parameters: ``weight`` [C, 1, kernel_size], ``bias`` [C].
    """

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L, C = x.shape[1], x.shape[2]
        y = F.conv1d(x.transpose(1, 2), self.weight, self.bias, padding=self.kernel_size - 1, groups=C)
        return F.silu(y[..., :L]).transpose(1, 2)
