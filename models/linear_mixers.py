"""Recurrent mixers of the native hybrid: Mamba-2 and Gated DeltaNet.

Both run a causal depthwise short convolution of width K = ``config.conv_kernel`` on their inputs
before the recurrence, and obey their ``plan`` (:class:`models.plan.LayerPlan`) at forward time:

* ``plan.skip``: return zeros [B, L, hidden] without computing anything.
* ``plan.masked_heads``: those heads' outputs are zeroed right before the output projection (after
  the gated norm), i.e. exactly like zeroing the matching input columns of ``out_proj``/``o_proj``.
* ``plan.receptive_field = k``: nothing older than k tokens influences the output. The output at t
  must depend only on inputs t-k+1 .. t. The short conv output at s already reads inputs
  s-K+1 .. s, so the recurrence runs with window ``w = k - (K - 1)`` (it reads conv outputs
  t-w+1 .. t, as if its state were zero at t-w; :func:`models.plan.recurrence_window`, which
  refuses k < K). The per-token gates
  (dt / a / b projections) and the output gate z are pointwise in time, so they add nothing older.
  The kernels' dispatchers run the windowed paths: ``kernels.mamba2.ssd_chunked(window=w)`` and
  ``kernels.gated_deltanet.gdn_windowed(window=w)`` (``*_recurrent(window=w)`` with the
  "recurrent" backend). ``plan.sinks`` does not apply to recurrent layers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from kernels.gated_deltanet import gdn
from kernels.mamba2 import ssd
from models.attention_mixer import mask_heads
from models.config import HybridConfig
from models.layers import GatedRMSNorm, ShortConv
from models.plan import LayerPlan, recurrence_window


def init_decay_params(A_log: torch.Tensor, dt_bias: torch.Tensor, dt_min: float = 1e-3, dt_max: float = 0.1):
    """Mamba-2 init: A ~ U[1, 16] (A_log = log A); dt ~ logU[dt_min, dt_max], dt_bias = softplus^-1(dt)."""
    H = A_log.shape[0]
    A = torch.empty(H, dtype=torch.float32).uniform_(1.0, 16.0)
    init.copy_(A_log, torch.log(A))
    dt = torch.exp(torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=1e-4)
    init.copy_(dt_bias, dt + torch.log(-torch.expm1(-dt)))


class Mamba2Mixer(nn.Module):
    """Mamba-2: in_proj -> (z, xBC, dt); ShortConv(xBC) -> (x, B, C); SSD; gated RMSNorm(y, z); out_proj.

    Shapes: H = linear_num_heads heads of P = linear_head_dim channels (d_inner = H*P); B and C have
    mamba_n_groups groups of N = mamba_state_size. dt = softplus(dt_raw + dt_bias), A = -exp(A_log),
    D skip per head. Capture point: "mixer_out" [B, L, hidden].
    """

    def __init__(self, config: HybridConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.hidden_size = config.hidden_size
        self.num_heads, self.head_dim = config.linear_num_heads, config.linear_head_dim
        self.n_groups, self.state_size = config.mamba_n_groups, config.mamba_state_size
        self.conv_kernel = config.conv_kernel
        self.chunk_size = config.chunk_size
        self.backend = config.linear_backend
        self.d_inner = self.num_heads * self.head_dim
        self.conv_dim = self.d_inner + 2 * self.n_groups * self.state_size
        self.in_proj = nn.Linear(
            config.hidden_size, self.d_inner + self.conv_dim + self.num_heads, bias=False
        )
        self.conv = ShortConv(self.conv_dim, config.conv_kernel)
        self.A_log = nn.Parameter(torch.zeros(self.num_heads))
        self.dt_bias = nn.Parameter(torch.zeros(self.num_heads))
        self.D = nn.Parameter(torch.ones(self.num_heads))
        self.norm = GatedRMSNorm(self.d_inner, self.d_inner // self.n_groups, config.rms_norm_eps, False)
        self.out_proj = nn.Linear(self.d_inner, config.hidden_size, bias=False)
        self.plan = LayerPlan(kind=config.layer_types[layer_idx])
        self._capture = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None = None, sin: torch.Tensor | None = None):
        """x [B, L, hidden] -> [B, L, hidden] (cos/sin are accepted for a uniform mixer call and ignored)."""
        plan, cap = self.plan, self._capture
        Bsz, L, _ = x.shape
        if plan.skip:
            out = x.new_zeros(Bsz, L, self.hidden_size)
        else:
            window = recurrence_window(plan.receptive_field, self.conv_kernel)
            z, xBC, dt = torch.split(self.in_proj(x), [self.d_inner, self.conv_dim, self.num_heads], dim=-1)
            xBC = self.conv(xBC)
            gn = self.n_groups * self.state_size
            xs, Bm, Cm = torch.split(xBC, [self.d_inner, gn, gn], dim=-1)
            xs = xs.reshape(Bsz, L, self.num_heads, self.head_dim)
            Bm = Bm.reshape(Bsz, L, self.n_groups, self.state_size)
            Cm = Cm.reshape(Bsz, L, self.n_groups, self.state_size)
            dt = F.softplus(dt.float() + self.dt_bias.float())
            A = -torch.exp(self.A_log.float())
            # ssd() routes window=w to ssd_chunked (or ssd_recurrent with the "recurrent" backend)
            y, _ = ssd(
                xs, dt, A, Bm, Cm, D=self.D, chunk_size=self.chunk_size, window=window, backend=self.backend
            )
            y = self.norm(y.reshape(Bsz, L, self.d_inner).to(x.dtype), z)
            y = mask_heads(y.view(Bsz, L, self.num_heads, self.head_dim), plan.masked_heads, dim=2)
            out = self.out_proj(y.reshape(Bsz, L, self.d_inner))
        if cap is not None:
            cap.record(self.layer_idx, "mixer_out", out)
        return out


class GatedDeltaNetMixer(nn.Module):
    """Gated DeltaNet block (fla / Qwen3-Next layout, one key head per value head).

    q/k/v projections, each through its own ShortConv (SiLU); q and k L2-normalised per head;
    beta = sigmoid(b_proj(x)); g = -exp(A_log) * softplus(a_proj(x) + dt_bias) (log decay <= 0);
    o = GDN(q, k, v, g, beta) with scale Dk**-0.5; per-head RMSNorm(o) * silu(g_proj(x)); o_proj.
    H = linear_num_heads, Dk = linear_key_dim, Dv = linear_head_dim. Capture point: "mixer_out".
    """

    def __init__(self, config: HybridConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.hidden_size = config.hidden_size
        self.num_heads = config.linear_num_heads
        self.key_dim, self.value_dim = config.linear_key_dim, config.linear_head_dim
        self.conv_kernel = config.conv_kernel
        self.chunk_size = config.chunk_size
        self.backend = config.linear_backend
        H, dk, dv, hs = self.num_heads, self.key_dim, self.value_dim, config.hidden_size
        self.q_proj = nn.Linear(hs, H * dk, bias=False)
        self.k_proj = nn.Linear(hs, H * dk, bias=False)
        self.v_proj = nn.Linear(hs, H * dv, bias=False)
        self.q_conv = ShortConv(H * dk, config.conv_kernel)
        self.k_conv = ShortConv(H * dk, config.conv_kernel)
        self.v_conv = ShortConv(H * dv, config.conv_kernel)
        self.a_proj = nn.Linear(hs, H, bias=False)
        self.b_proj = nn.Linear(hs, H, bias=False)
        self.A_log = nn.Parameter(torch.zeros(H))
        self.dt_bias = nn.Parameter(torch.zeros(H))
        self.g_proj = nn.Linear(hs, H * dv, bias=False)
        self.o_norm = GatedRMSNorm(dv, dv, config.rms_norm_eps, norm_before_gate=True)
        self.o_proj = nn.Linear(H * dv, hs, bias=False)
        self.plan = LayerPlan(kind=config.layer_types[layer_idx])
        self._capture = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None = None, sin: torch.Tensor | None = None):
        """x [B, L, hidden] -> [B, L, hidden] (cos/sin are accepted for a uniform mixer call and ignored)."""
        plan, cap = self.plan, self._capture
        Bsz, L, _ = x.shape
        H, dk, dv = self.num_heads, self.key_dim, self.value_dim
        if plan.skip:
            out = x.new_zeros(Bsz, L, self.hidden_size)
        else:
            window = recurrence_window(plan.receptive_field, self.conv_kernel)
            q = F.normalize(self.q_conv(self.q_proj(x)).view(Bsz, L, H, dk), p=2, dim=-1, eps=1e-6)
            k = F.normalize(self.k_conv(self.k_proj(x)).view(Bsz, L, H, dk), p=2, dim=-1, eps=1e-6)
            v = self.v_conv(self.v_proj(x)).view(Bsz, L, H, dv)
            beta = torch.sigmoid(self.b_proj(x))
            g = -torch.exp(self.A_log.float()) * F.softplus(self.a_proj(x).float() + self.dt_bias)
            # gdn() routes window=w to gdn_windowed (or gdn_recurrent with the "recurrent" backend)
            o, _ = gdn(
                q,
                k,
                v,
                g,
                beta,
                scale=dk**-0.5,
                window=window,
                chunk_size=self.chunk_size,
                backend=self.backend,
            )
            o = self.o_norm(o.to(x.dtype), self.g_proj(x).view(Bsz, L, H, dv))
            o = mask_heads(o, plan.masked_heads, dim=2)
            out = self.o_proj(o.reshape(Bsz, L, H * dv))
        if cap is not None:
            cap.record(self.layer_idx, "mixer_out", out)
        return out
