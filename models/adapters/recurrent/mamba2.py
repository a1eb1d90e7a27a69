"""Mamba-2 mixers of HF checkpoints (Bamba, Nemotron-H, Falcon-H1, GraniteMoeHybrid, Zamba2), windowed.

The HF mixers share one layout: ``in_proj -> (gate z, xBC, dt)``; causal conv + activation on xBC ->
``(x, B, C)``; ``dt = clamp(softplus(dt + dt_bias), time_step_limit)``, ``A = -exp(A_log)``; SSD with
the ``D`` skip; gated RMSNorm(y, z) (Falcon-H1 without ``mamba_rms_norm``: ``y * silu(z)``);
``out_proj``. Falcon-H1 also scales the input by ``ssm_in_multiplier`` and the projection by its
``mup_vector``. Here the SSD is :func:`kernels.mamba2.ssd` with ``window``; everything else is the
module's own weights and submodules (its norm, its projections, so head-mask hooks on ``out_proj``
fire as on HF's path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.mamba2 import ssd
from models.adapters.recurrent.common import causal_conv

TUPLE_OUTPUT = False


def head_dim(module) -> int:
    return module.head_dim


def forward(module, hidden_states: torch.Tensor, window: int | None) -> torch.Tensor:
    bsz, length, _ = hidden_states.shape
    dtype = hidden_states.dtype
    scale = getattr(module, "ssm_in_multiplier", None)
    proj = module.in_proj(hidden_states * scale if scale is not None else hidden_states)
    mup = getattr(module, "mup_vector", None)
    if mup is not None:
        proj = proj * mup
    d_inner, heads, gn = module.intermediate_size, module.num_heads, module.n_groups * module.ssm_state_size
    gate, xbc, dt = proj.split([d_inner, module.conv_dim, heads], dim=-1)
    xbc = causal_conv(xbc, module.conv1d, module.activation)
    x, b, c = torch.split(xbc, [d_inner, gn, gn], dim=-1)
    lo, hi = module.time_step_limit
    dt = torch.clamp(F.softplus(dt + module.dt_bias.to(dt.dtype)), min=lo, max=hi)
    y, _ = ssd(
        x.reshape(bsz, length, heads, module.head_dim).float(), dt, -torch.exp(module.A_log.float()),
        b.reshape(bsz, length, module.n_groups, -1), c.reshape(bsz, length, module.n_groups, -1), D=module.D,
        chunk_size=module.chunk_size, window=window,
    )
    y = y.reshape(bsz, length, d_inner)
    y = module.norm(y, gate) if getattr(module, "mamba_rms_norm", True) else y * F.silu(gate)
    return module.out_proj(y.to(dtype))
