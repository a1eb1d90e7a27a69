"""Gated DeltaNet: chunked (UT form) and windowed torch paths against the step-by-step reference."""

import pytest
import torch
import torch.nn.functional as F

from kernels.gated_deltanet import gdn, gdn_chunked, gdn_fla, gdn_recurrent, gdn_windowed

B, H, DK, DV = 2, 2, 8, 12


def make_inputs(length, seed=0, device="cpu", dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen)

    q = F.normalize(rnd(B, length, H, DK), dim=-1)
    k = F.normalize(rnd(B, length, H, DK), dim=-1)
    v = rnd(B, length, H, DV)
    g = F.logsigmoid(rnd(B, length, H) + 2.0)  # log α in (-inf, 0), mostly mild decay
    beta = torch.sigmoid(rnd(B, length, H))
    return [t.to(device=device, dtype=dtype) for t in (q, k, v, g, beta)]


def close(actual, expected, rtol=1e-5):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * expected.abs().max().item())


# 300 / 8: 38 chunks, 6 levels of the log-depth scan
@pytest.mark.parametrize("length,chunk", [(37, 16), (64, 16), (50, 8), (5, 16), (96, 32), (300, 8)])
def test_chunked_matches_recurrent(length, chunk):
    inputs = make_inputs(length, seed=length)
    s0 = torch.randn(B, H, DK, DV, generator=torch.Generator().manual_seed(2))
    for init in (None, s0):
        o_ref, s_ref = gdn_recurrent(*inputs, initial_state=init)
        o, s = gdn_chunked(*inputs, initial_state=init, chunk_size=chunk)
        close(o, o_ref)
        close(s, s_ref)


def test_custom_scale_and_strong_gates():
    q, k, v, g, beta = make_inputs(33, seed=9)
    g = g * 8.0  # strong decay
    beta = beta.clamp(0.9, 0.999)
    o_ref, s_ref = gdn_recurrent(q, k, v, g, beta, scale=0.7)
    o, s = gdn_chunked(q, k, v, g, beta, scale=0.7, chunk_size=16)
    close(o, o_ref)
    close(s, s_ref)


def test_gradients_match_recurrent():
    inputs = make_inputs(29, seed=3)
    s0 = torch.randn(B, H, DK, DV, generator=torch.Generator().manual_seed(4))
    grads = []
    for fn in (gdn_recurrent, lambda *a, **kw: gdn_chunked(*a, chunk_size=8, **kw)):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        o, s = fn(*leaves, initial_state=s0)
        w = torch.randn(o.shape, generator=torch.Generator().manual_seed(5))
        ((o * w).sum() + s.square().sum()).backward()
        grads.append([t.grad for t in leaves])
    for name, g_ref, g in zip(("q", "k", "v", "g", "beta"), grads[0], grads[1], strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-4 * g_ref.abs().max().item(), msg=name)


@pytest.mark.parametrize("window", [1, 3, 8, 13, 16, 40, 60, 200])
@pytest.mark.parametrize("length,chunk", [(60, 16), (37, 8)])
def test_windowed_matches_literal_restart(window, length, chunk):
    inputs = make_inputs(length, seed=window)
    o_ref, s_ref = gdn_recurrent(*inputs, window=window)
    o = gdn_windowed(*inputs, window=window, chunk_size=chunk)
    assert s_ref is None
    close(o, o_ref)
    if window >= length:
        close(o, gdn_chunked(*inputs, chunk_size=chunk)[0])


def test_windowed_gradients_match_literal_restart():
    inputs = make_inputs(26, seed=6)
    grads = []
    for fn in (
        lambda *a: gdn_recurrent(*a, window=7)[0],
        lambda *a: gdn_windowed(*a, window=7, chunk_size=4),
    ):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        o = fn(*leaves)
        (o * torch.randn(o.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
        grads.append([t.grad for t in leaves])
    for name, g_ref, g in zip(("q", "k", "v", "g", "beta"), grads[0], grads[1], strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-4 * g_ref.abs().max().item(), msg=name)


@pytest.mark.parametrize("window", [1, 6, 20])
def test_receptive_field_is_exact(window):
    length, t = 48, 41
    inputs = make_inputs(length, seed=12)
    o = gdn_windowed(*inputs, window=window, chunk_size=8)
    start = t - window + 1
    for idx in (1, 2, 3, 4):  # k, v, g, beta (q only acts at t itself)
        old = [u.clone() for u in inputs]
        bump = torch.rand(old[idx][:, :start].shape, generator=torch.Generator().manual_seed(idx))
        head = old[idx][:, :start]
        old[idx][:, :start] = head - 0.5 * bump if idx == 3 else head * 0.3 + bump
        o_old = gdn_windowed(*old, window=window, chunk_size=8)
        torch.testing.assert_close(o_old[:, t], o[:, t], rtol=0, atol=1e-6)
        # g at the window's first step only decays the zero state; its first effect is one later
        pos = start + 1 if idx == 3 else start
        if pos > t:
            continue
        edge = [u.clone() for u in inputs]
        edge[idx][:, pos] = edge[idx][:, pos] * 0.3 - 0.5 if idx == 3 else edge[idx][:, pos] * 0.3 + 0.5
        o_edge = gdn_windowed(*edge, window=window, chunk_size=8)
        assert (o_edge[:, t] - o[:, t]).abs().max() > 1e-5, idx


def test_bf16_in_bf16_out_close_to_fp32():
    inputs = make_inputs(40)
    o32, _ = gdn_chunked(*inputs, chunk_size=16)
    o16, s16 = gdn_chunked(*[t.bfloat16() for t in inputs], chunk_size=16)
    assert o16.dtype == torch.bfloat16 and s16.dtype == torch.float32
    assert (o16.float() - o32).norm() / o32.norm() < 2e-2


def test_dispatch_and_errors():
    inputs = make_inputs(12)
    torch.testing.assert_close(gdn(*inputs)[0], gdn_chunked(*inputs)[0])
    o, s = gdn(*inputs, window=5)
    assert s is None
    torch.testing.assert_close(o, gdn_windowed(*inputs, window=5))
    torch.testing.assert_close(gdn(*inputs, backend="recurrent")[0], gdn_recurrent(*inputs)[0])
    with pytest.raises(ValueError, match="backend must be one of"):
        gdn(*inputs, backend="triton")
    with pytest.raises(ValueError, match="window must be None or an int >= 1"):
        gdn_windowed(*inputs, window=-3)
    with pytest.raises(ValueError, match="window must be an int >= 1 for gdn_windowed"):
        gdn_windowed(*inputs)
    with pytest.raises(ValueError, match="initial_state must be None when window"):
        gdn(*inputs, initial_state=torch.zeros(B, H, DK, DV), window=4)
    q, k, v, g, beta = inputs
    with pytest.raises(ValueError, match="beta must have shape"):
        gdn_chunked(q, k, v, g, beta[..., :1])
    with pytest.raises(ValueError, match="gdn_fla needs CUDA tensors"):
        gdn_fla(*inputs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (and fla)")
def test_fla_matches_chunked_on_cuda():
    pytest.importorskip("fla")
    inputs = make_inputs(300, device="cuda", dtype=torch.bfloat16)
    s0 = torch.randn(B, H, DK, DV, device="cuda")
    o_ref, s_ref = gdn_chunked(*inputs, initial_state=s0)
    o, s = gdn_fla(*inputs, initial_state=s0)
    assert (o.float() - o_ref.float()).norm() / o_ref.float().norm() < 2e-2
    assert (s - s_ref).norm() / s_ref.norm() < 2e-2
