"""Softmax attention mixer of the native hybrid (full and sliding-window layers share this class).

What the layer does at forward time is set by its ``plan`` (:class:`models.plan.LayerPlan`), never by
the weights: ``plan.window`` (None = full causal), ``plan.sinks``, ``plan.pe`` ("nope" skips RoPE),
``plan.skip`` and ``plan.masked_heads``. The native plan reproduces the configured model.
"""

from __future__ import annotations

import torch
from torch import nn

from kernels.attention import attention
from models.config import HybridConfig
from models.layers import RMSNorm, apply_rotary
from models.plan import LayerPlan


def mask_heads(x: torch.Tensor, heads: tuple[int, ...], dim: int) -> torch.Tensor:
    """Return ``x`` with the given head indices along ``dim`` set to exactly zero (out of place)."""
    if not heads:
        return x
    idx = torch.tensor(sorted(heads), device=x.device, dtype=torch.long)
    return x.index_fill(dim, idx, 0.0)


class HybridAttention(nn.Module):
    """GQA attention with optional per-head q/k RMSNorm (Qwen3 style) and RoPE.

    q_proj: hidden -> Hq*D, k_proj/v_proj: hidden -> Hkv*D, o_proj: Hq*D -> hidden (no biases).
    Capture points: "q"/"k" [B, H, L, D] after qk-norm and RoPE (k before GQA expansion),
    "mixer_out" [B, L, hidden].
    """

    def __init__(self, config: HybridConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.kind = config.layer_types[layer_idx]
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.hidden_size = config.hidden_size
        self.backend = config.attn_backend
        d = self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * d, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * d, bias=False)
        self.o_proj = nn.Linear(self.num_heads * d, config.hidden_size, bias=False)
        if config.qk_norm:
            self.q_norm = RMSNorm(d, config.rms_norm_eps)
            self.k_norm = RMSNorm(d, config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None
        self.plan = LayerPlan(kind=self.kind, window=config.window_of(layer_idx), pe=config.pe_of(layer_idx))
        self._capture = None  # set by models.capture.capture(); None = no capture, zero cost

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [B, L, hidden], cos/sin [L, head_dim] -> [B, L, hidden]."""
        plan, cap = self.plan, self._capture
        B, L, _ = x.shape
        if plan.skip:
            out = x.new_zeros(B, L, self.hidden_size)
            if cap is not None:
                cap.record(self.layer_idx, "mixer_out", out)
            return out
        q = self.q_proj(x).view(B, L, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(B, L, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, L, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, L, D]
        if plan.pe != "nope":
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cap is not None:
            cap.record(self.layer_idx, "q", q)
            cap.record(self.layer_idx, "k", k)
        q, k = q.to(v.dtype), k.to(v.dtype)  # under autocast the fp32 qk-norm would leave q/k fp32, v bf16
        o = attention(q, k, v, window=plan.window, sinks=plan.sinks, backend=self.backend)  # [B, Hq, L, D]
        o = mask_heads(o, plan.masked_heads, dim=1)
        out = self.o_proj(o.transpose(1, 2).reshape(B, L, self.num_heads * self.head_dim))
        if cap is not None:
            cap.record(self.layer_idx, "mixer_out", out)
        return out
