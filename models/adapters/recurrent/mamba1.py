"""Mamba-1 mixers of HF checkpoints (Jamba), windowed.

HF's layout: ``in_proj -> (x, gate z)``; causal conv + activation on x; ``x_proj -> (dt, B, C)``
with Jamba's RMSNorms on each; ``dt = softplus(dt_proj.weight @ dt + dt_proj.bias)``,
``A = -exp(A_log)`` ``[channels, N]``; the selective scan with the ``D`` skip; ``y * silu(z)``;
``out_proj``. Here the scan is :func:`kernels.selective_scan.selective_scan` with ``window``. Mamba-1
has no heads (every channel has its own diagonal state), so head masks do not apply.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.selective_scan import selective_scan
from models.adapters.recurrent.common import causal_conv

TUPLE_OUTPUT = False


def head_dim(module) -> None:
    return None


def forward(module, hidden_states: torch.Tensor, window: int | None) -> torch.Tensor:
    dtype = hidden_states.dtype
    x, gate = module.in_proj(hidden_states).chunk(2, dim=-1)
    x = causal_conv(x, module.conv1d, module.activation)
    n = module.ssm_state_size
    dt, b, c = torch.split(module.x_proj(x), [module.time_step_rank, n, n], dim=-1)
    if hasattr(module, "dt_layernorm"):  # Jamba's extra norms (plain Mamba-1 has none)
        dt, b, c = module.dt_layernorm(dt), module.b_layernorm(b), module.c_layernorm(c)
    dt = (dt @ module.dt_proj.weight.T).float()
    if module.dt_proj.bias is not None:
        dt = dt + module.dt_proj.bias.float()
    y = selective_scan(x, F.softplus(dt), -torch.exp(module.A_log.float()), b, c, D=module.D.float(), window=window)
    y = y.float() * F.silu(gate.float())
    return module.out_proj(y.to(dtype))
