"""Tiny randomly initialised HF models (Qwen3 / SmolLM3 / Gemma3) for the adapter and capture tests.

Built from configs only (never downloaded): 4 layers SWA, FULL, SWA, FULL with window 8, hidden 64,
4 query heads / 2 KV heads of 16, vocab 128, seed 0. ``initializer_range`` 0.3 makes attention
peaked, so ablations move logits by O(1), far above the tests' tolerances.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    Qwen3Config,
    Qwen3ForCausalLM,
    SmolLM3Config,
    SmolLM3ForCausalLM,
)

from models.plan import FULL, SWA

FAMILIES = ("qwen3", "smollm3", "gemma3")
BASE = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    initializer_range=0.3,
)
LAYER_TYPES = [SWA, FULL, SWA, FULL]
# per family: model class, config class, config fields on top of BASE (layer types, window 8)
_FAMILY = {
    "qwen3": (
        Qwen3ForCausalLM,
        Qwen3Config,
        dict(use_sliding_window=True, max_window_layers=0),
    ),
    "smollm3": (
        SmolLM3ForCausalLM,
        SmolLM3Config,
        dict(use_sliding_window=True, no_rope_layers=[1, 1, 1, 0], pad_token_id=0, bos_token_id=1, eos_token_id=2),
    ),
    "gemma3": (Gemma3ForCausalLM, Gemma3TextConfig, dict(query_pre_attn_scalar=16)),
}


def build(family: str, attn: str = "sdpa", source: torch.nn.Module | None = None, **over) -> torch.nn.Module:
    """A tiny ``family`` model in eval mode, initialised with seed 0; ``source`` copies its weights;
    ``over`` edits the config (applied last); ``attn`` other than "sdpa" is set after construction."""
    if family not in _FAMILY:
        raise AssertionError(family)
    model_cls, config_cls, extra = _FAMILY[family]
    cfg = config_cls(**{**BASE, "layer_types": LAYER_TYPES, "sliding_window": 8, **extra, **over})
    torch.manual_seed(0)
    model = model_cls(cfg).eval()
    if source is not None:
        model.load_state_dict(source.state_dict())
    if attn != "sdpa":
        model.set_attn_implementation(attn)
    return model


def tokens(seed: int = 0, batch: int = 2, length: int = 24) -> torch.Tensor:
    """Seeded random ids in [3, 128) (above the special ids 0..2), shape [batch, length]."""
    return torch.randint(3, 128, (batch, length), generator=torch.Generator().manual_seed(seed))


def save_checkpoint(model: torch.nn.Module, path, drop_config_keys: tuple[str, ...] = ()) -> None:
    """Save ``model`` with a small byte-level BPE tokenizer (trained here, nothing downloaded) as a local
    checkpoint directory; ``drop_config_keys`` are removed from the saved config.json (older checkpoints
    lack keys such as ``layer_types``). The model's vocab must hold the tokenizer's (at most 300 ids)."""
    import json
    from pathlib import Path

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    model.save_pretrained(path)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<eos>"], show_progress=False)
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog " * 20], trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>").save_pretrained(path)
    if drop_config_keys:
        cfg = json.loads((path / "config.json").read_text())
        for key in drop_config_keys:
            cfg.pop(key, None)
        (path / "config.json").write_text(json.dumps(cfg, indent=2))


def write_remote_checkpoint(path, name: str, config_py: str, modeling_py: str, config_class: str,
                            model_class: str, fields: dict) -> Path:
    """A remote-code checkpoint at ``path``: the weights of ``build("qwen3", vocab_size=320)`` and a
    tokenizer, ``configuration_<name>.py`` / ``modeling_<name>.py`` with those texts, and a config.json
    naming them in ``auto_map`` (model type ``name``), updated with ``fields``."""
    path = Path(path)
    save_checkpoint(build("qwen3", vocab_size=320), path)
    (path / f"configuration_{name}.py").write_text(config_py)
    (path / f"modeling_{name}.py").write_text(modeling_py)
    cfg = json.loads((path / "config.json").read_text())
    cfg.update({"model_type": name, "architectures": [model_class], "auto_map": {
        "AutoConfig": f"configuration_{name}.{config_class}",
        "AutoModelForCausalLM": f"modeling_{name}.{model_class}"}, **fields})
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    return path
