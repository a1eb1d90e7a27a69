"""xz-packed checkpoints (backend.packed_weights): a packed copy of a bundled zoo model loads through the
ordinary ref -> load path with bit-identical weights and logits, is unpacked once into the weights cache,
keeps its listing/config plain, and a damaged file is a clear error."""

from __future__ import annotations

import lzma

import pytest
import torch

from backend import loading
from backend.model_refs import fingerprint, resolve
from backend.packed_weights import DONE, PackedWeightsError, is_packed, pack, unpacked
from backend.paths import zoo_root

SRC = "swa64"


@pytest.fixture()
def packed(tmp_path, monkeypatch):
    src = zoo_root() / SRC
    if not (src / "config.json").is_file():
        pytest.skip("bundled zoo model missing")
    root = tmp_path / "models"
    sizes = pack(src, root / "packed")
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(root))
    monkeypatch.setenv("HYBRIDSCOPE_WEIGHTS_CACHE", str(tmp_path / "cache"))
    loading.clear_cache()
    yield src, root / "packed", sizes
    loading.clear_cache()


def test_pack_compresses_weights_only(packed) -> None:
    src, dst, sizes = packed
    assert "model.safetensors.xz" in sizes and "config.json" in sizes and "model.safetensors" not in sizes
    raw = (src / "model.safetensors").stat().st_size
    assert sizes["model.safetensors.xz"] < 0.8 * raw  # bf16 weights: ~0.71x
    assert (dst / "config.json").read_bytes() == (src / "config.json").read_bytes()
    assert is_packed(dst) and not is_packed(src)


def test_packed_checkpoint_loads_identically_and_unpacks_once(packed, tmp_path, monkeypatch) -> None:
    src, dst, _ = packed
    ref = resolve("packed")
    assert ref.path == dst.resolve()
    a = loading.load("packed", torch.device("cpu"))
    b = loading.load(f"zoo/{SRC}", torch.device("cpu"))
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ids = torch.randint(2, 8000, (1, 96), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a.model(ids).logits, b.model(ids).logits)
    assert a.codec.encode("def f(x):\n    return x").ids == b.codec.encode("def f(x):\n    return x").ids
    fp = fingerprint(ref)
    target = unpacked(dst, fp)
    assert (target / DONE).is_file()
    assert (target / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    calls = []
    monkeypatch.setattr(lzma, "open", lambda *a, **k: calls.append(a) or pytest.fail("unpacked again"))
    assert unpacked(dst, fp) == target and calls == []  # the cache answers
    assert not list(target.parent.glob(".tmp-*"))


def test_damaged_packed_weights_are_a_clear_error(packed, tmp_path) -> None:
    _, dst, _ = packed
    f = dst / "model.safetensors.xz"
    f.write_bytes(f.read_bytes()[: 1000])
    with pytest.raises(PackedWeightsError, match="does not unpack .*the checkpoint is damaged"):
        unpacked(dst, "f" * 64)
    assert not list((tmp_path / "cache").rglob("model.safetensors"))  # no half copy left
