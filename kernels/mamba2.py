"""Mamba-2 SSD core (scalar decay per head): a step-by-step reference, a chunked torch path, fla.

Recurrence, per batch b and head h (state ``h_t`` is ``[P, N]``)::

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t ⊗ B_t
    y_t = h_t · C_t + D * x_t

Layouts: ``x [B, L, H, P]``, ``dt [B, L, H]`` (already softplus'ed, > 0), ``A [H]`` (< 0),
``Bm``/``Cm [B, L, G, N]`` with ``H % G == 0`` (head h reads group ``h // (H // G)``), ``D [H]`` or
None, states ``[B, H, P, N]``.

``window=k`` restricts the receptive field: ``y_t`` uses only inputs ``s`` in ``[t-k+1, t]`` (as if
the state were zero just before ``t-k+1``). Windowed calls return ``final_state=None`` and do not
accept an ``initial_state``.

The torch paths compute in float32 and return ``y`` in ``x``'s dtype; final states are float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels import fla_available

BACKENDS = ("auto", "recurrent", "chunked", "fla")


def _check(x, dt, A, Bm, Cm, D, initial_state, window) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be [batch, seq, heads, headdim], got shape {tuple(x.shape)}")
    b, length, h, p = x.shape
    if tuple(dt.shape) != (b, length, h):
        raise ValueError(f"dt must have shape {(b, length, h)}, got {tuple(dt.shape)}")
    if tuple(A.shape) != (h,):
        raise ValueError(f"A must have shape ({h},), got {tuple(A.shape)}")
    for name, t in (("Bm", Bm), ("Cm", Cm)):
        if t.dim() != 4 or tuple(t.shape[:2]) != (b, length):
            raise ValueError(f"{name} must be [{b}, {length}, groups, state], got {tuple(t.shape)}")
    if Bm.shape != Cm.shape:
        raise ValueError(f"Bm and Cm must have the same shape, got {tuple(Bm.shape)} and {tuple(Cm.shape)}")
    if h % Bm.shape[2] != 0:
        raise ValueError(f"heads ({h}) must be a multiple of groups ({Bm.shape[2]})")
    if D is not None and tuple(D.shape) != (h,):
        raise ValueError(f"D must have shape ({h},) or be None, got {tuple(D.shape)}")
    n = Bm.shape[3]
    if initial_state is not None and tuple(initial_state.shape) != (b, h, p, n):
        raise ValueError(f"initial_state must have shape {(b, h, p, n)}, got {tuple(initial_state.shape)}")
    check_window(window)
    if window is not None and initial_state is not None:
        raise ValueError("initial_state must be None when window is set (the window restarts the state)")


def check_window(window) -> None:
    """Raise unless ``window`` is None or a positive int."""
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise ValueError(f"window must be None or an int >= 1, got {window!r}")


def _heads(t: torch.Tensor, h: int) -> torch.Tensor:
    """[B, L, G, N] -> [B, L, H, N] float32, head h reading group h // (H // G)."""
    return t.float().repeat_interleave(h // t.shape[2], dim=2)


def _prepare(x, dt, A, Bm, Cm):
    h = x.shape[2]
    dtf = dt.float()
    a = dtf * A.float()  # log decay per step [B, L, H]
    u = x.float() * dtf[..., None]  # dt * x [B, L, H, P]
    return a, u, _heads(Bm, h), _heads(Cm, h)


def _finish(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    if D is not None:
        y = y + D.float()[:, None] * x.float()
    return y.to(x.dtype)


def ssd_recurrent(x, dt, A, Bm, Cm, D=None, initial_state=None, window=None):
    """Step-by-step reference. Returns ``(y, final_state)``; windowed: literal restart per ``t``."""
    _check(x, dt, A, Bm, Cm, D, initial_state, window)
    b, length, h, p = x.shape
    a, u, bh, ch = _prepare(x, dt, A, Bm, Cm)
    zero = x.new_zeros(b, h, p, bh.shape[-1], dtype=torch.float32)

    def step(state, s):
        return torch.exp(a[:, s])[..., None, None] * state + u[:, s, :, :, None] * bh[:, s, :, None, :]

    ys = []
    if window is None:
        state = zero if initial_state is None else initial_state.float()
        for t in range(length):
            state = step(state, t)
            ys.append((state * ch[:, t, :, None, :]).sum(-1))
        final = state
    else:
        for t in range(length):
            state = zero
            for s in range(max(0, t - window + 1), t + 1):
                state = step(state, s)
            ys.append((state * ch[:, t, :, None, :]).sum(-1))
        final = None
    return _finish(torch.stack(ys, dim=1), x, D), final


def segsum(a: torch.Tensor) -> torch.Tensor:
    """``out[..., i, j] = sum(a[..., j+1 : i+1])`` for ``j <= i``, ``-inf`` above the diagonal.

    Built by masked cumulative sums (no difference of large prefix sums), so ``exp(segsum(a))``
    is the stable lower-triangular decay matrix.
    """
    t = a.shape[-1]
    rep = a[..., :, None].expand(*a.shape, t)  # rep[..., i, j] = a_i
    strict = torch.tril(torch.ones(t, t, dtype=torch.bool, device=a.device), -1)
    out = torch.cumsum(rep.masked_fill(~strict, 0.0), dim=-2)
    incl = torch.tril(torch.ones(t, t, dtype=torch.bool, device=a.device))
    return out.masked_fill(~incl, float("-inf"))


def _to_chunks(t: torch.Tensor, chunk: int) -> torch.Tensor:
    """[B, L, H, ...] (L a multiple of chunk) -> [B, H, n, chunk, ...]."""
    b, length, h = t.shape[:3]
    t = t.reshape(b, length // chunk, chunk, h, *t.shape[3:])
    return t.movedim(3, 1)


def ssd_chunked(x, dt, A, Bm, Cm, D=None, initial_state=None, chunk_size=64, window=None):
    """Chunked SSD in pure torch. Returns ``(y, final_state)`` (``final_state`` None when windowed).

    Unwindowed: per chunk, the intra-chunk quadratic form ``(C Bᵀ ⊙ exp(segsum(a))) (dt x)``, plus
    the state carried in from earlier chunks (all chunk states at once through a decay matrix over chunks).
    Windowed: :func:`_ssd_window_band`.
    """
    _check(x, dt, A, Bm, Cm, D, initial_state, window)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    a, u, bh, ch = _prepare(x, dt, A, Bm, Cm)
    if window is not None:
        return _finish(_ssd_window_band(a, u, bh, ch, window, chunk_size), x, D), None
    b, length, h, p = x.shape
    pad = (-length) % chunk_size
    if pad:  # dt = 0 on padding: decay 1 and no input, so the state passes through unchanged
        a, u, bh, ch = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (a, u, bh, ch))
    a_c = _to_chunks(a, chunk_size)  # [B, H, n, Q]
    u_c, b_c, c_c = (_to_chunks(t, chunk_size) for t in (u, bh, ch))  # [B, H, n, Q, P|N]
    acs = torch.cumsum(a_c, dim=-1)
    scores = (c_c @ b_c.transpose(-1, -2)) * torch.exp(segsum(a_c))
    y_diag = scores @ u_c  # [B, H, n, Q, P]
    decay_to_end = torch.exp(acs[..., -1:] - acs)  # [B, H, n, Q]
    chunk_states = (u_c * decay_to_end[..., None]).transpose(-1, -2) @ b_c  # [B, H, n, P, N]
    init = (
        x.new_zeros(b, h, 1, p, bh.shape[-1], dtype=torch.float32)
        if initial_state is None
        else initial_state.float()[:, :, None]
    )
    # states entering each chunk, all at once: S_c = sum_{j<c} exp(A_{j+1..c-1}) chunk_states_j
    # + exp(A_{0..c-1}) S_init, i.e. a lower-triangular decay matrix over chunks (no loop)
    states = torch.cat([init, chunk_states], dim=2)  # [B, H, n + 1, P, N]
    decay_chunk = torch.exp(segsum(F.pad(acs[..., -1], (1, 0))))  # [B, H, n + 1, n + 1]
    states = torch.einsum("bhzc,bhcpn->bhzpn", decay_chunk, states)
    state = states[:, :, -1]
    y_off = torch.exp(acs)[..., None] * (c_c @ states[:, :, :-1].transpose(-1, -2))  # [B, H, n, Q, P]
    y = y_diag + y_off
    y = y.movedim(1, 3).reshape(b, length + pad, h, p)[:, :length]
    return _finish(y, x, D), state


def _ssd_window_band(a, u, bh, ch, window: int, block: int) -> torch.Tensor:
    """Exact band-limited SSD: ``y_t = Σ_{s=max(0,t-k+1)}^{t} (C_t·B_s) exp(Σ_{r=s+1}^{t} a_r) u_s``.

    Queries are processed in blocks of ``block`` positions against keys ``[q0-k+1, q1)``, so each
    block holds a ``block × (k + block)`` matrix per head. Decay exponents are ``qoff[t] + koff[s]``
    with ``qoff[t] = Σ_{r=q0+1}^{t} a_r`` and, for keys ``s <= q0``, ``koff[s] = Σ_{r=s+1}^{q0} a_r``
    (both <= 0, no cancellation); keys inside the block use ``-qoff[s]``. Positions outside the
    band are set to ``-inf`` before ``exp``. Returns float32 ``[B, L, H, P]`` (no ``D`` term).
    """
    length = a.shape[1]
    outs = []
    for q0 in range(0, length, block):
        q1 = min(q0 + block, length)
        s0 = max(0, q0 - window + 1)
        zero = a.new_zeros(a.shape[0], 1, a.shape[2])
        qoff = torch.cat([zero, torch.cumsum(a[:, q0 + 1 : q1], dim=1)], dim=1)  # [B, nq, H]
        before = a[:, s0 + 1 : q0 + 1].flip(1).cumsum(1).flip(1)  # keys s0..q0-1
        koff = torch.cat([before, -qoff], dim=1)  # keys s0..q1-1: [B, nk, H]
        expo = qoff[:, :, None, :] + koff[:, None, :, :]  # [B, nq, nk, H]
        t_pos = torch.arange(q0, q1, device=a.device)[:, None]
        s_pos = torch.arange(s0, q1, device=a.device)[None, :]
        band = (s_pos <= t_pos) & (t_pos - s_pos < window)
        decay = torch.exp(expo.masked_fill(~band[None, :, :, None], float("-inf")))
        scores = torch.einsum("bthn,bshn->bhts", ch[:, q0:q1], bh[:, s0:q1]) * decay.permute(0, 3, 1, 2)
        outs.append(torch.einsum("bhts,bshp->bthp", scores, u[:, s0:q1]))
    return torch.cat(outs, dim=1)


def ssd_fla(x, dt, A, Bm, Cm, D=None, initial_state=None, chunk_size=64, window=None):
    """CUDA path via ``fla.ops.simple_gla.chunk_simple_gla`` (imported lazily).

    Mamba-2 SSD is simple GLA per head with ``q=C``, ``k=B``, ``v=x*dt``, ``g=dt*A`` and
    ``scale=1``; fla's state is ``[B, H, K=N, V=P]``, transposed here to ``[B, H, P, N]``.
    ``chunk_size`` is ignored (fla picks its own). ``window`` falls back to :func:`ssd_chunked`.
    """
    _check(x, dt, A, Bm, Cm, D, initial_state, window)
    if not x.is_cuda:
        raise ValueError(f"ssd_fla needs CUDA tensors, got device {x.device}; use backend='chunked'")
    if window is not None:
        return ssd_chunked(x, dt, A, Bm, Cm, D, None, chunk_size, window)
    from fla.ops.simple_gla import chunk_simple_gla

    h = x.shape[2]
    dtf = dt.float()
    q = Cm.repeat_interleave(h // Cm.shape[2], dim=2).to(x.dtype)
    k = Bm.repeat_interleave(h // Bm.shape[2], dim=2).to(x.dtype)
    v = (x.float() * dtf[..., None]).to(x.dtype)
    g = (dtf * A.float()).contiguous()
    h0 = None if initial_state is None else initial_state.float().transpose(-1, -2).contiguous()
    o, ht = chunk_simple_gla(
        q=q.contiguous(), k=k.contiguous(), v=v.contiguous(), g=g, scale=1.0,
        initial_state=h0, output_final_state=True,
    )
    return _finish(o.float(), x, D), ht.float().transpose(-1, -2)


def ssd(x, dt, A, Bm, Cm, D=None, initial_state=None, chunk_size=64, window=None, backend="auto"):
    """Dispatch: ``auto`` = fla on CUDA (when installed), chunked otherwise; or force
    ``recurrent``/``chunked``/``fla``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "fla" if x.is_cuda and fla_available() else "chunked"
    if backend == "recurrent":
        return ssd_recurrent(x, dt, A, Bm, Cm, D, initial_state, window)
    if backend == "fla":
        return ssd_fla(x, dt, A, Bm, Cm, D, initial_state, chunk_size, window)
    return ssd_chunked(x, dt, A, Bm, Cm, D, initial_state, chunk_size, window)
