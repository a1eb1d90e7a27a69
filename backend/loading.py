"""Load models (once per process) from local refs. Never downloads: local_files_only always; weights
from safetensors only unless the operator sets ``HYBRIDSCOPE_ALLOW_PICKLE=1`` (``model_refs.check_weights``);
a checkpoint's own (remote) code only with ``HYBRIDSCOPE_TRUST_REMOTE_CODE=1`` (``model_support.check_remote_code``)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import torch

from backend.codec import CharCodec, HFCodec
from backend.model_refs import ModelRef, fingerprint, pickle_allowed, resolve

_LOCK = threading.Lock()
_CACHE: dict[tuple[str, str, str], LoadedModel] = {}


@dataclass
class LoadedModel:
    ref: ModelRef
    model: torch.nn.Module
    codec: CharCodec | HFCodec
    fingerprint: str
    device: torch.device


def default_device() -> torch.device:
    name = os.environ.get("HYBRIDSCOPE_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _dtype(device: torch.device) -> torch.dtype:
    name = os.environ.get("HYBRIDSCOPE_DTYPE")
    if name:
        return getattr(torch, name)
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load(ref_str: str, device: torch.device | None = None) -> LoadedModel:
    """Return the cached model for ``ref_str`` (loaded on first use), in eval mode."""
    from backend.model_support import check_remote_code

    ref = resolve(ref_str)
    check_remote_code(ref)  # before any file is hashed or the cache answers
    device = device or default_device()
    fp = fingerprint(ref)
    key = (ref_str, str(ref.path), fp, str(device))  # the path too: identical weights under another root
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(ref, fp, device)
        return _CACHE[key]


def _load(ref: ModelRef, fp: str, device: torch.device) -> LoadedModel:
    import models.hf_optional  # noqa: F401  (first: transformers without its scipy/sklearn imports)
    import models.modeling  # noqa: F401  (registers the native family with the Auto classes)

    if ref.path is None:
        from models.tiny import tiny_model

        model = tiny_model(ref.pattern, seed=0)
        codec: CharCodec | HFCodec = CharCodec()
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from backend.model_support import trust_remote_code
        from backend.packed_weights import unpacked

        trust = trust_remote_code()
        path = unpacked(ref.path, fp)  # the checkpoint itself unless its weights are xz-packed
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, trust_remote_code=trust, dtype=_dtype(device),
            use_safetensors=None if pickle_allowed() else True,
        )
        codec = HFCodec(AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust))
    model = model.to(device).eval()
    return LoadedModel(ref, model, codec, fp, device)


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
