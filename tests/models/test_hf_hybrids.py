"""The recurrent and hybrid HF families on tiny random checkpoints: parity with HF's own forward, and the
receptive field of each recurrent mixer defined and tested exactly as in the native family.

Empty ablation = HF logits exactly; per-token loss = HF's own loss; the handlers' unrestricted path =
HF's forward (fp32, tight); ``rf=k`` on a recurrent mixer: a perturbation older than k tokens changes
nothing, a newer one changes the output (mixer level and end to end); skip / head mask = zeroed output
projection / columns; NoPE = zero rotation frequencies; mixer_out capture on recurrent and hybrid
layers; what a window cannot honour (padding, decoding from a recurrent cache) is refused in one line.
"""

from __future__ import annotations

import contextlib
import inspect
import math

import pytest
import torch

from backend.attention_probe import row_probs
from backend.forward import token_nll
from models.adapters import adapter_for, describe
from models.adapters.recurrent import restrict
from models.apply import apply_ablation
from models.plan import FULL, HYBRID, LIGHTNING, MAMBA, MAMBA2, SHORT_CONV, recurrence_window
from tests.hf_families import tokens, zero_rotation
from tests.hf_hybrids import HYBRIDS, build, recurrent_layers

NAMES = sorted(HYBRIDS)


@torch.no_grad()
def logits(model, ids, **kw) -> torch.Tensor:
    return model(ids, **kw).logits


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = 2e-5) -> None:
    assert a.shape == b.shape
    err = (a - b).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), err


def _mixer(model, layer: int):
    return adapter_for(model).recurrent_module(layer)


@pytest.mark.parametrize("name", NAMES)
def test_describe_and_info_from_the_config_alone(name):
    model = build(name)
    d = describe(model.config)
    assert d["supported"] and tuple(d["layer_types"]) == HYBRIDS[name].kinds
    assert {"receptive_field", "skip_layers", "window", "sinks"} <= set(d["toggles"])
    assert ("pe" in d["toggles"]) == HYBRIDS[name].rope
    assert adapter_for(model).info().layer_types == HYBRIDS[name].kinds


@pytest.mark.parametrize("name", NAMES)
def test_empty_ablation_is_bit_identical_and_loss_is_the_models_own(name):
    model, ids = build(name), tokens()
    ref = logits(model, ids)
    with apply_ablation(model, "") as plans:
        assert len(plans) == len(HYBRIDS[name].kinds)
        assert torch.equal(logits(model, ids), ref)
        nll = token_nll(model, ids)
    with torch.no_grad():
        hf_loss = model(ids, labels=ids).loss
    assert abs(nll.mean().item() - hf_loss.item()) < 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_unrestricted_handler_path_equals_hf_forward(name):
    """force_kernel: every mixer through HybridScope's kernels (attention too), no restriction."""
    model, ids = build(name), tokens(length=40)
    ref = logits(model, ids)
    adapter = adapter_for(model)
    with adapter.apply(adapter.native_plans(), force_kernel=True):
        assert "forward" in vars(_mixer(model, recurrent_layers(name)[0]))  # the handler is in place
        assert_close(logits(model, ids), ref)
        assert_close(logits(model, ids, use_cache=False), ref)
    assert "forward" not in vars(_mixer(model, recurrent_layers(name)[0]))  # and gone after


# ---------------------------------------------------------------- receptive field, mixer level

L = 40


def _slow_decay(model):
    """Decays close to 1 so that old tokens still matter visibly after k steps (the receptive-field
    property is structural and must hold for any parameters)."""
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "A_log"):
                m.A_log.fill_(math.log(0.05))
            if hasattr(m, "dt_bias"):
                m.dt_bias.fill_(0.5)
            if hasattr(m, "slope_rate"):
                m.slope_rate.fill_(0.05)
    return model


def _influence(module, p: int, hidden: int = 64) -> torch.Tensor:
    """max |change| of the mixer output at every t when its input at position p is perturbed, relative to
    the output's magnitude (the windowed kernels are exact up to float rounding, ~1e-7 relative)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, L, hidden, generator=gen)
    x2 = x.clone()
    x2[0, p] += torch.randn(hidden, generator=gen)
    extra = {"position_embeddings": None, "attention_mask": None} if "position_embeddings" in str(
        inspect.signature(type(module).forward)) else {}

    def out(inp):
        with torch.no_grad():
            y = module(hidden_states=inp, **extra)
        return y[0] if isinstance(y, tuple) else y

    y = out(x)
    return (out(x2) - y).abs().amax(-1)[0] / max(1.0, y.abs().max().item())  # relative to the output's scale


RESTRICTED = [n for n in NAMES if HYBRIDS[n].kinds[recurrent_layers(n)[0]] != SHORT_CONV]


@pytest.mark.parametrize("name", RESTRICTED)
@pytest.mark.parametrize("k", [4, 7, 17])
def test_receptive_field_is_exactly_k_at_the_mixer(name, k):
    model = _slow_decay(build(name))
    layer = recurrent_layers(name)[0]
    kind = HYBRIDS[name].kinds[layer]
    kind = MAMBA2 if kind == HYBRID else kind
    conv = adapter_for(model).info().conv_kernel
    module = _mixer(model, layer)
    native = _influence(module, 0)
    assert native[-1] > 1e-5  # unrestricted: position 0 still reaches the end
    with contextlib.ExitStack() as stack:
        restrict(module, kind, layer, recurrence_window(k, conv), stack)
        for p in (0, 5, 13):
            diff = _influence(module, p)
            assert torch.all(diff[:p] == 0)  # causal
            assert diff[p : p + k].min() > 1e-5, diff[p : p + k]
            assert diff[p + k :].max() <= 1e-6, diff[p + k :]


def test_short_convolutions_reach_only_their_width_so_any_allowed_field_changes_nothing():
    model = build("lfm2")
    module, conv = _mixer(model, 0), adapter_for(model).info().conv_kernel
    diff = _influence(module, 5)
    assert diff[5 : 5 + conv].min() > 1e-5 and diff[5 + conv :].max() == 0
    with contextlib.ExitStack() as stack:
        restrict(module, SHORT_CONV, 0, recurrence_window(conv, conv), stack)
        torch.testing.assert_close(_influence(module, 5), diff)
    ids = tokens()
    ref = logits(model, ids)
    with apply_ablation(model, f"rf[linear]={conv}"):
        assert_close(logits(model, ids), ref)


# ---------------------------------------------------------------- receptive field, end to end


@pytest.mark.parametrize("name", NAMES)
def test_receptive_field_end_to_end(name):
    """rf[all]=k: token p reaches at most (k-1) positions further per layer with a token mixer; the
    restriction changes logits; rf[linear] leaves the attention layers' reach unrestricted."""
    model, k = _slow_decay(build(name)), 5
    kinds = adapter_for(model).info().layer_types
    serial = 2 if HYBRIDS[name].serial else 1  # Zamba2: attention, then Mamba-2, in one layer
    reach = sum((k - 1) * (serial if kind == HYBRID else 1) for kind in kinds if kind not in ("mlp", "moe"))
    p = 2
    ids = tokens(batch=1, length=p + reach + 6)
    ids2 = ids.clone()
    ids2[0, p] = 3 if int(ids[0, p]) != 3 else 4
    ref = logits(model, ids)
    with apply_ablation(model, f"rf[all]={k}"):
        out, out2 = logits(model, ids), logits(model, ids2)
    assert not torch.allclose(out, ref, atol=1e-3)
    diff = (out2 - out).abs().amax(-1)[0]
    assert torch.all(diff[:p] == 0) and diff[p] > 1e-4
    assert diff[p + reach + 1 :].max() <= 1e-5, diff
    with apply_ablation(model, f"rf[linear]={k}") as plans:
        restricted = logits(model, ids)
    short_conv = HYBRIDS[name].kinds[recurrent_layers(name)[0]] == SHORT_CONV  # any allowed field: no change
    assert torch.allclose(restricted, ref, atol=1e-4) == short_conv
    assert all(p.window is None for p, kind in zip(plans, kinds, strict=True) if kind in (FULL, HYBRID))


# ---------------------------------------------------------------- skip, head masks, NoPE


def _zero(model, layer: int, heads: list[int] | None, head_dim: int) -> None:
    """Zero the output projection (columns of ``heads``) of every mixer of ``layer``."""
    adapter = adapter_for(model)
    kind = adapter.info().layer_types[layer]
    projs = []
    if kind in ("mlp", "moe"):
        projs = [adapter.layers()[layer].mixer.down_proj]
    else:
        if kind != FULL:
            projs.append(_mixer(model, layer).out_proj)
        if kind in (FULL, HYBRID) and heads is None:
            attn = adapter.attention_module(layer)
            projs.append(getattr(attn, adapter.out_proj_name))
    with torch.no_grad():
        for proj in projs:
            if heads is None:
                proj.weight.zero_()
                if proj.bias is not None:
                    proj.bias.zero_()
            for h in heads or []:
                proj.weight[:, h * head_dim : (h + 1) * head_dim] = 0


@pytest.mark.parametrize("name", NAMES)
def test_skip_equals_zeroed_output_projections(name):
    model, ids = build(name), tokens()
    layers = [recurrent_layers(name)[0]] + ([3] if name == "nemotron_h" else [])
    for layer in layers:
        twin = build(name, source=model)
        _zero(twin, layer, None, 0)
        want = logits(twin, ids)
        assert not torch.allclose(want, logits(model, ids), atol=1e-3)
        with apply_ablation(model, f"skip={layer}"):
            assert_close(logits(model, ids), want)


@pytest.mark.parametrize("name", [n for n in NAMES if HYBRIDS[n].heads and HYBRIDS[n].kinds[0] != HYBRID])
def test_recurrent_head_masks_equal_zeroed_projection_columns(name):
    model, ids = build(name), tokens()
    layer = [i for i in recurrent_layers(name) if HYBRIDS[name].kinds[i] != HYBRID][-1]
    module = _mixer(model, layer)
    head_dim = getattr(module, "head_v_dim", None) or module.head_dim
    twin = build(name, source=model)
    _zero(twin, layer, [1, 3], head_dim)
    want = logits(twin, ids)
    assert not torch.allclose(want, logits(model, ids), atol=1e-3)
    with apply_ablation(model, f"heads={layer}.1,{layer}.3"):
        assert_close(logits(model, ids), want)


def test_hybrid_layer_heads_are_its_attention_heads():
    model, ids = build("falcon_h1"), tokens()
    twin = build("falcon_h1", source=model)
    with torch.no_grad():
        twin.model.layers[2].self_attn.o_proj.weight[:, 16:32] = 0
    with apply_ablation(model, "heads=2.1"):
        assert_close(logits(model, ids), logits(twin, ids))


@pytest.mark.parametrize("name", [n for n in NAMES if HYBRIDS[n].rope])
def test_nope_equals_zero_rotation_frequencies(name):
    model, ids = build(name), tokens()
    twin = zero_rotation(build(name, source=model))
    want = logits(twin, ids)
    assert not torch.allclose(want, logits(model, ids), atol=1e-3)
    with apply_ablation(model, "pe[full]=nope"):
        assert_close(logits(model, ids), want)


# ---------------------------------------------------------------- capture, rows, refusals


@pytest.mark.parametrize("name", NAMES)
def test_retrieval_rows_equal_hf_eager_attention(name):
    model, ids = build(name), tokens(batch=1, length=20)
    model.set_attn_implementation("eager")
    queries = [3, 11, 19]
    with torch.no_grad():
        eager = model(ids, output_attentions=True).attentions
    rows = row_probs(model, ids, queries)
    kinds = HYBRIDS[name].kinds
    assert sorted(rows) == [i for i, k in enumerate(kinds) if k in (FULL, HYBRID)]
    if len(eager) == len(kinds):  # one entry per layer (MiniMax's linear layers return their KV state there)
        eager = [eager[i] for i in sorted(rows)]
    for layer, att in zip(sorted(rows), eager, strict=True):
        assert_close(rows[layer], att[0, :, queries].float(), 1e-5)


@pytest.mark.parametrize("name", ["bamba", "falcon_h1", "nemotron_h", "minimax", "zamba2"])
def test_mixer_out_capture_on_recurrent_and_hybrid_layers(name):
    model, ids = build(name), tokens()
    adapter = adapter_for(model)
    layer = recurrent_layers(name)[0]
    seen: dict[str, torch.Tensor] = {}
    parts = adapter.mixer_outputs(layer)

    def keep(j):
        return lambda mod, args, out: seen.__setitem__(j, out[0] if isinstance(out, tuple) else out)

    hooks = [m.register_forward_hook(keep(j)) for j, (m, _) in enumerate(parts)]
    try:
        with adapter.capture(names=("mixer_out", "q"), layers=[layer, 1]) as cap:
            model(ids)
    finally:
        for h in hooks:
            h.remove()
    want = sum(seen[j] * s for j, (_, s) in enumerate(parts))
    assert_close(cap[(layer, "mixer_out")], want, 1e-6)
    assert cap[(layer, "mixer_out")].shape == (2, ids.shape[1], 64)
    assert ((layer, "q") in cap) == (name == "falcon_h1")
    assert ((1, "q") in cap) == (HYBRIDS[name].kinds[1] in (FULL, HYBRID))  # keyed by the layer (Zamba2's shared
    # blocks have layer_idx -1 in HF)
    with apply_ablation(model, f"skip={layer}"), adapter.capture(names=("mixer_out",), layers=[layer]) as cap:
        model(ids)
    assert torch.all(cap[(layer, "mixer_out")] == 0)


def test_what_a_window_cannot_honour_is_refused_in_one_line():
    model, ids = build("bamba"), tokens()
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with apply_ablation(model, "rf[linear]=8"):
        with pytest.raises(ValueError, match="padded batches are not supported") as e:
            model(ids, attention_mask=mask)
        assert "\n" not in str(e.value)
        out = model(ids[:, :10], use_cache=True)
        with pytest.raises(NotImplementedError, match="full-sequence forwards only") as e:
            model(ids[:, 10:11], past_key_values=out.past_key_values, use_cache=True)
        assert "\n" not in str(e.value)
    cache = build("bamba")(ids[:, :10], use_cache=True).past_key_values  # state from HF's own path
    with apply_ablation(model, "rf[linear]=8"), pytest.raises(NotImplementedError, match="full-sequence"):
        model(ids[:, 10:11], past_key_values=cache, use_cache=True)


@pytest.mark.parametrize("text, match", [
    ("rf[linear]=3", "shorter than the short-conv width"),
    ("heads=0.0", "allows heads none"),
])
def test_jamba_refusals(text, match):
    with pytest.raises(ValueError, match=match):
        with apply_ablation(build("jamba"), text):
            pass


def test_kinds_map_onto_the_handlers():
    from models.adapters.recurrent import HANDLERS

    assert {MAMBA2, MAMBA, SHORT_CONV, LIGHTNING} <= set(HANDLERS)
    assert {k for n in NAMES for k in HYBRIDS[n].kinds} - set(HANDLERS) == {FULL, HYBRID, "mlp", "moe"}
