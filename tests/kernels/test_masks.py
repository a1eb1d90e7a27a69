"""Masks: hand-written small cases, equivalence of the three views, block classification."""

import pytest
import torch

from kernels.masks import allowed, block_classes, dense_mask, flex_block_mask, flex_mask_mod

# window=3, sinks=1 on 6 tokens: causal, q - k < 3, key 0 always visible.
W3_S1 = [
    [1, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0],
    [1, 1, 1, 1, 0, 0],
    [1, 0, 1, 1, 1, 0],
    [1, 0, 0, 1, 1, 1],
]
W3_S0 = [
    [1, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0],
    [0, 1, 1, 1, 0, 0],
    [0, 0, 1, 1, 1, 0],
    [0, 0, 0, 1, 1, 1],
]
W2_S2 = [
    [1, 0, 0, 0, 0],
    [1, 1, 0, 0, 0],
    [1, 1, 1, 0, 0],
    [1, 1, 1, 1, 0],
    [1, 1, 0, 1, 1],
]


def _t(rows):
    return torch.tensor(rows, dtype=torch.bool)


def test_known_small_masks():
    assert torch.equal(dense_mask(6, 6, 3, sinks=1), _t(W3_S1))
    assert torch.equal(dense_mask(6, 6, 3), _t(W3_S0))
    assert torch.equal(dense_mask(5, 5, 2, sinks=2), _t(W2_S2))
    assert torch.equal(dense_mask(4, 4, 1), torch.eye(4, dtype=torch.bool))


def test_no_window_is_causal_whatever_the_sinks():
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    for sinks in (0, 1, 3):
        assert torch.equal(dense_mask(7, 7, None, sinks=sinks), causal)
    assert torch.equal(dense_mask(7, 7, 7), causal)  # window covering everything


def test_q_offset_selects_last_rows():
    assert torch.equal(dense_mask(2, 6, 3, sinks=1, q_offset=4), _t(W3_S1)[4:])
    assert dense_mask(0, 6, 3).shape == (0, 6)


def test_allowed_broadcasts_and_scalars():
    assert bool(allowed(5, 0, 3, 1)) and not bool(allowed(5, 1, 3, 1)) and not bool(allowed(2, 3, None))
    q = torch.arange(6)[:, None]
    k = torch.arange(6)[None, :]
    assert torch.equal(allowed(q, k, 3, 1), _t(W3_S1))


@pytest.mark.parametrize(
    "kwargs, field",
    [({"window": 0}, "window"), ({"window": True}, "window"), ({"window": 2.5}, "window"),
     ({"window": 3, "sinks": -1}, "sinks"), ({"window": 3, "sinks": "2"}, "sinks")],
)
def test_bad_window_or_sinks_raise_naming_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field} must be"):
        dense_mask(4, 4, **kwargs)
    with pytest.raises(ValueError, match=f"^{field} must be"):
        flex_mask_mod(**kwargs)


@pytest.mark.parametrize(
    "window, sinks, q_offset", [(None, 0, 0), (3, 1, 0), (1, 0, 0), (5, 2, 7), (None, 4, 3)]
)
def test_flex_mask_mod_matches_dense(window, sinks, q_offset):
    mod = flex_mask_mod(window, sinks, q_offset)
    q_idx = torch.arange(12, dtype=torch.int32)[:, None]
    kv_idx = torch.arange(12 + q_offset, dtype=torch.int32)[None, :]
    got = mod(0, 0, q_idx, kv_idx)
    assert torch.equal(got, dense_mask(12, 12 + q_offset, window, sinks, q_offset=q_offset))


def _classes_from_dense(mask: torch.Tensor, bs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Naive partial/full block maps: pad with False to whole blocks, count allowed per block."""
    lq, lk = mask.shape
    nqb, nkb = -(-lq // bs), -(-lk // bs)
    padded = torch.zeros(nqb * bs, nkb * bs, dtype=torch.bool)
    padded[:lq, :lk] = mask
    counts = padded.reshape(nqb, bs, nkb, bs).sum(dim=(1, 3))
    return (counts > 0) & (counts < bs * bs), counts == bs * bs


@pytest.mark.parametrize(
    "lq, lk, window, sinks, bs",
    [(64, 64, None, 0, 8), (64, 64, 8, 0, 8), (64, 64, 9, 3, 8), (61, 61, 5, 10, 8), (50, 77, 12, 1, 8),
     (40, 40, 1, 0, 8), (40, 40, 1, 1, 8), (33, 33, 100, 2, 16), (300, 300, 64, 4, 128)],
)
def test_block_classes_match_dense_mask(lq, lk, window, sinks, bs):
    partial, full = block_classes(lq, lk, window, sinks, q_offset=lk - lq, block_size=bs)
    want_partial, want_full = _classes_from_dense(dense_mask(lq, lk, window, sinks, q_offset=lk - lq), bs)
    assert torch.equal(partial, want_partial)
    assert torch.equal(full, want_full)


def test_block_classes_random_configs():
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        lk = int(torch.randint(1, 90, (1,), generator=g))
        lq = int(torch.randint(1, lk + 1, (1,), generator=g))
        window = int(torch.randint(1, 40, (1,), generator=g))
        sinks = int(torch.randint(0, 12, (1,), generator=g))
        bs = int(torch.randint(1, 17, (1,), generator=g))
        partial, full = block_classes(lq, lk, window, sinks, q_offset=lk - lq, block_size=bs)
        want = _classes_from_dense(dense_mask(lq, lk, window, sinks, q_offset=lk - lq), bs)
        assert torch.equal(partial, want[0]) and torch.equal(full, want[1]), (lq, lk, window, sinks, bs)


def _decode(num: torch.Tensor, idx: torch.Tensor, nkb: int) -> torch.Tensor:
    out = torch.zeros(num.shape[-1], nkb, dtype=torch.bool)
    for row in range(num.shape[-1]):
        out[row, idx[0, 0, row, : int(num[0, 0, row])].long()] = True
    return out


@pytest.mark.parametrize(
    "lq, lk, window, sinks", [(300, 300, 64, 4), (256, 256, None, 0), (200, 520, 129, 1)]
)
def test_flex_block_mask_matches_create_block_mask(lq, lk, window, sinks):
    from torch.nn.attention.flex_attention import create_block_mask

    mod = flex_mask_mod(window, sinks, lk - lq)
    want = create_block_mask(mod, None, None, lq, lk, device="cpu")
    got = flex_block_mask(lq, lk, window, sinks, q_offset=lk - lq)
    nkb = -(-lk // 128)
    assert got.seq_lengths == (lq, lk)
    assert torch.equal(_decode(got.kv_num_blocks, got.kv_indices, nkb),
                       _decode(want.kv_num_blocks, want.kv_indices, nkb))
    assert torch.equal(_decode(got.full_kv_num_blocks, got.full_kv_indices, nkb),
                       _decode(want.full_kv_num_blocks, want.full_kv_indices, nkb))
