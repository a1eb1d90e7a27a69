"""The fast forms of the native model's building blocks against their reference formulas (random inputs)."""

import pytest
import torch

from models.layers import RMSNorm, apply_rotary, apply_rotary_reference, rms_norm_reference, rope_cos_sin


@pytest.mark.parametrize("shape", [(2, 77, 192), (1, 300, 6, 32)])
def test_rms_norm_fused_path_matches_the_formula(shape):
    g = torch.Generator().manual_seed(sum(shape))
    norm = RMSNorm(shape[-1], eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(shape[-1], generator=g))
    x = torch.randn(*shape, generator=g) * 3 + 0.5
    got = norm(x)
    torch.testing.assert_close(got, rms_norm_reference(x, norm.weight, 1e-6), rtol=2e-6, atol=2e-6)
    got.sum().backward()  # differentiable (training uses it)
    assert norm.weight.grad is not None and norm.weight.grad.abs().sum() > 0


def test_rms_norm_other_dtypes_keep_the_formula():
    g = torch.Generator().manual_seed(1)
    norm = RMSNorm(64).to(torch.bfloat16)
    x = torch.randn(3, 10, 64, generator=g).to(torch.bfloat16)
    assert torch.equal(norm(x), rms_norm_reference(x, norm.weight, norm.eps))


@pytest.mark.parametrize("duplicated", [True, False])
def test_apply_rotary_is_bit_identical_to_the_reference(duplicated):
    g = torch.Generator().manual_seed(int(duplicated))
    length, d = 257, 32
    if duplicated:
        cos, sin = rope_cos_sin(torch.arange(length), d, 10000.0)
    else:  # any tables, not only the rotate_half convention's duplicated halves
        cos, sin = torch.randn(length, d, generator=g), torch.randn(length, d, generator=g)
    x = torch.randn(2, length, 6, d, generator=g).transpose(1, 2)  # [B, H, L, D], strided as in the model
    got = apply_rotary(x, cos, sin)
    assert got.shape == x.shape
    assert torch.equal(got, apply_rotary_reference(x, cos, sin))
