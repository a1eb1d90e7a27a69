"""Gated DeltaNet mixers of HF checkpoints (Qwen3-Next), windowed.

HF's layout: ``in_proj_qkvz`` / ``in_proj_ba`` (the module's own ``fix_query_key_value_ordering``
splits them); causal conv + activation on ``[q, k, v]``; q / k L2-normalised per head as HF does
(``x * rsqrt(Σx² + 1e-6)``) and repeated to the value heads; ``beta = sigmoid(b)``,
``g = -exp(A_log) * softplus(a + dt_bias)``; the gated delta rule with scale ``Dk**-0.5``; the
per-head gated RMSNorm(o, z); ``out_proj``. Here the delta rule is :func:`kernels.gated_deltanet.gdn`
with ``window``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.gated_deltanet import gdn
from models.adapters.recurrent.common import causal_conv

TUPLE_OUTPUT = False


def head_dim(module) -> int:
    return module.head_v_dim


def _l2norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + 1e-6)


def forward(module, hidden_states: torch.Tensor, window: int | None) -> torch.Tensor:
    bsz, length, _ = hidden_states.shape
    q, k, v, z, b, a = module.fix_query_key_value_ordering(
        module.in_proj_qkvz(hidden_states), module.in_proj_ba(hidden_states)
    )
    mixed = torch.cat([t.reshape(bsz, length, -1) for t in (q, k, v)], dim=-1)
    mixed = causal_conv(mixed, module.conv1d, module.activation)
    q, k, v = torch.split(mixed, [module.key_dim, module.key_dim, module.value_dim], dim=-1)
    q = q.reshape(bsz, length, -1, module.head_k_dim)
    k = k.reshape(bsz, length, -1, module.head_k_dim)
    v = v.reshape(bsz, length, -1, module.head_v_dim)
    beta = b.sigmoid()
    g = -module.A_log.float().exp() * F.softplus(a.float() + module.dt_bias)
    rep = module.num_v_heads // module.num_k_heads
    if rep > 1:
        q, k = q.repeat_interleave(rep, dim=2), k.repeat_interleave(rep, dim=2)
    o, _ = gdn(_l2norm(q.float()), _l2norm(k.float()), v.float(), g, beta.float(),
               scale=module.head_k_dim**-0.5, window=window)
    o = module.norm(o.to(hidden_states.dtype).reshape(-1, module.head_v_dim), z.reshape(-1, module.head_v_dim))
    return module.out_proj(o.reshape(bsz, length, -1))
