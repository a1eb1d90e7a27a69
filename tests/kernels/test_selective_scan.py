"""Mamba-1 selective scan: the scan path (with exact windows) against the step-by-step reference."""

import pytest
import torch
import torch.nn.functional as F

from kernels.selective_scan import selective_scan, selective_scan_recurrent

B, D, N = 2, 6, 4


def make_inputs(length, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen)

    x = rnd(B, length, D)
    dt = F.softplus(rnd(B, length, D) - 1.0)
    A = -(torch.rand(D, N, generator=gen) + 0.1)
    return [t.to(dtype) for t in (x, dt, A, rnd(B, length, N), rnd(B, length, N), rnd(D))]


def close(actual, expected, rtol=1e-5):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * expected.abs().max().item())


@pytest.mark.parametrize("length", [1, 5, 37, 128])
@pytest.mark.parametrize("window", [None, 1, 3, 8, 37, 500])
def test_scan_matches_recurrent(length, window):
    x, dt, A, Bm, Cm, Dv = make_inputs(length)
    want = selective_scan_recurrent(x, dt, A, Bm, Cm, Dv, window=window)
    close(selective_scan(x, dt, A, Bm, Cm, Dv, window=window), want)


def test_channel_slabs_change_nothing():
    x, dt, A, Bm, Cm, Dv = make_inputs(40)
    whole = selective_scan(x, dt, A, Bm, Cm, Dv, window=7)
    for block in (1, 4, 5):
        torch.testing.assert_close(selective_scan(x, dt, A, Bm, Cm, Dv, window=7, channel_block=block), whole)


def test_window_at_least_length_is_unrestricted_and_d_is_the_skip():
    x, dt, A, Bm, Cm, Dv = make_inputs(20)
    torch.testing.assert_close(selective_scan(x, dt, A, Bm, Cm, Dv, window=20), selective_scan(x, dt, A, Bm, Cm, Dv))
    y_no_d = selective_scan(x, dt, A, Bm, Cm)
    close(selective_scan(x, dt, A, Bm, Cm, Dv) - y_no_d, Dv * x)


@pytest.mark.parametrize("k", [1, 4, 9])
def test_receptive_field_is_exactly_k(k):
    """Perturbing x at p moves y_t exactly for p <= t <= p+k-1."""
    x, dt, A, Bm, Cm, _ = make_inputs(30)
    A = torch.full_like(A, -0.05)  # slow decay: old inputs would still matter
    p = 6
    y = selective_scan(x, dt, A, Bm, Cm, window=k)
    x2 = x.clone()
    x2[:, p] += 1.0
    diff = (selective_scan(x2, dt, A, Bm, Cm, window=k) - y).abs().amax(dim=(0, 2))
    assert torch.all(diff[:p] == 0) and diff[p : p + k].min() > 1e-4
    assert diff[p + k :].max() == 0


def test_strong_decay_does_not_overflow():
    x, dt, A, Bm, Cm, Dv = make_inputs(300)
    A = A * 200.0  # exp(dt*A) underflows to 0 within a few steps
    y = selective_scan(x, dt, A, Bm, Cm, Dv, window=64)
    assert torch.isfinite(y).all()
    close(y, selective_scan_recurrent(x, dt, A, Bm, Cm, Dv, window=64))


def test_dtype_and_bad_shapes():
    x, dt, A, Bm, Cm, Dv = make_inputs(10, dtype=torch.bfloat16)
    assert selective_scan(x, dt, A, Bm, Cm, Dv, window=3).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="A must have shape"):
        selective_scan(x, dt, A[:1], Bm, Cm)
    with pytest.raises(ValueError, match="window must be None or an int >= 1"):
        selective_scan(x, dt, A, Bm, Cm, window=0)
