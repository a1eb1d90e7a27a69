"""Gated DeltaNet (fla conventions): a step-by-step reference, chunked and windowed torch paths, fla.

Per batch and head, with the state ``S`` stored as ``[Dk, Dv]`` (fla layout)::

    S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ      (α_t = exp(g_t))
    o_t = S_tᵀ (scale · q_t)

Layouts: ``q, k [B, L, H, Dk]`` (callers L2-normalise them), ``v [B, L, H, Dv]``, ``g [B, L, H]``
(log decay, <= 0), ``beta [B, L, H]`` in (0, 1); ``scale`` defaults to ``Dk ** -0.5``; states
``[B, H, Dk, Dv]``. ``window=k`` means ``o_t`` uses only inputs in ``[t-k+1, t]`` (state zero just
before). Torch paths compute in float32 and return ``o`` in ``q``'s dtype; states are float32.

Since ``M_t = α_t (I − β_t k_t k_tᵀ)`` does not depend on the state, the recurrence is linear in
the inputs ``β_s k_s v_sᵀ``: ``S_t = Σ_s M_t⋯M_{s+1} β_s k_s v_sᵀ`` (+ ``M_t⋯M_1 S_0``). The
chunked and windowed paths rest on that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels import fla_available
from kernels.mamba2 import check_window

BACKENDS = ("auto", "recurrent", "chunked", "fla")


def _check(q, k, v, g, beta, initial_state, window) -> None:
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(
            f"q and k must both be [batch, seq, heads, dk], got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    b, length, h, dk = q.shape
    if v.dim() != 4 or tuple(v.shape[:3]) != (b, length, h):
        raise ValueError(f"v must be [{b}, {length}, {h}, dv], got {tuple(v.shape)}")
    for name, t in (("g", g), ("beta", beta)):
        if tuple(t.shape) != (b, length, h):
            raise ValueError(f"{name} must have shape {(b, length, h)}, got {tuple(t.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (b, h, dk, v.shape[3]):
        raise ValueError(
            f"initial_state must have shape {(b, h, dk, v.shape[3])}, got {tuple(initial_state.shape)}"
        )
    check_window(window)
    if window is not None and initial_state is not None:
        raise ValueError("initial_state must be None when window is set (the window restarts the state)")


def _f32(*ts):
    return tuple(t.float() for t in ts)


def gdn_recurrent(q, k, v, g, beta, scale=None, initial_state=None, window=None):
    """Step-by-step reference. Returns ``(o, final_state)``; windowed: literal restart per ``t``
    (``final_state`` None)."""
    _check(q, k, v, g, beta, initial_state, window)
    b, length, h, dk = q.shape
    scale = dk**-0.5 if scale is None else scale
    qf, kf, vf, gf, bf = _f32(q, k, v, g, beta)
    zero = qf.new_zeros(b, h, dk, v.shape[3])

    def step(state, s):
        state = torch.exp(gf[:, s])[..., None, None] * state
        kt = kf[:, s]  # [B, H, Dk]
        delta = bf[:, s, :, None] * (vf[:, s] - (state * kt[..., None]).sum(-2))  # [B, H, Dv]
        return state + kt[..., None] * delta[..., None, :]

    def read(state, t):
        return (state * (scale * qf[:, t])[..., None]).sum(-2)

    outs = []
    if window is None:
        state = zero if initial_state is None else initial_state.float()
        for t in range(length):
            state = step(state, t)
            outs.append(read(state, t))
        final = state
    else:
        for t in range(length):
            state = zero
            for s in range(max(0, t - window + 1), t + 1):
                state = step(state, s)
            outs.append(read(state, t))
        final = None
    return torch.stack(outs, dim=1).to(q.dtype), final


def _chunk_terms(q, k, v, g, beta):
    """Chunk-local UT-transform terms; inputs ``[..., C, D]`` / ``[..., C]`` float32.

    With ``γ = cumsum(g)``, ``Γ[t,j] = exp(γ_t − γ_j)`` (j <= t) and
    ``A[t,j] = β_t (k_t·k_j) Γ[t,j]`` (j < t), ``T = (I + A)⁻¹``. For a state ``S0`` entering the
    chunk, the delta-rule updates are ``U = U0 − W S0`` with ``U0 = T (β v)``, ``W = T (β e^γ k)``;
    outputs are ``scale (Aqk U + e^γ q S0)`` with ``Aqk = (q kᵀ) ⊙ Γ``; the state leaving is
    ``e^{γ_C} S0 + Kdᵀ U`` with ``Kd = e^{γ_C − γ} k``.
    """
    c = g.shape[-1]
    gam = torch.cumsum(g, dim=-1)
    incl = torch.tril(torch.ones(c, c, dtype=torch.bool, device=g.device))
    gamma = torch.exp((gam[..., :, None] - gam[..., None, :]).masked_fill(~incl, float("-inf")))
    strict = torch.tril(incl, -1)
    a = (beta[..., :, None] * (k @ k.transpose(-1, -2)) * gamma).masked_fill(~strict, 0.0)
    eye = torch.eye(c, dtype=g.dtype, device=g.device)
    t_inv = torch.linalg.solve_triangular(eye + a, eye.expand_as(a), upper=False, unitriangular=True)
    u0 = t_inv @ (beta[..., None] * v)
    w = t_inv @ ((beta * torch.exp(gam))[..., None] * k)
    aqk = (q @ k.transpose(-1, -2)) * gamma
    kd = torch.exp(gam[..., -1:] - gam)[..., None] * k
    return {"gam": gam, "t_inv": t_inv, "u0": u0, "w": w, "aqk": aqk, "kd": kd}


def _scan(terms, q, state, scale):
    """Carry ``state [..., Dk, Dv]`` through the chunk axis (dim -3 of q); returns (o, state).

    Chunk ``c`` maps the state entering it affinely, ``S -> M_c S + X_c`` with
    ``M_c = e^{γ_C} I - Kdᵀ W`` and ``X_c = Kdᵀ U0`` (from ``U = U0 - W S``). The prefix compositions
    of these maps come from a log-depth (Hillis-Steele) scan, ``(M_i, X_i) ∘ (M_j, X_j) =
    (M_i M_j, M_i X_j + X_i)``, so every chunk's entering state is known without a loop over chunks;
    the outputs then follow in one batched step.
    """
    gam, w, u0, kd = terms["gam"], terms["w"], terms["u0"], terms["kd"]
    kdt = kd.transpose(-1, -2)
    eye = torch.eye(w.shape[-1], dtype=w.dtype, device=w.device)
    m = torch.exp(gam[..., -1])[..., None, None] * eye - kdt @ w  # [..., n, Dk, Dk]
    x = kdt @ u0  # [..., n, Dk, Dv]
    n, d = m.shape[-3], 1
    while d < n:  # inclusive prefix: afterwards (m[i], x[i]) = map of chunks 0..i
        m_cur = m[..., d:, :, :]
        x = torch.cat([x[..., :d, :, :], m_cur @ x[..., :-d, :, :] + x[..., d:, :, :]], dim=-3)
        m = torch.cat([m[..., :d, :, :], m_cur @ m[..., :-d, :, :]], dim=-3)
        d *= 2
    after = m @ state.unsqueeze(-3) + x  # state leaving each chunk [..., n, Dk, Dv]
    entering = torch.cat([state.unsqueeze(-3).expand_as(after[..., :1, :, :]), after[..., :-1, :, :]], dim=-3)
    v_new = u0 - w @ entering
    o = scale * ((torch.exp(gam)[..., None] * q) @ entering + terms["aqk"] @ v_new)
    return o, after[..., -1, :, :]


def _pad_seq(ts, pad: int, dim: int = 1):
    """Zero-pad along ``dim`` at the end: g = 0 and beta = 0 make padded steps the identity."""
    if pad == 0:
        return ts
    return tuple(F.pad(t, (0, 0) * (t.dim() - dim - 1) + (0, pad)) for t in ts)


def _bhn(t: torch.Tensor, chunk: int) -> torch.Tensor:
    """[B, L, H, ...] -> [B, H, L // chunk, chunk, ...]."""
    b, length, h = t.shape[:3]
    return t.reshape(b, length // chunk, chunk, h, *t.shape[3:]).movedim(3, 1)


def gdn_chunked(q, k, v, g, beta, scale=None, initial_state=None, chunk_size=64):
    """Chunked gated delta rule (WY / UT-transform form). Returns ``(o, final_state)``."""
    _check(q, k, v, g, beta, initial_state, None)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    b, length, h, dk = q.shape
    scale = dk**-0.5 if scale is None else scale
    ts = _pad_seq(_f32(q, k, v, g, beta), (-length) % chunk_size)
    qc, kc, vc, gc, bc = (_bhn(t, chunk_size) for t in ts)
    terms = _chunk_terms(qc, kc, vc, gc, bc)
    state = qc.new_zeros(b, h, dk, v.shape[3]) if initial_state is None else initial_state.float()
    o, state = _scan(terms, qc, state, scale)  # o [B, H, n, C, Dv]
    o = o.movedim(1, 3).reshape(b, -1, h, v.shape[3])[:, :length]
    return o.to(q.dtype), state


def _shift_prev(t: torch.Tensor, dim: int) -> torch.Tensor:
    """out[i] = t[i-1] along ``dim``, zeros at i = 0."""
    first = torch.zeros_like(t.narrow(dim, 0, 1))
    return torch.cat([first, t.narrow(dim, 0, t.shape[dim] - 1)], dim=dim)


def gdn_windowed(q, k, v, g, beta, scale=None, window=None, chunk_size=64):
    """Exact receptive field ``window = w``: ``o_t`` = output of the recurrence restarted (zero
    state) at ``t-w+1``. Returns ``o``; equals :func:`gdn_recurrent` with ``window=w``.

    Scheme (all terms additive, nothing is subtracted). Split the sequence into blocks of ``w``
    positions. For ``t = b·w + i`` the window starts at ``(b-1)·w + i + 1``, i.e. it is the whole
    block ``b`` up to ``t`` plus the suffix ``j > i`` (local index) of block ``b-1``. By linearity::

        S_t^win = S_t^(block b from zero) + P_{t←bw} Σ_{j>i} κ_j v_jᵀ

    * term 1: the chunked recurrence run inside each block with the state restarted at the block
      start (blocks are batched; sub-chunks of ``C = min(chunk_size, w)``).
    * term 2: ``r_t = scale · P_{t←bw}ᵀ q_t`` (q pulled back through the in-block transition
      product) against ``κ_j = P_{end of block b-1 ← j} β_j k_j`` (key of the previous block pushed
      to that block's end). Both come from the chunk-local UT terms and per-sub-chunk transitions
      ``E = e^{γ_C} I − Kdᵀ W`` through prefix products ``Π`` (current block) and suffix products
      ``Ψ`` (previous block). Then ``o_t += r_t · (Σ_{j in same sub-chunk, j>i} κ_j v_jᵀ + G)``
      where ``G`` is the reverse cumulative sum of ``κᵀ V`` over the later sub-chunks.

    Cost ``O(L·(C·(Dk+Dv) + Dk·Dv + Dk²) + (L/C)·Dk²·(Dk+Dv))``, independent of ``w``; memory is
    that of the chunked path plus one ``Dk×Dk`` matrix per sub-chunk.
    """
    _check(q, k, v, g, beta, None, window)
    if window is None:
        raise ValueError("window must be an int >= 1 for gdn_windowed, got None")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    b, length, h, dk = q.shape
    dv = v.shape[3]
    scale = dk**-0.5 if scale is None else scale
    w_len = min(window, length)  # a window >= L never restarts: one block
    c = min(chunk_size, w_len)
    nb = -(-length // w_len)
    nc = -(-w_len // c)
    ts = _pad_seq(_f32(q, k, v, g, beta), nb * w_len - length)
    # [B, nb*w, H, ...] -> [B, nb, w, H, ...] -> pad each block to nc*c -> [B, H, nb, nc, c, ...]
    ts = _pad_seq(tuple(t.reshape(b, nb, w_len, *t.shape[2:]) for t in ts), nc * c - w_len, dim=2)
    qc, kc, vc, gc, bc = (t.reshape(b, nb, nc, c, *t.shape[3:]).movedim(4, 1) for t in ts)
    terms = _chunk_terms(qc, kc, vc, gc, bc)

    # term 1: in-block recurrence from a zero state at each block start
    o1, _ = _scan(terms, qc, qc.new_zeros(b, h, nb, dk, dv), scale)  # [B, H, nb, nc, c, Dv]

    # per-sub-chunk transition E, read-out map R (o = scale R S_in) and end-of-chunk keys K
    gam = terms["gam"]
    eye = torch.eye(dk, dtype=qc.dtype, device=qc.device)
    trans = torch.exp(gam[..., -1])[..., None, None] * eye - terms["kd"].transpose(-1, -2) @ terms["w"]
    r_loc = torch.exp(gam)[..., None] * qc - terms["aqk"] @ terms["w"]
    k_loc = bc[..., None] * (terms["t_inv"].transpose(-1, -2) @ terms["kd"])
    prefix = [eye.expand_as(trans[..., 0, :, :])]  # Π_c = E_{c-1}⋯E_0
    suffix = [eye.expand_as(trans[..., 0, :, :])]  # Ψ_c = E_{nc-1}⋯E_{c+1}, built backwards
    for i in range(1, nc):
        prefix.append(trans[..., i - 1, :, :] @ prefix[-1])
        suffix.append(suffix[-1] @ trans[..., nc - i, :, :])
    r_glob = r_loc @ torch.stack(prefix, dim=-3)  # rows r_tᵀ / scale
    k_glob = k_loc @ torch.stack(suffix[::-1], dim=-3).transpose(-1, -2)  # rows κ_jᵀ
    z = k_glob.transpose(-1, -2) @ vc  # [B, H, nb, nc, Dk, Dv]
    g_incl = z.flip(-3).cumsum(-3).flip(-3)
    g_after = torch.cat([g_incl[..., 1:, :, :], torch.zeros_like(g_incl[..., :1, :, :])], dim=-3)

    # term 2: previous block's suffix, seen through this block's transition products
    k_prev, v_prev, g_prev = (_shift_prev(t, dim=2) for t in (k_glob, vc, g_after))
    upper = torch.triu(torch.ones(c, c, dtype=torch.bool, device=qc.device), 1)
    band = (r_glob @ k_prev.transpose(-1, -2)).masked_fill(~upper, 0.0) @ v_prev
    o = o1 + scale * (band + r_glob @ g_prev)

    o = o.reshape(b, h, nb, nc * c, dv)[:, :, :, :w_len].reshape(b, h, nb * w_len, dv)[:, :, :length]
    return o.transpose(1, 2).to(q.dtype)


def gdn_fla(q, k, v, g, beta, scale=None, initial_state=None, window=None):
    """CUDA path via ``fla.ops.gated_delta_rule.chunk_gated_delta_rule`` (imported lazily).

    fla takes ``[B, T, H, D]`` inputs (not head-first), log-space ``g``, state ``[B, H, K, V]``,
    and ``scale=None`` -> ``K ** -0.5`` like here. ``g`` is passed as float32. ``window`` falls back
    to :func:`gdn_windowed` (torch, on the same device). Returns ``(o, final_state)``.
    """
    _check(q, k, v, g, beta, initial_state, window)
    if not q.is_cuda:
        raise ValueError(f"gdn_fla needs CUDA tensors, got device {q.device}; use backend='chunked'")
    if window is not None:
        return gdn_windowed(q, k, v, g, beta, scale=scale, window=window), None
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    scale = q.shape[-1] ** -0.5 if scale is None else scale
    o, ht = chunk_gated_delta_rule(
        q=q.contiguous(), k=k.contiguous(), v=v.contiguous(), g=g.float().contiguous(),
        beta=beta.to(q.dtype).contiguous(), scale=scale,
        initial_state=None if initial_state is None else initial_state.float().contiguous(),
        output_final_state=True,
    )
    return o.to(q.dtype), ht.float()


def gdn(q, k, v, g, beta, scale=None, initial_state=None, window=None, chunk_size=64, backend="auto"):
    """Dispatch. ``auto`` = fla on CUDA (when installed), chunked otherwise; ``recurrent``/``chunked``/``fla`` force.

    With ``window`` the chunked backend is :func:`gdn_windowed` and ``final_state`` is None.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "fla" if q.is_cuda and fla_available() else "chunked"
    if backend == "recurrent":
        return gdn_recurrent(q, k, v, g, beta, scale, initial_state, window)
    if backend == "fla":
        return gdn_fla(q, k, v, g, beta, scale, initial_state, window)
    if window is not None:
        _check(q, k, v, g, beta, initial_state, window)
        return gdn_windowed(q, k, v, g, beta, scale, window, chunk_size), None
    return gdn_chunked(q, k, v, g, beta, scale, initial_state, chunk_size)
