"""Row-wise attention probabilities vs the full reference softmax; helper known values."""

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from kernels.attention import attention_probs_reference
from kernels.attention_rows import attention_probs_rows, entropy, mass_on, topk_keys

L = 300
POSITIONS = torch.tensor([0, 1, 63, 64, 65, 150, 257, 298, 299])  # ends, chunk edges (key_chunk=64)


def _qk(hq, hkv, length=L, d=16, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, hq, length, d, generator=g), torch.randn(b, hkv, length, d, generator=g)


@pytest.mark.parametrize("hq, hkv", [(2, 2), (4, 2), (3, 1)])
@pytest.mark.parametrize("window, sinks", [(None, 0), (None, 4), (1, 0), (32, 0), (32, 3), (100, 70), (L, 1)])
@pytest.mark.parametrize("key_chunk", [64, 37])
def test_rows_equal_reference_rows(hq, hkv, window, sinks, key_chunk):
    q, k = _qk(hq, hkv)
    want = attention_probs_reference(q, k, window, sinks)[:, :, POSITIONS]
    got = attention_probs_rows(q[:, :, POSITIONS], k, POSITIONS, window, sinks, key_chunk=key_chunk)
    assert got.dtype == torch.float32 and got.shape == (2, hq, len(POSITIONS), L)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    # masked keys get exactly zero
    assert torch.all(got[..., 5, 151:] == 0)


def test_rows_single_chunk_scale_and_list_positions():
    q, k = _qk(4, 2, seed=3)
    pos = [5, 200, 17]
    want = attention_probs_reference(q, k, 50, 2, scale=0.7)[:, :, pos]
    got = attention_probs_rows(q[:, :, pos], k, pos, 50, 2, scale=0.7)  # default chunk > L
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor produced by an op."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_rows_never_build_a_full_score_matrix():
    q, k = _qk(2, 1, length=1000, d=8, b=1)
    pos = torch.tensor([10, 999])
    with _LargestTensor() as mode:
        out = attention_probs_rows(q[:, :, pos], k, pos, window=64, key_chunk=128)
    assert out.numel() == 2 * 2 * 1000
    assert mode.largest <= out.numel()  # nothing bigger than the [B, H, nq, L] result (L*L = 1e6)


@pytest.mark.parametrize("window, sinks", [(None, 0), (8, 0), (8, 3)])
def test_entropy_of_zero_scale_rows_is_log_of_visible_keys(window, sinks):
    q, k = _qk(2, 2, length=40)
    pos = torch.tensor([0, 3, 20, 39])
    probs = attention_probs_rows(q[:, :, pos], k, pos, window, sinks, scale=0.0, key_chunk=16)
    for i, p in enumerate(pos.tolist()):
        n_visible = p + 1 if window is None else min(window, p + 1) + min(sinks, max(p + 1 - window, 0))
        torch.testing.assert_close(entropy(probs)[..., i], torch.full((2, 2), math.log(n_visible)))


def test_entropy_known_values():
    probs = torch.zeros(1, 1, 3, 8)
    probs[0, 0, 0] = 1 / 8  # uniform over 8 keys
    probs[0, 0, 1, 2] = 1.0  # one-hot
    probs[0, 0, 2, :2] = 0.5
    got = entropy(probs)
    assert got.shape == (1, 1, 3) and got.dtype == torch.float32
    torch.testing.assert_close(got[0, 0], torch.tensor([math.log(8), 0.0, math.log(2)]))


def test_topk_keys_order_and_clipping():
    probs = torch.tensor([0.1, 0.4, 0.2, 0.3]).reshape(1, 1, 1, 4)
    weights, idx = topk_keys(probs, 3)
    assert idx.flatten().tolist() == [1, 3, 2]
    torch.testing.assert_close(weights.flatten(), torch.tensor([0.4, 0.3, 0.2]))
    weights, idx = topk_keys(probs, 10)
    assert idx.flatten().tolist() == [1, 3, 2, 0] and weights.dtype == torch.float32
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        topk_keys(probs, 0)


def test_mass_on_shared_and_per_query():
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.0, 0.0]]).reshape(1, 1, 2, 4)
    torch.testing.assert_close(mass_on(probs, [0, 3])[0, 0], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(mass_on(probs, torch.tensor([1, 1, 2]))[0, 0], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(mass_on(probs, [[3], [0, 1]])[0, 0], torch.tensor([0.4, 1.0]))
    torch.testing.assert_close(mass_on(probs, torch.tensor([[2], [2]]))[0, 0], torch.tensor([0.3, 0.0]))
    assert mass_on(probs, []).flatten().tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="positions must lie in"):
        mass_on(probs, [4])
    with pytest.raises(ValueError, match="per-query lists must number nq=2"):
        mass_on(probs, [[0], [1], [2]])


def test_rows_bad_input():
    q, k = _qk(2, 2, length=10)
    with pytest.raises(ValueError, match="query_positions must lie in"):
        attention_probs_rows(q[:, :, :1], k, [10])
    with pytest.raises(ValueError, match="query_positions must be a 1-d integer tensor of length nq=1"):
        attention_probs_rows(q[:, :, :1], k, [1, 2])
    with pytest.raises(ValueError, match="key_chunk must be an int >= 1"):
        attention_probs_rows(q[:, :, :1], k, [1], key_chunk=0)
    with pytest.raises(ValueError, match="window must be None or an int >= 1"):
        attention_probs_rows(q[:, :, :1], k, [1], window=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rows_cuda_match_reference():
    q, k = (t.cuda() for t in _qk(4, 2))
    pos = POSITIONS.cuda()
    want = attention_probs_reference(q, k, 32, 3)[:, :, pos]
    got = attention_probs_rows(q[:, :, pos], k, pos, 32, 3, key_chunk=64)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
