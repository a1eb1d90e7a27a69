"""Attention maths: masks, attention (reference / SDPA / FlexAttention), attention rows, and the
recurrent mixers (Mamba-2 SSD, Gated DeltaNet), each with a naive reference and a fast path."""

import importlib.util


def fla_available() -> bool:
    """fla (flash-linear-attention) kernels need triton and a GPU; never imported on CPU machines."""
    return importlib.util.find_spec("fla") is not None and importlib.util.find_spec("triton") is not None
