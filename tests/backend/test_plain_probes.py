"""Plain probes on a model whose layer kinds HybridScope does not know (issue 10): the empty ablation of
token_loss / LongPPL / NIAH needs no adapter, only the model's own forward and head; probes that read the
model's layers (retrieval heads, sweeps) and any ablation are refused with one line before weights load.

The model is a local remote-code checkpoint the test writes (:mod:`tests.mystery_remote`): a
``mystery_mixer`` layer kind no adapter knows, and a loss head of its own (logits x 0.5 inside its
forward), so the decoder + LM head path would be wrong by a factor and only the model's own logits are right.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backend import loading
from backend.model_support import support
from backend.probes.longppl_math import short_logprobs, short_logprobs_naive
from backend.probes.niah import samples_for
from backend.runner import Runner
from backend.spec import RunSpec
from models.adapters import UnsupportedModel, adapter_for, layer_info
from models.generate import greedy_generate
from tests.backend.test_longppl import write_docs
from tests.mystery_remote import write_mystery_checkpoint

TRUST = "HYBRIDSCOPE_TRUST_REMOTE_CODE"


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("roots")
    write_mystery_checkpoint(root / "mystery")
    return root


@pytest.fixture
def root(model_root, monkeypatch):
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(model_root))
    monkeypatch.setenv(TRUST, "1")
    loading.clear_cache()
    yield model_root
    loading.clear_cache()


def hf_token_nll(model, x: torch.Tensor) -> np.ndarray:
    """HF's own per-token loss: cross-entropy of the model's forward output logits."""
    with torch.no_grad():
        logits = model(input_ids=x).logits[0].float()
    return F.cross_entropy(logits[:-1], x[0, 1:], reduction="none").numpy()


def test_the_model_is_unknown_to_the_adapters(root):
    listed = support("mystery")
    assert not listed["supported"] and "'mystery_mixer' layers are not supported" in listed["reason"]
    model = loading.load("mystery").model
    assert type(model).__module__.startswith("transformers_modules.") and layer_info(model) is None
    with pytest.raises(UnsupportedModel):
        adapter_for(model).info()


def test_token_loss_is_hfs_own_per_token_loss(root, tmp_path):
    runner = Runner(tmp_path / "store", read_only_roots=[])
    data = write_docs(tmp_path, n_docs=2, n_words=60)
    res = runner.run(RunSpec.build(model="mystery", probe="token_loss", data=data,
                                   params={"n_docs": 2, "max_tokens": 96}))
    assert not res.cached and res.manifest["status"] == "ok"
    assert res.manifest["meta"]["model_info"] is None  # no layer layout to store
    rows = res.tables["token_loss"]
    lm = loading.load("mystery")
    for d in range(2):
        text = (tmp_path / "docs" / f"doc{d}.txt").read_text()
        x = torch.tensor([lm.codec.encode(text, max_tokens=96).ids[:96]])
        want = hf_token_nll(lm.model, x)
        got = np.array([n for doc, n in zip(rows["doc"], rows["nll"]) if doc == d])
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        with torch.no_grad():  # the labels= loss of the checkpoint's own forward, too
            assert abs(float(got.mean()) - lm.model(input_ids=x, labels=x).loss.item()) < 1e-5
        # the decoder + LM head path lacks the model's own head (x 0.5): it would be off by far more
        with torch.no_grad():
            h = lm.model.get_decoder()(input_ids=x).last_hidden_state
            unscaled = F.cross_entropy(lm.model.lm_head(h)[0, :-1], x[0, 1:], reduction="none").numpy()
        assert np.abs(unscaled - want).max() > 0.1
    again = runner.run(RunSpec.build(model="mystery", probe="token_loss", data=data,
                                     params={"n_docs": 2, "max_tokens": 96}))
    assert again.cached and again.run_id == res.run_id


def test_longppl_and_niah_run_on_the_models_own_forward(root, tmp_path):
    lm = loading.load("mystery")
    x = torch.randint(3, 300, (1, 64), generator=torch.Generator().manual_seed(0))
    fast, naive = short_logprobs(lm.model, x, 16, 8), short_logprobs_naive(lm.model, x, 16, 8)
    np.testing.assert_allclose(fast, naive, atol=1e-5, rtol=0, equal_nan=True)  # naive: model(x).logits
    runner = Runner(tmp_path / "store", read_only_roots=[])
    data = write_docs(tmp_path, n_docs=1, n_words=80)
    lp = {"n_docs": 1, "max_tokens": 128, "trunc_len": 32, "stride": 16, "alpha": -50.0, "beta": -50.0}
    res = runner.run(RunSpec.build(model="mystery", probe="longppl", data=data, params=lp))
    meta = res.manifest["meta"]
    assert meta["n_key"] > 0 and meta["longppl"] is not None and np.isfinite(meta["longppl"])
    tl = runner.run(RunSpec.build(model="mystery", probe="token_loss", data=data,
                                  params={"n_docs": 1, "max_tokens": 128}))
    assert meta["ppl"] == pytest.approx(tl.manifest["meta"]["ppl"], rel=1e-6)
    niah = runner.run(RunSpec.build(model="mystery", probe="niah",
                                    params={"lengths": [512], "depths": [0.5], "samples": 1, "max_new_tokens": 4}))
    (pred,) = niah.tables["niah"]["predicted"]
    # the same prompt, decoded by the argmax of HF's own logits
    prompt = lm.codec.encode(samples_for(_ctx(lm, niah))[0].prompt).ids
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(4):
            nxt = lm.model(input_ids=ids).logits[:, -1:].argmax(-1)
            if lm.codec.eos_id is not None and int(nxt) == lm.codec.eos_id:
                break
            ids = torch.cat([ids, nxt], 1)
    assert pred == lm.codec.decode(ids[0, len(prompt):].tolist())
    assert torch.equal(greedy_generate(lm.model, torch.tensor([prompt]), 4, eos_id=lm.codec.eos_id), ids)


def _ctx(lm, res):
    from backend.probes.context import ProbeContext

    spec = RunSpec.model_validate(res.manifest["spec"])
    return ProbeContext(spec, spec.typed_params, lm, None, lambda f, m: None)


def no_load(ref, device=None):
    raise AssertionError("weights were loaded")


@pytest.mark.parametrize("probe, params, ablation, field", [
    ("retrieval_heads", {"lengths": [48], "depths": [0.5], "samples": 1}, "", "probe"),
    ("sweep", {"n_docs": 1}, "", "probe"),
    ("token_loss", {"n_docs": 1}, "skip=1", "ablation"),
])
def test_what_needs_the_layers_is_refused_with_one_line_before_loading(root, tmp_path, monkeypatch, probe, params,
                                                                       ablation, field):
    monkeypatch.setattr(loading, "load", no_load)
    runner = Runner(tmp_path / "store", read_only_roots=[])
    data = write_docs(tmp_path, n_docs=1, n_words=40)
    spec = RunSpec.build(model="mystery", probe=probe, data=data, params=params, ablation=ablation)
    with pytest.raises(UnsupportedModel) as e:
        runner.run(spec)
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"{field}: ")
    assert "config.layer_types[1]: 'mystery_mixer' layers are not supported" in text
    assert "allowed on this model: the empty ablation with token_loss, longppl, niah" in text
    assert runner.store.runs() == [] and runner.computed == []  # bad input: nothing stored
