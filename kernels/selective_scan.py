"""Mamba-1 selective scan (a diagonal state per channel): a step-by-step reference and a log-depth scan
path, both with exact receptive-field windows.

Recurrence, per batch b and channel d (state ``h_t`` is ``[N]``)::

    h_t = exp(dt_t * A_d) ⊙ h_{t-1} + dt_t * x_t * B_t
    y_t = C_t · h_t + D_d * x_t

Layouts: ``x [B, L, D]``, ``dt [B, L, D]`` (already softplus'ed, > 0), ``A [D, N]`` (< 0),
``Bm``/``Cm [B, L, N]`` (shared by every channel, as in Mamba-1 / Jamba), ``D [D]`` or None.

``window=k`` restricts the receptive field: ``y_t`` uses only inputs ``s`` in ``[t-k+1, t]`` (as if
the state were zero just before ``t-k+1``). The torch paths compute in float32 and return ``y`` in
``x``'s dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.mamba2 import check_window


def _check(x, dt, A, Bm, Cm, D, window) -> None:
    if x.dim() != 3:
        raise ValueError(f"x must be [batch, seq, channels], got shape {tuple(x.shape)}")
    b, length, d = x.shape
    if tuple(dt.shape) != (b, length, d):
        raise ValueError(f"dt must have shape {(b, length, d)}, got {tuple(dt.shape)}")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must have shape ({d}, state), got {tuple(A.shape)}")
    n = A.shape[1]
    for name, t in (("Bm", Bm), ("Cm", Cm)):
        if tuple(t.shape) != (b, length, n):
            raise ValueError(f"{name} must have shape {(b, length, n)}, got {tuple(t.shape)}")
    if D is not None and tuple(D.shape) != (d,):
        raise ValueError(f"D must have shape ({d},) or be None, got {tuple(D.shape)}")
    check_window(window)


def _finish(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    if D is not None:
        y = y + D.float() * x.float()
    return y.to(x.dtype)


def selective_scan_recurrent(x, dt, A, Bm, Cm, D=None, window=None):
    """Step-by-step reference. Returns ``y``; windowed: a literal restart of the state for every ``t``."""
    _check(x, dt, A, Bm, Cm, D, window)
    b, length, d = x.shape
    xf, dtf, af, bf, cf = x.float(), dt.float(), A.float(), Bm.float(), Cm.float()
    zero = xf.new_zeros(b, d, af.shape[1])

    def step(state, s):
        decay = torch.exp(dtf[:, s, :, None] * af)  # [B, D, N]
        return decay * state + (dtf[:, s] * xf[:, s])[..., None] * bf[:, s, None, :]

    ys = []
    state = zero
    for t in range(length):
        if window is None:
            state = step(state, t)
        else:
            state = zero
            for s in range(max(0, t - window + 1), t + 1):
                state = step(state, s)
        ys.append((state * cf[:, t, None, :]).sum(-1))
    return _finish(torch.stack(ys, dim=1), x, D)


def _inclusive_scan(a: torch.Tensor, u: torch.Tensor, dim: int) -> torch.Tensor:
    """``h_i = a_i h_{i-1} + u_i`` from ``h_{-1} = 0`` along ``dim``, by a log-depth (Hillis-Steele) scan
    of the affine maps ``h -> a h + u``: decays are only ever multiplied (no division, no log-space
    differences), so nothing overflows."""
    n, step = a.shape[dim], 1
    while step < n:
        a_hi, a_lo = a.narrow(dim, step, n - step), a.narrow(dim, 0, n - step)
        u = torch.cat([u.narrow(dim, 0, step), a_hi * u.narrow(dim, 0, n - step) + u.narrow(dim, step, n - step)], dim)
        a = torch.cat([a.narrow(dim, 0, step), a_hi * a_lo], dim)
        step *= 2
    return u


def _scan_slab(a: torch.Tensor, u: torch.Tensor, c: torch.Tensor, w: int) -> torch.Tensor:
    """Windowed states read out by ``c``; ``a``/``u`` ``[B, L, d, N]`` with L a multiple of ``w``,
    ``c [B, L, N]``; returns ``[B, L, d]``.

    Blocks of ``w`` positions. For ``t = b·w + i`` the window is the whole block ``b`` up to ``t`` plus
    the suffix ``j > i`` of block ``b-1``, so (the recurrence being linear and diagonal)::

        h_t^win = H_t + P_t ⊙ R_i^(b-1)

    with ``H_t`` the state of block ``b`` restarted from zero at its start, ``P_t = Π_{r=bw}^{t} a_r``
    and ``R_i = Σ_{j>i} (Π_{r=j+1}^{w-1} a_r) u_j`` (the previous block's suffix carried to its end).
    """
    bsz, length, d, n = a.shape
    nb = length // w
    a, u = a.reshape(bsz, nb, w, d, n), u.reshape(bsz, nb, w, d, n)
    h = _inclusive_scan(a, u, dim=2)
    if nb > 1:
        a_next = torch.cat([a[:, :, 1:], torch.ones_like(a[:, :, :1])], dim=2)  # a_{j+1}, 1 at the block end
        to_end = a_next.flip(2).cumprod(2).flip(2)  # Π_{r=j+1}^{w-1} a_r
        suffix = (to_end * u).flip(2).cumsum(2).flip(2)  # Σ_{j'>=j}
        suffix = torch.cat([suffix[:, :, 1:], torch.zeros_like(suffix[:, :, :1])], dim=2)  # Σ_{j'>j}
        prev = torch.cat([torch.zeros_like(suffix[:, :1]), suffix[:, :-1]], dim=1)  # block b-1's, at block b
        h = h + a.cumprod(2) * prev
    return torch.einsum("blwdn,blwn->blwd", h, c.reshape(bsz, nb, w, n)).reshape(bsz, length, d)


def selective_scan(x, dt, A, Bm, Cm, D=None, window=None, channel_block=None):
    """Scan path: exact, ``O(L log w)`` depth, no loop over positions. Returns ``y`` (float32 maths).

    The ``[B, L, channels, N]`` discretised terms are built for ``channel_block`` channels at a time
    (default: about 2**24 elements per slab), so memory stays bounded for wide models.
    """
    _check(x, dt, A, Bm, Cm, D, window)
    b, length, d = x.shape
    n = A.shape[1]
    w = length if window is None else min(window, length)
    pad = (-length) % w  # dt = 0 on padding: decay 1 and no input (padding is at the end: nothing reads it)
    dtf, xf, bf, cf = (F.pad(t.float(), (0, 0, 0, pad)) for t in (dt, x, Bm, Cm))
    if channel_block is None:
        channel_block = max(1, (1 << 24) // max(1, b * (length + pad) * n))
    outs = []
    for lo in range(0, d, channel_block):
        hi = min(lo + channel_block, d)
        dts = dtf[:, :, lo:hi, None]
        a = torch.exp(dts * A[lo:hi].float())  # [B, L, d, N]
        u = (dts * xf[:, :, lo:hi, None]) * bf[:, :, None, :]
        outs.append(_scan_slab(a, u, cf, w))
    y = torch.cat(outs, dim=2)[:, :length]
    return _finish(y, x, D)
