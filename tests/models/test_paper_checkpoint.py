"""The paper's own checkpoints: remote code whose config has ``eval_sliding_window`` /
``eval_attention_sink_size`` (a local remote-code checkpoint the tests write, :mod:`tests.paper_remote`).

Loading needs the operator's opt-in and is refused with one line otherwise (before any file is hashed or
any run stored); the empty ablation is the checkpoint's own forward; ``rf[full]=k;sinks=n`` is the same
checkpoint with the knobs set in its config.json, and what HybridScope's kernel computes on the same
weights as plain Qwen3; the knobs are restored after ``apply``; what the knobs cannot express is refused
with one line before weights load; token_loss and LongPPL run through the Runner.
"""

from __future__ import annotations

import pytest
import torch

from backend import loading
from backend.model_refs import ModelRefError
from backend.model_support import support
from backend.runner import Runner
from backend.spec import RunSpec
from models.adapters import HFAdapter, UnsupportedModel, adapter_class_for, adapter_for
from models.adapters.paper import PaperAdapter
from models.apply import apply_ablation
from models.plan import FULL
from tests import hf_tiny
from tests.backend.test_longppl import write_docs
from tests.paper_remote import write_paper_checkpoint

ALL_FULL = [FULL] * 4
CHECKPOINTS = {  # ref -> config.json fields (default layout: SWA, full, SWA, full; window 8; knobs off)
    "paper": {},
    "paper_k6": dict(eval_sliding_window=6),
    "paper_full": dict(layer_types=ALL_FULL),
    "paper_full_k6s2": dict(layer_types=ALL_FULL, eval_sliding_window=6, eval_attention_sink_size=2),
}
TRUST = "HYBRIDSCOPE_TRUST_REMOTE_CODE"


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("roots")
    for name, fields in CHECKPOINTS.items():
        write_paper_checkpoint(root / name, **fields)
    return root


@pytest.fixture
def root(model_root, monkeypatch):
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(model_root))
    monkeypatch.setenv(TRUST, "1")
    loading.clear_cache()
    yield model_root
    loading.clear_cache()


def ids(length: int = 40) -> torch.Tensor:
    return torch.randint(3, 300, (2, length), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def logits(model, x: torch.Tensor) -> torch.Tensor:
    return model(x).logits


def knobs(model) -> tuple:
    return model.config.eval_sliding_window, model.config.eval_attention_sink_size


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


def no_load(ref, device=None):
    raise AssertionError("weights were loaded")


def test_remote_code_is_refused_without_the_opt_in(root, monkeypatch, tmp_path):
    for value in (None, "true", "0"):  # only "1" opts in
        if value is None:
            monkeypatch.delenv(TRUST)
        else:
            monkeypatch.setenv(TRUST, value)
        with pytest.raises(ModelRefError) as e:
            loading.load("paper")
        assert one_line(e) == ("model: 'paper' runs its own code (config.json auto_map: modeling_paper_hybrid."
                               f"PaperHybridForCausalLM); HybridScope loads remote code only when the operator "
                               f"sets {TRUST}=1")
        listed = support("paper")
        assert not listed["supported"] and listed["remote_code"] and listed["reason"] == str(e.value)
    monkeypatch.setattr(loading, "load", no_load)
    runner = Runner(tmp_path / "store", read_only_roots=[])
    data = write_docs(tmp_path, n_docs=1, n_words=40)
    with pytest.raises(ModelRefError, match=f"sets {TRUST}=1$"):  # the empty ablation too: nothing stored
        runner.run(RunSpec.build(model="paper", probe="token_loss", data=data, params={"n_docs": 1}))
    assert runner.store.runs() == [] and runner.computed == []


def test_opted_in_the_checkpoint_loads_its_own_code_and_gets_the_paper_adapter(root):
    listed = support("paper_full")
    assert listed["supported"] and listed["remote_code"] and listed["adapter"] == PaperAdapter.family
    assert listed["layer_types"] == ALL_FULL and listed["kernel_gaps"] == []
    assert listed["toggles"] == ["window", "pe", "receptive_field", "sinks", "skip_layers", "mask_heads"]
    model = loading.load("paper").model
    assert type(model).__module__.startswith("transformers_modules.")
    assert type(adapter_for(model)) is PaperAdapter
    # a built-in class whose config merely carries the knobs: the generic adapter (its code ignores them)
    plain = hf_tiny.build("qwen3", vocab_size=320, eval_sliding_window=6)
    assert plain.config.eval_sliding_window == 6 and adapter_class_for(plain.config) is HFAdapter


def test_empty_ablation_is_the_checkpoints_own_forward(root):
    x = ids()
    for name in ("paper", "paper_k6"):
        model = loading.load(name).model
        want = logits(model, x)
        with apply_ablation(model, ""):
            assert knobs(model) == (CHECKPOINTS[name].get("eval_sliding_window"), 0)
            assert torch.equal(logits(model, x), want)
    # the remote model is Qwen3's weights and layout: its eager attention matches HF's Qwen3
    qwen3 = hf_tiny.build("qwen3", vocab_size=320)
    own = logits(loading.load("paper").model, x)
    torch.testing.assert_close(own, logits(qwen3, x), atol=2e-5, rtol=0)
    assert not torch.allclose(own, logits(loading.load("paper_k6").model, x), atol=1e-3)  # the knob acts


@pytest.mark.parametrize("text", ["rf[full]=6;sinks=2", "window[full]=6;sinks=2"])
def test_window_and_sinks_equal_the_knobs_configured_in_config_json(root, text):
    x = ids()
    model, configured = loading.load("paper_full").model, loading.load("paper_full_k6s2").model
    want = logits(configured, x)
    assert not torch.allclose(want, logits(model, x), atol=1e-3)
    with apply_ablation(model, text):
        assert knobs(model) == (6, 2)
        assert torch.equal(logits(model, x), want)
    assert knobs(model) == (None, 0)
    # HybridScope's own kernel on the same weights as plain Qwen3: the same attention
    plain = hf_tiny.build("qwen3", vocab_size=320, layer_types=ALL_FULL)
    with apply_ablation(plain, text):
        torch.testing.assert_close(logits(plain, x), want, atol=2e-5, rtol=0)


def test_receptive_field_of_full_layers_next_to_sliding_layers(root):
    x = ids()
    model = loading.load("paper").model
    want = logits(loading.load("paper_k6").model, x)
    with apply_ablation(model, "rf[full]=6"):
        assert torch.equal(logits(model, x), want)
    plain = hf_tiny.build("qwen3", vocab_size=320)
    with apply_ablation(plain, "rf[full]=6"):
        torch.testing.assert_close(logits(plain, x), want, atol=2e-5, rtol=0)


def test_knobs_are_restored_after_apply_also_on_error(root):
    model = loading.load("paper_k6").model
    assert all(m.config is model.config for m in model.modules() if hasattr(m, "config"))  # what layers read
    with apply_ablation(model, "rf[full]=3"):
        assert knobs(model) == (3, 0)
    assert knobs(model) == (6, 0)
    with pytest.raises(RuntimeError, match="boom"), apply_ablation(model, "window[full]=none"):
        assert knobs(model) == (6, 0)  # no full-layer window: config.json's knobs
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"), apply_ablation(model, "rf[full]=4"):
        assert knobs(model) == (4, 0)
        raise RuntimeError("boom")
    assert knobs(model) == (6, 0)


REFUSED = {  # ablation -> the start of its one-line refusal (checkpoint with sliding layers)
    "rf[full]=6;sinks=2": "ablation.sinks: this paper checkpoint's eval_attention_sink_size keeps sinks",
    "window[1]=4": "ablation: this paper checkpoint windows attention only through its config's",
    "window[swa]=4": "ablation: this paper checkpoint windows attention only through its config's",
    "rf[all]=4": "ablation: this paper checkpoint windows attention only through its config's",
}


@pytest.mark.parametrize("text", sorted(REFUSED))
def test_what_the_knobs_cannot_express_is_refused_with_one_line(root, tmp_path, monkeypatch, text):
    x = ids()
    model = loading.load("paper").model
    want = logits(model, x)
    with pytest.raises(UnsupportedModel) as e, apply_ablation(model, text):
        pass
    assert one_line(e).startswith(REFUSED[text])
    assert knobs(model) == (None, 0) and torch.equal(logits(model, x), want)  # nothing changed
    monkeypatch.setattr(loading, "load", no_load)  # the Runner refuses it from the config alone
    runner = Runner(tmp_path / "store", read_only_roots=[])
    data = write_docs(tmp_path, n_docs=1, n_words=40)
    with pytest.raises(UnsupportedModel) as e2:
        runner.run(RunSpec.build(model="paper", probe="token_loss", data=data, ablation=text, params={"n_docs": 1}))
    assert str(e2.value) == str(e.value) and runner.store.runs() == []


def test_skip_and_nope_use_the_generic_hooks(root):
    x = ids()
    model = loading.load("paper").model
    with apply_ablation(model, "skip=1"):
        skipped = logits(model, x)
    with apply_ablation(model, "pe[all]=nope"):
        nope = logits(model, x)
    w = model.model.layers[1].self_attn.o_proj.weight
    saved, rot = w.detach().clone(), model.model.rotary_emb.inv_freq.clone()
    try:
        with torch.no_grad():
            w.zero_()
        torch.testing.assert_close(skipped, logits(model, x), atol=2e-5, rtol=0)
        with torch.no_grad():
            w.copy_(saved)
            model.model.rotary_emb.inv_freq.zero_()
        torch.testing.assert_close(nope, logits(model, x), atol=2e-5, rtol=0)
    finally:
        with torch.no_grad():
            w.copy_(saved)
            model.model.rotary_emb.inv_freq.copy_(rot)
    assert not torch.allclose(skipped, logits(model, x), atol=1e-3)


def test_token_loss_and_longppl_through_the_runner(root, tmp_path):
    runner = Runner(tmp_path / "store", read_only_roots=[])
    data = write_docs(tmp_path, n_docs=1, n_words=80)
    tl = {"n_docs": 1, "max_tokens": 128}
    ablated = runner.run(RunSpec.build(model="paper_full", probe="token_loss", data=data, params=tl,
                                       ablation="rf[full]=6;sinks=2"))
    configured = runner.run(RunSpec.build(model="paper_full", probe="token_loss", data=data, params=tl))
    native = runner.run(RunSpec.build(model="paper_full_k6s2", probe="token_loss", data=data, params=tl))
    assert ablated.manifest["meta"]["mean_nll"] == native.manifest["meta"]["mean_nll"]
    assert abs(ablated.manifest["meta"]["mean_nll"] - configured.manifest["meta"]["mean_nll"]) > 1e-3
    lm = loading.load("paper_full_k6s2")  # the probe's loss is the checkpoint's own loss
    text = (tmp_path / "docs" / "doc0.txt").read_text()
    x = torch.tensor([lm.codec.encode(text, max_tokens=128).ids[:128]])
    with torch.no_grad():
        hf_loss = lm.model(x, labels=x).loss.item()
    assert abs(native.manifest["meta"]["mean_nll"] - hf_loss) < 1e-5
    lp = {"n_docs": 1, "max_tokens": 128, "trunc_len": 32, "stride": 16, "evaluator": "paper_full",
          "alpha": -50.0, "beta": -50.0}  # a random model: every scored target a key token
    a = runner.run(RunSpec.build(model="paper_full", probe="longppl", data=data, params=lp,
                                 ablation="rf[full]=6;sinks=2"))
    b = runner.run(RunSpec.build(model="paper_full_k6s2", probe="longppl", data=data, params=lp))
    assert a.manifest["meta"]["n_key"] == b.manifest["meta"]["n_key"] > 0
    assert a.manifest["meta"]["longppl"] == b.manifest["meta"]["longppl"]
    assert a.manifest["meta"]["ppl"] == pytest.approx(native.manifest["meta"]["ppl"], rel=1e-6)
    c = runner.run(RunSpec.build(model="paper_full", probe="longppl", data=data, params=lp))
    assert abs(c.manifest["meta"]["longppl"] / a.manifest["meta"]["longppl"] - 1) > 1e-3


def test_the_checkpoints_own_code_is_part_of_its_fingerprint(tmp_path, monkeypatch):
    from backend.model_refs import fingerprint, resolve

    write_paper_checkpoint(tmp_path / "p")
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(tmp_path))
    before = fingerprint(resolve("p"))
    code = tmp_path / "p" / "modeling_paper_hybrid.py"
    code.write_text(code.read_text() + "\n# edited\n")
    assert fingerprint(resolve("p")) != before  # other code: another model, other run_ids


def test_probes_that_need_q_k_say_so_when_the_checkpoint_computes_attention_itself(root, tmp_path):
    model = loading.load("paper").model
    with adapter_for(model).capture(names=("mixer_out",), layers=[1]) as cap:  # hooks on the module: fine
        logits(model, ids())
    assert cap[(1, "mixer_out")].shape == (2, 40, 64)
    with pytest.raises(RuntimeError) as e, adapter_for(model).capture(names=("q", "k"), layers=[1]):
        logits(model, ids())
    assert one_line(e).startswith("capture: layer 1's attention (PaperAttention) does not compute attention "
                                  "through transformers' attention interface")
    runner = Runner(tmp_path / "store", read_only_roots=[])
    with pytest.raises(RuntimeError, match="q / k cannot be recorded"):  # not a silently empty map
        runner.run(RunSpec.build(model="paper", probe="retrieval_heads", params={"lengths": [400]}))
