"""No recompilation when only the data changes (issue 11), checked with dynamo's own counters on CPU.

- The CPU paths (SDPA is_causal, the banded window path) under ``torch.compile``: new token ids or new
  q/k/v values of the same shapes never recompile (``error_on_recompile``), for the kernel alone and a
  whole native hybrid.
- The compiled FlexAttention call of the GPU path pads lengths to buckets: documents or needle
  positions of about the same length (one bucket), other windows and sinks share one compiled frame,
  and the padded result is exact. Traced here with a counting backend (no inductor, no GPU).
"""

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from kernels.attention import attention_banded, attention_reference, flex_bucketed, flex_length_bucket
from models.tiny import tiny_model


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _qkv(length, lq=None, seed=0, hq=4, hkv=2, d=16):
    g = torch.Generator().manual_seed(seed)
    lq = length if lq is None else lq
    return (torch.randn(1, hq, lq, d, generator=g), torch.randn(1, hkv, length, d, generator=g),
            torch.randn(1, hkv, length, d, generator=g))


def test_banded_kernel_compiles_once_for_new_data():
    cnt = CompileCounter()
    fn = torch.compile(lambda q, k, v: attention_banded(q, k, v, 24, 2), backend=cnt, dynamic=False)
    fn(*_qkv(300, seed=0))
    frames = cnt.frame_count
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seed in (1, 2, 3):
            q, k, v = _qkv(300, seed=seed)
            torch.testing.assert_close(fn(q, k, v), attention_reference(q, k, v, 24, 2), rtol=1e-5, atol=2e-6)
    assert cnt.frame_count == frames


@pytest.mark.parametrize("pattern", ["SSSF", "SFMG"])
def test_native_model_compiles_once_for_new_token_ids(pattern):
    model = tiny_model(pattern, seed=0)
    cnt = CompileCounter()
    forward = torch.compile(model.model, backend=cnt, dynamic=False)
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        first = torch.randint(0, 256, (1, 200), generator=gen)
        forward(input_ids=first)
        frames = cnt.frame_count
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(3):
                ids = torch.randint(0, 256, (1, 200), generator=gen)
                got = forward(input_ids=ids).last_hidden_state
                torch.testing.assert_close(got, model.model(input_ids=ids).last_hidden_state)
    assert cnt.frame_count == frames > 0


def test_length_buckets():
    for length in range(1, 70_000, 37):
        b = flex_length_bucket(length)
        assert b >= length and b % 128 == 0 and b - length < max(128, length / 8 + 1)
        assert flex_length_bucket(b) == b
    for length in (128, 1024, 4096, 32768, 131072):
        assert flex_length_bucket(length) == length
    # about 8 buckets per doubling, not one per length
    assert len({flex_length_bucket(n) for n in range(32769, 65537)}) == 8


def test_compiled_flex_runs_one_frame_per_bucket_and_is_exact():
    from torch.nn.attention.flex_attention import flex_attention

    cnt = CompileCounter()
    flex = torch.compile(flex_attention, backend=cnt, dynamic=False)
    cases = [(1000, None, 64, 0), (1010, None, 64, 4), (1023, None, 16, 0), (1001, 7, 64, 2), (1024, None, 100, 1)]
    for i, (length, lq, window, sinks) in enumerate(cases):
        q, k, v = _qkv(length, lq=lq, seed=i)
        got = flex_bucketed(flex, q, k, v, window, sinks, None)
        torch.testing.assert_close(got, attention_reference(q, k, v, window, sinks), rtol=1e-5, atol=2e-6)
    # one bucket (1024): every length, window, sinks and data share the frame of the first call;
    # the 7-query call (a decoding-like shape) is its only other shape
    assert cnt.frame_count == 2
    q, k, v = _qkv(1100)
    flex_bucketed(flex, q, k, v, 64, 0, None)
    assert cnt.frame_count == 3  # a new bucket (1152) compiles once
