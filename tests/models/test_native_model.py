"""The native hybrid as an HF model: config, save/load, loss, generation, capture, backends."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import models.modeling  # noqa: F401  (registers the Auto classes)
from models.adapters import adapter_for
from models.config import HybridConfig
from models.generate import greedy_generate
from models.tiny import tiny_config, tiny_model

PATTERN = "SMGF"  # one layer of every kind
REPO = Path(__file__).resolve().parents[2]


def _ids(batch: int = 2, length: int = 24, seed: int = 0, vocab: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=g)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


# ---------------------------------------------------------------- config


def test_config_per_layer_views_and_pattern():
    cfg = tiny_config(
        "SSMGF", layer_windows=[3, None, None, None, None], layer_pe=[None, "nope", None, None, "nope"]
    )
    assert cfg.layer_types == [
        "sliding_attention",
        "sliding_attention",
        "mamba2",
        "gated_deltanet",
        "full_attention",
    ]
    assert [cfg.window_of(i) for i in range(5)] == [3, 8, None, None, None]
    assert [cfg.pe_of(i) for i in range(5)] == ["rope", "nope", None, None, "nope"]
    assert HybridConfig().layer_types == ["sliding_attention"] * 3 + ["full_attention"] + [
        "sliding_attention"
    ] * 3 + ["full_attention"]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(layer_types=["full_attention", "mamba3"], num_hidden_layers=2), "layer_types[1]"),
        (dict(layer_types=["full_attention"], num_hidden_layers=2), "layer_types"),
        (dict(layer_types=["full_attention"], num_hidden_layers=1, layer_pe=["alibi"]), "layer_pe[0]"),
        (dict(layer_types=["mamba2"], num_hidden_layers=1, layer_pe=["rope"]), "layer_pe[0]"),
        (dict(layer_types=["full_attention"], num_hidden_layers=1, layer_windows=[4]), "layer_windows[0]"),
        (dict(layer_types=["sliding_attention"], num_hidden_layers=1, layer_windows=[0]), "layer_windows[0]"),
        (dict(attn_backend="flash"), "attn_backend"),
        (dict(linear_backend="triton"), "linear_backend"),
        (dict(num_attention_heads=4, num_key_value_heads=3), "num_key_value_heads"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError) as err:
        HybridConfig(**kwargs)
    assert str(err.value).startswith(field + ":")


def test_config_errors_list_allowed_values():
    with pytest.raises(ValueError, match=r"layer_types\[0\].*'full_attention'.*'gated_deltanet'"):
        HybridConfig(layer_types=["linear"], num_hidden_layers=1)
    with pytest.raises(ValueError, match=r"layer_pe\[0\].*'rope', 'nope'"):
        HybridConfig(layer_types=["full_attention"], num_hidden_layers=1, layer_pe=["yarn"])
    with pytest.raises(ValueError, match=r"pattern: 'SXF'.*\['F', 'G', 'M', 'S'\]"):
        HybridConfig.from_pattern("SXF")


# ---------------------------------------------------------------- registration, save / load


def test_import_models_is_torch_free_and_modeling_registers():
    code = (
        "import sys, models, models.plan\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
        "from transformers import AutoConfig, AutoModelForCausalLM\n"
        "import models.modeling\n"
        "cfg = AutoConfig.for_model('hybridscope', vocab_size=32, hidden_size=16, intermediate_size=32,\n"
        "    num_hidden_layers=1, layer_types=['full_attention'], num_attention_heads=2,\n"
        "    num_key_value_heads=1, head_dim=8)\n"
        "assert type(AutoModelForCausalLM.from_config(cfg)) is models.HybridForCausalLM\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize("tie", [True, False])
def test_save_load_round_trip_is_exact(tmp_path, tie):
    model = tiny_model(
        "SMGF",
        seed=1,
        tie_word_embeddings=tie,
        layer_windows=[5, None, None, None],
        layer_pe=["nope", None, None, "rope"],
    )
    ids = _ids()
    model.save_pretrained(tmp_path)
    cfg = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(cfg, HybridConfig)
    assert cfg.layer_types == model.config.layer_types
    assert cfg.layer_windows == [5, None, None, None] and cfg.layer_pe == ["nope", None, None, "rope"]
    loaded, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert type(loaded) is type(model)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert torch.equal(_logits(loaded.eval(), ids), _logits(model, ids))
    tied = loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    assert tied == tie
    assert adapter_for(loaded).native_plans() == adapter_for(model).native_plans()


# ---------------------------------------------------------------- forward, loss, generation


def test_loss_is_shifted_cross_entropy_and_padding_is_refused():
    model = tiny_model(PATTERN, seed=2)
    ids = _ids()
    labels = ids.clone()
    labels[0, 5] = -100
    out = model(input_ids=ids, labels=labels)
    logits = out.logits
    manual = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 256), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    assert torch.allclose(out.loss, manual)
    assert abs(out.loss.item() - math.log(256)) < 0.5  # near-uniform at init
    assert torch.equal(
        _logits(model, ids), model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.detach()
    )
    mask = torch.ones_like(ids)
    mask[1, 0] = 0
    with pytest.raises(ValueError, match="attention_mask"):
        model(input_ids=ids, attention_mask=mask)


def test_model_is_causal():
    model = tiny_model("SMGF", seed=3)
    ids = _ids(1, 20)
    other = ids.clone()
    other[0, 12:] = (other[0, 12:] + 1) % 256
    a, b = _logits(model, ids), _logits(model, other)
    assert torch.equal(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_backward_reaches_every_parameter():
    model = tiny_model(PATTERN, seed=4).train()
    ids = _ids()
    model(input_ids=ids, labels=ids).loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_greedy_generate_matches_argmax_and_hf_generate():
    model = tiny_model(PATTERN, seed=5)
    ids = _ids(1, 6)
    out = greedy_generate(model, ids, 4)
    assert out.shape == (1, 10) and torch.equal(out[:, :6], ids)
    for t in range(6, 10):
        assert out[0, t] == _logits(model, out[:, :t])[0, -1].argmax()
    assert torch.equal(model.generate(ids, max_new_tokens=4, do_sample=False), out)
    assert torch.equal(model.generate(ids, max_new_tokens=4, do_sample=False, use_cache=False), out)


def test_backends_agree():
    ids = _ids(1, 40)
    ref = _logits(tiny_model(PATTERN, seed=6, attn_backend="reference", linear_backend="recurrent"), ids)
    fast = _logits(tiny_model(PATTERN, seed=6, attn_backend="sdpa", linear_backend="chunked"), ids)
    assert torch.allclose(ref, fast, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- capture


def _manual_rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Independent RoPE: pair channel j with j + D/2 as one complex number, rotate by pos * theta^(-2j/D)."""
    B, H, L, D = x.shape
    half = D // 2
    angle = torch.arange(L, dtype=torch.float64)[:, None] * theta ** (-2.0 * torch.arange(half) / D)[None, :]
    z = torch.complex(x[..., :half].double(), x[..., half:].double()) * torch.polar(
        torch.ones_like(angle), angle
    )
    return torch.cat([z.real, z.imag], dim=-1).float()


@pytest.mark.parametrize("layer, pe", [(0, "rope"), (3, "nope")])
def test_capture_q_k_after_rope(layer, pe):
    model = tiny_model("SMGF", seed=7, layer_pe=["rope", None, None, "nope"])
    attn = model.model.layers[layer].mixer
    seen = {}
    handle = attn.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
    ids = _ids(2, 12)
    with adapter_for(model).capture(names=("q", "k"), layers=[layer]) as cap:
        _logits(model, ids)
    handle.remove()
    x = seen["x"]
    B, L = ids.shape
    q = attn.q_norm(attn.q_proj(x).view(B, L, 4, 16)).transpose(1, 2)
    k = attn.k_norm(attn.k_proj(x).view(B, L, 2, 16)).transpose(1, 2)
    if pe == "rope":
        q, k = _manual_rope(q, model.config.rope_theta), _manual_rope(k, model.config.rope_theta)
    assert cap[(layer, "q")].shape == (2, 4, 12, 16) and cap[(layer, "k")].shape == (2, 2, 12, 16)
    assert torch.allclose(cap[(layer, "q")], q, atol=1e-5)
    assert torch.allclose(cap[(layer, "k")], k, atol=1e-5)
    assert (layer, "mixer_out") not in cap


def test_capture_mixer_out_all_layers_and_cleanup():
    model = tiny_model("SMGF", seed=8)
    outs = {}
    hooks = [
        layer.mixer.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, o))
        for i, layer in enumerate(model.model.layers)
    ]
    ids = _ids(2, 10)
    with adapter_for(model).capture() as cap:
        _logits(model, ids)
    for h in hooks:
        h.remove()
    assert sorted(cap.keys()) == [
        (0, "k"),
        (0, "mixer_out"),
        (0, "q"),
        (1, "mixer_out"),
        (2, "mixer_out"),
        (3, "k"),
        (3, "mixer_out"),
        (3, "q"),
    ]
    for i in range(4):
        assert cap[(i, "mixer_out")].shape == (2, 10, 64)
        assert torch.equal(cap[(i, "mixer_out")], outs[i])
    with pytest.raises(KeyError, match="attention layers only"):
        cap[(1, "q")]
    assert all(layer.mixer._capture is None for layer in model.model.layers)
    with pytest.raises(ValueError, match="names"):
        with adapter_for(model).capture(names=("attn_probs",)):
            pass
    with pytest.raises(ValueError, match="layers"):
        with adapter_for(model).capture(layers=[9]):
            pass
