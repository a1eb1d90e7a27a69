"""Lightning attention (MiniMax): linear attention with a constant decay per head; a step-by-step
reference and the chunked / windowed paths of :mod:`kernels.mamba2`.

Recurrence, per batch and head (state ``S`` is ``[Dk, Dv]``)::

    S_t = exp(-slope) S_{t-1} + k_t v_tᵀ
    o_t = S_tᵀ q_t                      (no softmax, no scale)

i.e. ``o_t = Σ_{s<=t} exp(-slope (t-s)) (q_t·k_s) v_s``. That is Mamba-2's SSD with one group per
head, ``C = q``, ``B = k``, ``x = v``, ``dt = 1`` and ``A = -slope``, so the fast paths are
:func:`kernels.mamba2.ssd` (chunked torch, fla on CUDA; ``window`` -> the exact band path).

Layouts: ``q, k [B, L, H, Dk]``, ``v [B, L, H, Dv]``, ``slope [H]`` (> 0). ``window=k`` means ``o_t``
uses only inputs in ``[t-k+1, t]``. Outputs are in ``v``'s dtype (float32 maths on the torch paths).
"""

from __future__ import annotations

import torch

from kernels.mamba2 import check_window, ssd


def _check(q, k, v, slope, window) -> None:
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"q and k must both be [batch, seq, heads, dk], got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.dim() != 4 or tuple(v.shape[:3]) != tuple(q.shape[:3]):
        raise ValueError(f"v must be [{', '.join(map(str, q.shape[:3]))}, dv], got {tuple(v.shape)}")
    if tuple(slope.shape) != (q.shape[2],):
        raise ValueError(f"slope must have shape ({q.shape[2]},), got {tuple(slope.shape)}")
    check_window(window)


def lightning_recurrent(q, k, v, slope, window=None):
    """Step-by-step reference; windowed: a literal restart of the state for every ``t``."""
    _check(q, k, v, slope, window)
    b, length, h, dk = q.shape
    qf, kf, vf = q.float(), k.float(), v.float()
    decay = torch.exp(-slope.float())[None, :, None, None]
    zero = qf.new_zeros(b, h, dk, v.shape[3])

    def step(state, s):
        return decay * state + kf[:, s, :, :, None] * vf[:, s, :, None, :]

    outs, state = [], zero
    for t in range(length):
        if window is None:
            state = step(state, t)
        else:
            state = zero
            for s in range(max(0, t - window + 1), t + 1):
                state = step(state, s)
        outs.append((state * qf[:, t, :, :, None]).sum(-2))
    return torch.stack(outs, dim=1).to(v.dtype)


def lightning(q, k, v, slope, window=None, chunk_size=64, backend="auto"):
    """Fast path through :func:`kernels.mamba2.ssd` (see the module docstring)."""
    _check(q, k, v, slope, window)
    dt = torch.ones(q.shape[:3], dtype=torch.float32, device=q.device)
    y, _ = ssd(v, dt, -slope.float(), k, q, D=None, chunk_size=chunk_size, window=window, backend=backend)
    return y
