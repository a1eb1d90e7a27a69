"""Mamba-2 SSD: chunked / windowed torch paths against the step-by-step reference."""

import pytest
import torch
import torch.nn.functional as F

from kernels.mamba2 import segsum, ssd, ssd_chunked, ssd_fla, ssd_recurrent

B, H, P, N = 2, 2, 8, 12


def make_inputs(length, groups=1, seed=0, device="cpu", dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen)

    x = rnd(B, length, H, P)
    dt = F.softplus(rnd(B, length, H) - 1.0)
    A = -(torch.rand(H, generator=gen) + 0.3)
    Bm, Cm = rnd(B, length, groups, N) * 0.5, rnd(B, length, groups, N) * 0.5
    D = rnd(H)
    return [t.to(device=device, dtype=dtype) for t in (x, dt, A, Bm, Cm, D)]


def close(actual, expected, rtol=1e-5):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * expected.abs().max().item())


def test_segsum_matches_definition():
    a = torch.randn(2, 5, generator=torch.Generator().manual_seed(1))
    out = segsum(a)
    for i in range(5):
        for j in range(5):
            want = a[:, j + 1 : i + 1].sum(-1) if j <= i else torch.full((2,), float("-inf"))
            torch.testing.assert_close(out[:, i, j], want)


@pytest.mark.parametrize("length,chunk,groups", [(37, 16, 1), (64, 16, 2), (50, 8, 2), (5, 16, 1), (300, 8, 1)])
def test_chunked_matches_recurrent(length, chunk, groups):
    x, dt, A, Bm, Cm, D = make_inputs(length, groups)
    h0 = torch.randn(B, H, P, N, generator=torch.Generator().manual_seed(7))
    for init in (None, h0):
        y_ref, s_ref = ssd_recurrent(x, dt, A, Bm, Cm, D, initial_state=init)
        y, s = ssd_chunked(x, dt, A, Bm, Cm, D, initial_state=init, chunk_size=chunk)
        close(y, y_ref)
        close(s, s_ref)


def test_groups_equal_explicitly_expanded_heads():
    x, dt, A, Bm, Cm, D = make_inputs(20, groups=1)
    y1, _ = ssd_chunked(x, dt, A, Bm, Cm, D, chunk_size=8)
    y2, _ = ssd_chunked(x, dt, A, Bm.expand(-1, -1, H, -1), Cm.expand(-1, -1, H, -1), D, chunk_size=8)
    torch.testing.assert_close(y1, y2)
    # group 0 feeds head 0 only: changing group 1 leaves head 0 untouched and moves head 1
    x, dt, A, Bm, Cm, D = make_inputs(20, groups=2)
    y, _ = ssd_chunked(x, dt, A, Bm, Cm, D, chunk_size=8)
    Bm2 = Bm.clone()
    Bm2[:, :, 1] += 1.0
    y2, _ = ssd_chunked(x, dt, A, Bm2, Cm, D, chunk_size=8)
    assert torch.equal(y[:, :, 0], y2[:, :, 0])
    assert not torch.allclose(y[:, :, 1], y2[:, :, 1])


def test_gradients_match_recurrent():
    inputs = make_inputs(29, groups=2, seed=3)
    h0 = torch.randn(B, H, P, N, generator=torch.Generator().manual_seed(4))
    grads = []
    for fn in (ssd_recurrent, lambda *a, **kw: ssd_chunked(*a, chunk_size=8, **kw)):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        y, s = fn(*leaves, initial_state=h0)
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(5))
        ((y * w).sum() + s.square().sum()).backward()
        grads.append([t.grad for t in leaves])
    for name, g_ref, g in zip(("x", "dt", "A", "Bm", "Cm", "D"), grads[0], grads[1], strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-4 * g_ref.abs().max().item(), msg=name)


@pytest.mark.parametrize("window", [1, 5, 16, 23, 60, 200])
@pytest.mark.parametrize("length,chunk", [(60, 16), (37, 8)])
def test_window_matches_literal_restart(window, length, chunk):
    x, dt, A, Bm, Cm, D = make_inputs(length, groups=2, seed=window)
    y_ref, s_ref = ssd_recurrent(x, dt, A, Bm, Cm, D, window=window)
    y, s = ssd_chunked(x, dt, A, Bm, Cm, D, chunk_size=chunk, window=window)
    assert s is None and s_ref is None
    close(y, y_ref)
    if window >= length:
        close(y, ssd_chunked(x, dt, A, Bm, Cm, D, chunk_size=chunk)[0])


@pytest.mark.parametrize("window", [1, 7, 20])
def test_receptive_field_is_exact(window):
    length, t = 48, 40
    inputs = make_inputs(length, seed=11)
    y, _ = ssd_chunked(*inputs, chunk_size=16, window=window)
    start = t - window + 1
    for idx in range(4):  # x, dt, A is per head (no position), Bm
        if idx == 2:
            continue
        old = [u.clone() for u in inputs]
        old[idx][:, :start] += 1.0 + torch.rand(old[idx][:, :start].shape)
        y_old, _ = ssd_chunked(*old, chunk_size=16, window=window)
        torch.testing.assert_close(y_old[:, t], y[:, t], rtol=0, atol=1e-6)
        edge = [u.clone() for u in inputs]
        edge[idx][:, start] += 1.0
        y_edge, _ = ssd_chunked(*edge, chunk_size=16, window=window)
        assert (y_edge[:, t] - y[:, t]).abs().max() > 1e-4


def test_bf16_in_bf16_out_close_to_fp32():
    inputs = make_inputs(40, groups=2)
    y32, _ = ssd_chunked(*inputs, chunk_size=16)
    y16, s16 = ssd_chunked(*[t.bfloat16() for t in inputs], chunk_size=16)
    assert y16.dtype == torch.bfloat16 and s16.dtype == torch.float32
    assert (y16.float() - y32).norm() / y32.norm() < 2e-2


def test_dispatch_and_errors():
    inputs = make_inputs(12)
    torch.testing.assert_close(ssd(*inputs)[0], ssd_chunked(*inputs)[0])
    torch.testing.assert_close(ssd(*inputs, backend="recurrent")[0], ssd_recurrent(*inputs)[0])
    with pytest.raises(ValueError, match="backend must be one of"):
        ssd(*inputs, backend="triton")
    with pytest.raises(ValueError, match="window must be None or an int >= 1"):
        ssd_chunked(*inputs, window=0)
    with pytest.raises(ValueError, match="initial_state must be None when window"):
        ssd_chunked(*inputs, initial_state=torch.zeros(B, H, P, N), window=4)
    x, dt, A, Bm, Cm, D = inputs
    with pytest.raises(ValueError, match=r"heads \(2\) must be a multiple of groups \(3\)"):
        ssd_chunked(x, dt, A, torch.randn(B, 12, 3, N), torch.randn(B, 12, 3, N), D)
    with pytest.raises(ValueError, match="dt must have shape"):
        ssd_chunked(x, dt[:, :-1], A, Bm, Cm, D)
    with pytest.raises(ValueError, match="ssd_fla needs CUDA tensors"):
        ssd_fla(*inputs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (and fla)")
def test_fla_matches_chunked_on_cuda():
    pytest.importorskip("fla")
    inputs = make_inputs(300, groups=2, device="cuda")
    h0 = torch.randn(B, H, P, N, device="cuda")
    y_ref, s_ref = ssd_chunked(*inputs, initial_state=h0)
    y, s = ssd_fla(*inputs, initial_state=h0)
    assert (y - y_ref).norm() / y_ref.norm() < 2e-3
    assert (s - s_ref).norm() / s_ref.norm() < 2e-3
