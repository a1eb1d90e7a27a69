"""Lightning attention (linear attention with a per-head decay): SSD-backed paths against the reference."""

import pytest
import torch

from kernels.lightning import lightning, lightning_recurrent


def make_inputs(length, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(2, length, 3, 4, generator=gen) for _ in range(2))
    return q, k, torch.randn(2, length, 3, 5, generator=gen), torch.rand(3, generator=gen) + 0.05


def close(actual, expected, rtol=1e-5):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * expected.abs().max().item())


@pytest.mark.parametrize("length", [1, 13, 50])
@pytest.mark.parametrize("window", [None, 1, 4, 17, 100])
@pytest.mark.parametrize("backend", ["chunked", "recurrent"])
def test_fast_paths_match_reference(length, window, backend):
    q, k, v, slope = make_inputs(length)
    close(lightning(q, k, v, slope, window=window, chunk_size=8, backend=backend),
          lightning_recurrent(q, k, v, slope, window=window))


def test_reference_is_decayed_linear_attention():
    q, k, v, slope = make_inputs(9)
    t = torch.arange(9)
    decay = torch.exp(-slope[:, None, None] * (t[:, None] - t[None, :]).clamp(min=0)) * (t[:, None] >= t[None, :])
    want = torch.einsum("blhd,bshd,hls,bshe->blhe", q, k, decay, v)
    close(lightning_recurrent(q, k, v, slope), want)


def test_bad_inputs():
    q, k, v, slope = make_inputs(5)
    with pytest.raises(ValueError, match="slope must have shape"):
        lightning(q, k, v, slope[:2])
    with pytest.raises(ValueError, match="window must be None"):
        lightning(q, k, v, slope, window=0)
