"""Zoo pipeline (CPU, tiny "smoke" sizes): train-all with equal steps and kernel fallbacks, continued
training from an earlier zoo root, precompute into a trace store, and the report."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from backend.spec import RunSpec
from tests.zoo.test_zoo_train import _args, _trainer
from zoo.data import load_corpus


# ---------------------------------------------------------------------------------- train-all + precompute
@pytest.fixture(scope="module")
def zoo_root(data_dir, tmp_path_factory):
    """train-all on two smoke variants; swa64's first attempt fails (as a kernel error would) and is
    retried with the next FALLBACKS entry."""
    from zoo import train as train_mod
    from zoo.train_all import train_all

    root = tmp_path_factory.mktemp("zoo_root")
    orig = train_mod.Trainer.train_step

    def flaky(self):
        if self.args.variant == "swa64" and self.args.attn_backend == "auto":
            raise RuntimeError("simulated FlexAttention compile failure")
        return orig(self)

    base = _args(variant="full", steps=3, eval_fractions=(0.5, 1.0))
    mp = pytest.MonkeyPatch()
    mp.setattr(train_mod.Trainer, "train_step", flaky)
    try:
        summary = train_all(root, data_dir, base, ["swa64", "mamba2"], eval_lengths=(384,), workers=0)
    finally:
        mp.undo()
    return root, summary


def test_train_all_equal_steps_and_fallback(zoo_root, data_dir):
    from zoo.train_all import train_all

    root, summary = zoo_root
    sw, mb = summary["variants"]["swa64"], summary["variants"]["mamba2"]
    assert sw["status"] == mb["status"] == "done" and sw["steps"] == mb["steps"] == 3
    assert sw["tokens_seen"] == mb["tokens_seen"]
    assert sw["hyperparameters"]["attn_backend"] == "sdpa" and mb["hyperparameters"]["attn_backend"] == "auto"
    assert json.loads((root / "zoo" / "swa64" / "config.json").read_text())["attn_backend"] == "auto"
    formation = json.loads((root / "formation.json").read_text())
    assert [r["step"] for r in formation["swa64"]] == [2, 3] and "max_full" in formation["swa64"][-1]
    again = train_all(root, data_dir, _args(variant="full", steps=3), ["swa64", "mamba2"], workers=0)
    assert again["variants"]["swa64"] == summary["variants"]["swa64"]  # finished variants are skipped


def test_continued_training_starts_from_the_export(zoo_root, data_dir, tmp_path):
    from models.modeling import HybridForCausalLM
    from zoo.train_all import train_all

    root, first = zoo_root
    corpus = load_corpus(data_dir, 256)
    tr = _trainer(corpus, tmp_path / "run", variant="mamba2", steps=4, init_from=str(root))
    src = HybridForCausalLM.from_pretrained(root / "zoo" / "mamba2", torch_dtype=torch.float32).state_dict()
    mine = tr.model.state_dict()
    assert sorted(mine) == sorted(src) and all(torch.equal(mine[k], src[k]) for k in src)
    assert tr.prior["steps"] == 3 and tr.prior["tokens"] == first["variants"]["mamba2"]["tokens_seen"]
    with pytest.raises(ValueError, match="differs from variant 'swa256' in sliding_window"):
        shutil.copytree(root / "zoo" / "swa64", tmp_path / "fake" / "zoo" / "swa256")
        (tmp_path / "fake" / "train_summary.json").write_text(
            json.dumps({"variants": {"swa256": {"steps": 3, "tokens_seen": 1536}}})
        )
        _trainer(corpus, tmp_path / "r2", variant="swa256", init_from=str(tmp_path / "fake"))
    with pytest.raises(FileNotFoundError, match="needs zoo/gdn/"):
        _trainer(corpus, tmp_path / "r3", variant="gdn", init_from=str(root))

    out = tmp_path / "stage2"
    args = _args(variant="full", steps=4, init_from=str(root))
    summary = train_all(out, data_dir, args, ["mamba2"], eval_lengths=(384,), workers=0)
    mb = summary["variants"]["mamba2"]
    assert mb["status"] == "done" and mb["steps"] == 3 + 4
    before = first["variants"]["mamba2"]["tokens_seen"]
    assert mb["tokens_seen"] == before + 4 * (before // 3)  # 3 steps before, 4 now, same batch
    assert mb["continued_from"]["steps"] == 3 and mb["continued_from"]["stage_steps"] == 4
    steps = [r["step"] for r in json.loads((out / "formation.json").read_text())["mamba2"]]
    assert steps == [2, 3, 5, 7]  # the first run's records, then this run's, counted on from step 3
    card = (out / "zoo" / "mamba2" / "README.md").read_text()
    assert "| steps | 7 |" in card and "| training stages | 3 steps (" in card and "then 4 steps continued" in card
    assert "0.25 of the rows in the last stage (0.25 before)" in card


def test_precompute_and_report(zoo_root, data_dir):
    from backend.store import TraceStore
    from zoo.precompute import PrecomputeConfig, precompute
    from zoo.report import report

    root, _ = zoo_root
    env_before = os.environ.get("HYBRIDSCOPE_PRECOMPUTED")
    cfg = PrecomputeConfig(
        n_docs=1,
        sweep_n_docs=1,
        max_tokens=300,
        trunc_len=128,
        stride=64,
        evaluator="zoo/swa64",
        ks=(16,),
        niah_lengths=(384,),
        niah_depths=(0.5,),
        niah_samples=1,
        rh_lengths=(384,),
    )
    s = precompute(root, data_dir, ["swa64", "mamba2", "gdn"], cfg, root / "formation.json")
    assert s["missing_models"] == ["gdn"] and not s["failed"] and not s["skipped"], s
    assert len(s["formation_runs"]) == 2 and len(s["steps"]) == 12
    store = TraceStore(root / "store", read_only=True)
    specs = [store.manifest(r)["spec"] for r in store.runs()]
    assert {sp["probe"] for sp in specs} == {
        "token_loss",
        "longppl",
        "key_tokens",
        "sweep",
        "niah",
        "retrieval_heads",
    }
    key_models = {sp["model"] for sp in specs if sp["probe"] == "key_tokens"}
    assert key_models == {"zoo/swa64"}  # one evaluator for all variants
    assert all(sp.get("data") in ("zoo:test", "formation:retrieval_heads_mass") for sp in specs)
    defaults = json.loads((root / "dashboard.json").read_text())["probes"]  # the views find these runs
    for probe, entry in defaults.items():
        want = RunSpec.build(model="zoo/swa64", probe=probe, **entry).canonical()
        assert want in specs, probe
    text = report(root)
    assert "swa64" in text and "mamba2" in text and "FAILED" not in text
    from backend.paths import precomputed_root

    assert os.environ.get("HYBRIDSCOPE_PRECOMPUTED") == env_before  # the override was undone
    assert precomputed_root() != root


def test_scoped_env_restores_the_previous_value_also_on_error(monkeypatch):
    from zoo.envvar import scoped_env

    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", "/before")
    with pytest.raises(RuntimeError), scoped_env("HYBRIDSCOPE_PRECOMPUTED", "/inside"):
        assert os.environ["HYBRIDSCOPE_PRECOMPUTED"] == "/inside"
        raise RuntimeError("a failing step")
    assert os.environ["HYBRIDSCOPE_PRECOMPUTED"] == "/before"
    monkeypatch.delenv("HYBRIDSCOPE_PRECOMPUTED")
    with scoped_env("HYBRIDSCOPE_PRECOMPUTED", "/inside"):
        pass
    assert "HYBRIDSCOPE_PRECOMPUTED" not in os.environ
