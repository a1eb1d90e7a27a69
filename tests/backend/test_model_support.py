"""What a model supports, from its config alone: `support` (the models listing) and the runner's early
refusal of ablations the config rules out, before any weight is read and without storing a run."""

from __future__ import annotations

import pytest

from backend import loading
from backend.model_support import support
from backend.runner import Runner
from backend.spec import RunSpec
from models.ablation import AblationError
from models.adapters import UnsupportedModel
from tests import hf_tiny
from tests.hf_families import build


@pytest.fixture
def root(tmp_path, monkeypatch):
    r = tmp_path / "roots"
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(r))
    loading.clear_cache()
    yield r
    loading.clear_cache()


def test_support_of_native_and_hf_models(root, monkeypatch):
    hf_tiny.save_checkpoint(build("gemma2", vocab_size=320), root / "g2")
    hf_tiny.save_checkpoint(build("qwen3", vocab_size=320), root / "q3")
    native = support("tiny/SMGF")
    assert native["supported"] and native["layer_types"][1:3] == ["mamba2", "gated_deltanet"]
    assert "receptive_field" in native["toggles"] and "window" in native["toggles"]
    q3 = support("q3")
    assert q3["supported"] and q3["model_type"] == "qwen3" and "window" in q3["toggles"]
    g2 = support("g2")  # attention-logit softcapping: in HybridScope's kernel, so every toggle applies
    assert g2["supported"] and {"window", "sinks", "receptive_field", "pe"} <= set(g2["toggles"])
    from models.adapters.hf import HFAdapter  # a family whose attention the kernel lacks: hooks only

    monkeypatch.setattr(HFAdapter, "kernel_gaps", classmethod(lambda cls, config: ["a feature (config.x)"]))
    q3 = support("q3")
    assert q3["supported"] and "window" not in q3["toggles"] and "pe" in q3["toggles"]


def test_unreadable_config_is_one_line(root):
    (root / "broken").mkdir(parents=True)
    (root / "broken" / "config.json").write_text("{not json")
    s = support("broken")
    assert not s["supported"] and s["reason"].startswith("config: cannot be read") and "\n" not in s["reason"]


def test_runner_refuses_before_loading_and_stores_nothing(root, tmp_path, monkeypatch):
    hf_tiny.save_checkpoint(build("gemma2", vocab_size=320), root / "g2")

    def no_load(ref, device=None):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(loading, "load", no_load)
    runner = Runner(tmp_path / "store", read_only_roots=[])
    (tmp_path / "doc.txt").write_text("the quick brown fox " * 30)
    data = f"file:{tmp_path / 'doc.txt'}"
    with pytest.raises(AblationError, match=r"receptive_field\[linear\]: selects no layer"):
        runner.run(RunSpec.build(model="g2", probe="token_loss", data=data, ablation="rf[linear]=8"))
    with pytest.raises(AblationError, match=r"layer 7 out of range"):
        runner.run(RunSpec.build(model="tiny/SF", probe="token_loss", data=data, ablation="skip=7"))
    assert runner.store.runs() == [] and runner.computed == []
    assert issubclass(UnsupportedModel, ValueError)  # refusals are bad input (exit 2 / HTTP 4xx)


def test_what_the_kernel_lacks_is_refused_before_loading(root, tmp_path, monkeypatch):
    from models.adapters import HFAdapter

    hf_tiny.save_checkpoint(build("qwen3", vocab_size=320), root / "q3")
    monkeypatch.setattr(HFAdapter, "kernel_gaps", classmethod(lambda cls, config: ["feature X"]))
    monkeypatch.setattr(loading, "load", lambda ref, device=None: (_ for _ in ()).throw(AssertionError("loaded")))
    runner = Runner(tmp_path / "store", read_only_roots=[])
    (tmp_path / "doc.txt").write_text("the quick brown fox " * 30)
    data = f"file:{tmp_path / 'doc.txt'}"
    for text, first in (("rf[full]=4", 1), ("window[swa]=none", 0), ("window[0]=8;sinks=2", 0)):
        with pytest.raises(UnsupportedModel) as e:
            runner.run(RunSpec.build(model="q3", probe="token_loss", data=data, ablation=text))
        assert str(e.value).startswith(f"ablation: window / sinks / receptive-field changes on attention layers "
                                       f"({first}") and "need feature X" in str(e.value) and "\n" not in str(e.value)
    assert runner.store.runs() == []
    with pytest.raises(AssertionError, match="loaded"):  # hook-only toggles pass the check: loading starts
        runner.run(RunSpec.build(model="q3", probe="token_loss", data=data, ablation="pe[full]=nope;skip=1"))


def test_a_model_nothing_can_run_is_refused_before_loading_even_for_plain_probes(root, tmp_path, monkeypatch):
    """A bidirectional-attention config: the listing says refused, and so does the runner, before any weight
    is read and without storing a run (the plain probes cannot run it either: the adapters refuse it)."""
    hf_tiny.save_checkpoint(hf_tiny.build("gemma3", vocab_size=320, use_bidirectional_attention=True), root / "g3b")
    listed = support("g3b")
    assert (listed["status"], listed["plain_probes"]) == ("refused", [])

    def no_load(*a, **k):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(loading, "load", no_load)
    runner = Runner(tmp_path / "store", read_only_roots=[])
    (tmp_path / "doc.txt").write_text("the quick brown fox " * 30)
    spec = RunSpec.build(model="g3b", probe="token_loss", data=f"file:{tmp_path / 'doc.txt'}")
    with pytest.raises(UnsupportedModel) as e:
        runner.run(spec)
    assert str(e.value) == ("model: 'g3b' cannot run in HybridScope: config.use_bidirectional_attention: only "
                            "causal (False) models are supported")
    assert runner.store.runs() == [] and runner.computed == []
