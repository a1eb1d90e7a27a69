"""Lightning attention of HF checkpoints (MiniMax), windowed.

HF's layout: ``act(qkv_proj)`` -> per head q, k, v; ``o_t = Σ_{s<=t} exp(-slope_h (t-s)) (q_t·k_s) v_s``
(``slope_rate`` per head, computed in blocks by HF); RMSNorm over all heads; ``sigmoid(output_gate(x))``
gate; ``out_proj``. Here the linear attention is :func:`kernels.lightning.lightning` with ``window``.
The module returns ``(output, None)`` like HF's (which returns its KV state second).
"""

from __future__ import annotations

import torch

from kernels.lightning import lightning

TUPLE_OUTPUT = True


def head_dim(module) -> int:
    return module.head_dim


def forward(module, hidden_states: torch.Tensor, window: int | None) -> torch.Tensor:
    bsz, length, _ = hidden_states.shape
    heads, dim = module.num_attention_heads, module.head_dim
    qkv = module.act_fn(module.qkv_proj(hidden_states)).reshape(bsz, length, heads, 3 * dim)
    q, k, v = torch.split(qkv, dim, dim=3)
    o = lightning(q, k, v, module.slope_rate.reshape(heads), window=window, chunk_size=module.block_size)
    o = module.norm(o.reshape(bsz, length, heads * dim))
    return module.out_proj(torch.sigmoid(module.output_gate(hidden_states)) * o)
