"""Zoo trainer (CPU, tiny "smoke" sizes): variants, schedule, data stream, synthetic rows, training,
exact resume, checkpoint round trip, formation runs in the trace store."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo import checkpoint as ck
from zoo.corpus import split_path
from zoo.data import BatchStream, SyntheticSource, load_corpus, n_synthetic_rows
from zoo.synthetic_rows import KINDS, maker_from_files
from zoo.train import TrainArgs, Trainer, lr_at
from zoo.train_all import plan_steps, variant_cap
from zoo.variants import BASE, NAMES, VARIANTS, param_count, variant_config

MIXER_FIELDS = {"layer_types", "sliding_window", "layer_pe", "linear_num_heads"}



@pytest.fixture(scope="module")
def corpus(data_dir):
    return load_corpus(data_dir, 256)


def _args(**kw) -> TrainArgs:
    base = dict(
        variant="swa64",
        size="smoke",
        batch_size=2,
        warmup_steps=2,
        log_every=1,
        steps=6,
        eval_fractions=(0.5, 1.0),
        synthetic_frac=0.25,
        lr=3e-3,
    )
    return TrainArgs(**{**base, **kw})


def _trainer(corpus, run_dir, export_dir=None, **kw) -> Trainer:
    args = _args(**kw)
    return Trainer(
        args, corpus, SyntheticSource(corpus, args.synthetic_frac, args.seed), run_dir, export_dir, quiet=True
    )


# ---------------------------------------------------------------------------------- variants
def test_variants_differ_only_in_mixers():
    assert NAMES == ("full", "swa64", "swa256", "swa1024", "mamba2", "gdn", "swa64_nope")
    ref = variant_config("full").to_dict()
    for name in NAMES:
        cfg = variant_config(name)
        d = cfg.to_dict()
        diff = {k for k in set(ref) | set(d) if ref.get(k) != d.get(k)}
        assert diff <= MIXER_FIELDS, (name, diff)
        assert cfg.num_hidden_layers == 8 and cfg.vocab_size == 8192 and cfg.tie_word_embeddings
        if name != "full":
            assert [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"] == [3, 7]
            assert VARIANTS[name].ratio == "3:1"
    assert [variant_config(n).sliding_window for n in ("swa64", "swa256", "swa1024")] == [64, 256, 1024]
    nope = variant_config("swa64_nope")
    assert [nope.pe_of(i) for i in range(8)] == ["rope"] * 3 + ["nope"] + ["rope"] * 3 + ["nope"]
    assert variant_config("swa64").pe_of(3) == "rope"


def test_variant_sizes():
    counts = {n: param_count(variant_config(n)) for n in NAMES}
    attention_only = {counts[n] for n in ("full", "swa64", "swa256", "swa1024", "swa64_nope")}
    assert len(attention_only) == 1  # windows and NoPE add no weights
    full = counts["full"]
    assert abs(counts["mamba2"] - full) / full < 0.01 and abs(counts["gdn"] - full) / full < 0.01
    assert max(counts.values()) * 2 <= 8_000_000  # bf16 checkpoint <= 8 MB
    emb = BASE["vocab_size"] * BASE["hidden_size"]
    assert emb < full  # tied: the embedding counted once


def test_variant_bad_name():
    with pytest.raises(ValueError, match="variant: 'swa32' is not one of"):
        variant_config("swa32")
    with pytest.raises(ValueError, match="size: 'big'"):
        variant_config("full", size="big")


# ---------------------------------------------------------------------------------- schedule / plan
def test_lr_schedule_known_values():
    peak, warm, total = 1e-3, 10, 110
    assert lr_at(0, total, warm, peak, 0.1) == pytest.approx(1e-4)
    assert lr_at(9, total, warm, peak, 0.1) == pytest.approx(1e-3)
    assert lr_at(10, total, warm, peak, 0.1) == pytest.approx(1e-3)
    assert lr_at(60, total, warm, peak, 0.1) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert lr_at(110, total, warm, peak, 0.1) == pytest.approx(1e-4)
    assert lr_at(500, None, warm, peak, 0.1) == peak  # total unknown yet (time-budget calibration)
    lrs = [lr_at(s, total, warm, peak, 0.1) for s in range(warm, total + 1)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_plan_steps():
    cal = {"sec_per_step": {"a": 0.1, "b": 0.3}, "eval_s": 1.0, "save_s": 0.5}
    # per variant overhead 2 evals * 1.5 + 4 = 7 s; (100 - 14) * 0.92 / 0.4 = 197.8
    assert plan_steps(cal, ["a", "b"], 100.0, 2, warmup=5) == 197
    assert plan_steps(cal, ["a", "b"], 1.0, 2, warmup=5) == 6


def test_variant_cap():
    cal = {"sec_per_step": {"a": 0.1, "b": 0.2}, "eval_s": 0.5, "save_s": 0.5}
    # a: train 10 s + overhead 2 evals * 1 s + 10 s = 12 s; b: 20 s + 12 s
    assert variant_cap(cal, 100, 2, "a", [], 1000.0) == pytest.approx(1.3 * 10 + 12)
    assert variant_cap(cal, 100, 2, "a", ["b"], 50.0) == pytest.approx(50 - 32)
    assert variant_cap(cal, 100, 2, "a", ["b"], 10.0) == pytest.approx(0.5 * 22)


def test_train_args_errors():
    with pytest.raises(ValueError, match="steps/time_budget_s: give exactly one"):
        _args(steps=None).check()
    with pytest.raises(ValueError, match="micro_batch: must divide"):
        _args(micro_batch=3).check()


# ---------------------------------------------------------------------------------- data
def test_batch_stream_epochs_and_labels(corpus):
    syn = SyntheticSource(corpus, 0.25, seed=1)
    assert syn.n_rows == n_synthetic_rows(len(corpus.rows), 0.25) > 0
    bs = BatchStream(corpus, syn, batch_size=4, seed=1)
    n_epoch = (len(corpus.rows) + syn.n_rows) // 4
    seen = [bs.next() for _ in range(n_epoch)]
    assert bs.state_dict() == {"epoch": 0, "index": 4 * n_epoch}
    x = torch.cat([b[0] for b in seen])
    rows = {tuple(r) for r in np.concatenate([corpus.rows, syn.get(0)]).astype(np.int64).tolist()}
    assert {tuple(r) for r in x.tolist()} <= rows and len({tuple(r) for r in x.tolist()}) == len(x)
    for inp, lab in seen:
        assert torch.equal(lab == -100, inp == corpus.pad_id)
        assert torch.equal(lab[lab != -100], inp[inp != corpus.pad_id])
    bs.next()
    assert bs.epoch == 1
    assert not np.array_equal(syn.get(1), syn.get(0))  # fresh synthetic rows every epoch
    again = SyntheticSource(corpus, 0.25, seed=1)
    assert np.array_equal(again.get(1), syn.get(1))  # ... but a pure function of (seed, epoch)


def test_synthetic_docs_hold_the_answer_once(data_dir):
    from tokenizers import Tokenizer

    maker = maker_from_files(
        data_dir / "tokenizer" / "tokenizer.json", split_path(data_dir, "train"), 512, 0, 1, 64
    )
    tok = Tokenizer.from_file(str(data_dir / "tokenizer" / "tokenizer.json"))
    rng = random.Random(5)
    assert maker.doc("niah_text", rng, 40) is None  # the template alone does not fit: row() uses kv
    for kind in KINDS:
        for n in (300, 500):
            ids = maker.doc(kind, rng, n)
            assert ids is not None and 0.5 * n <= len(ids) <= n, (kind, n, len(ids) if ids else None)
            text = tok.decode(ids)
            body, _, last = text.rstrip("\n").rpartition("\n")
            answer = last.rsplit(" ", 1)[1]
            expected = 2 if kind == "passkey_text" else 1  # the passkey needle states the key twice
            assert answer.isdigit() and body.count(answer) == expected, (kind, answer)
    row = maker.row(random.Random(0))
    assert row.shape == (512,) and row.dtype == np.uint16
    tail = np.nonzero(row != 1)[0].max()
    assert (row[tail + 1 :] == 1).all() and (row[: tail + 1] != 1).all() and row[tail] == 0


def test_kv_docs_ask_a_quarter_of_their_keys(data_dir):
    from tokenizers import Tokenizer

    from zoo.corpus import KV_QUERY
    from zoo.synthetic_rows import KV_QUERY_EVERY

    maker = maker_from_files(
        data_dir / "tokenizer" / "tokenizer.json", split_path(data_dir, "train"), 2048, 0, 1, 64
    )
    tok = Tokenizer.from_file(str(data_dir / "tokenizer" / "tokenizer.json"))
    prefix = KV_QUERY.split("{key}")[0]
    for seed in range(3):
        text = tok.decode(maker.doc("kv", random.Random(seed), 1500))
        lines = text.rstrip("\n").split("\n")
        table = dict(ln.split(" = ") for ln in lines[1:] if " = " in ln)
        queries = [ln for ln in lines if ln.startswith(prefix)]
        assert lines[0] == "# key-value table" and len(table) >= 40
        assert len(queries) == len(table) // KV_QUERY_EVERY  # a quarter of the keys, each asked once
        asked = [q[len(prefix) :].split("? ")[0] for q in queries]
        assert len(set(asked)) == len(asked) and asked != sorted(asked, key=list(table).index)  # shuffled
        for i, q in enumerate(queries):
            key, value = q[len(prefix) :].split("? ")
            assert table[key] == value
            before = "\n".join(lines[: lines.index(q)])
            assert before.count(value) == 1, (i, value)  # the answer occurs once before its query


def test_mass_scores_match_the_probe(data_dir):
    from transformers import AutoTokenizer

    from backend.codec import HFCodec
    from backend.data.synthetic import make_sample
    from backend.probes.retrieval_heads import sample_scores
    from models.tiny import tiny_model
    from zoo.formation import mass_scores

    codec = HFCodec(AutoTokenizer.from_pretrained(data_dir / "tokenizer"))
    model = tiny_model("SSFM", seed=3, vocab_size=700)
    s = make_sample("passkey", codec.count, 300, 0.4, haystack="text", docs=["def f(x):\n    return x + 1\n"])
    ours = mass_scores(model, codec, s.prompt, s.answer, s.answer_spans, torch.device("cpu"))
    ref = sample_scores(model, codec, s.prompt, s.answer, s.answer_spans, "mass", torch.device("cpu"))
    assert sorted(ours) == sorted(ref) == [0, 1, 2]
    for layer in ref:
        assert np.array_equal(ours[layer], ref[layer])
    assert ref[2].max() > 0  # the full-attention layer reaches the needle (SWA window 8 does not)


# ---------------------------------------------------------------------------------- training
def test_loss_decreases_on_a_repeated_batch(corpus, tmp_path):
    tr = _trainer(corpus, tmp_path / "run", steps=25, warmup_steps=3, lr=1e-2)
    fixed = tr.batches.next()
    tr.batches.next = lambda: fixed
    losses = [float(tr.train_step()[0]) for _ in range(25)]
    assert losses[-1] < 0.5 * losses[0] and min(losses[-5:]) < min(losses[:20]), losses
    assert tr.step == 25 and tr.tokens == 25 * 2 * 256


def test_resume_is_exact(corpus, tmp_path):
    full = _trainer(corpus, tmp_path / "a")
    sa = full.run()
    part = _trainer(corpus, tmp_path / "b")
    assert part.run(stop_after=3) == {"status": "interrupted", "step": 3}
    assert ck.latest_checkpoint(tmp_path / "b").name == "step-000003"
    resumed = _trainer(corpus, tmp_path / "b")
    sb = resumed.run(resume=True)
    assert sa["steps"] == sb["steps"] == 6 and sa["tokens_seen"] == sb["tokens_seen"]
    assert resumed.batches.state_dict() == full.batches.state_dict()
    for (na, pa), (nb, pb) in zip(
        full.model.named_parameters(), resumed.model.named_parameters(), strict=True
    ):
        assert na == nb and torch.equal(pa, pb), na
    log_b = [json.loads(x) for x in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    losses_a = [
        r["loss"]
        for r in map(json.loads, (tmp_path / "a" / "train_log.jsonl").read_text().splitlines())
        if "loss" in r
    ]
    assert [r["loss"] for r in log_b if "loss" in r] == losses_a
    assert sum(r.get("event") == "resumed" for r in log_b) == 1


def test_checkpoint_round_trip(corpus, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import models  # noqa: F401  (registers the native family)

    tr = _trainer(corpus, tmp_path / "run", tmp_path / "export", steps=2, eval_fractions=(1.0,))
    tr.run()
    export = tmp_path / "export"
    card = (export / "README.md").read_text()
    assert "| steps | 2 |" in card and "| efficient:full ratio | 3:1 |" in card
    loaded = AutoModelForCausalLM.from_pretrained(export, dtype=torch.bfloat16).eval()
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    from safetensors import safe_open

    with safe_open(str(export / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert "lm_head.weight" not in keys and f.get_tensor(keys[0]).dtype == torch.bfloat16
    ref = tr.model.to(torch.bfloat16).eval()
    x = torch.from_numpy(corpus.val_rows[:1, :100].astype(np.int64))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, ref(input_ids=x).logits)
    tok = AutoTokenizer.from_pretrained(export)
    assert tok.eos_token_id == 0 and tok.decode(tok("def f(): pass")["input_ids"]) == "def f(): pass"
    st = ck.load_state(ck.latest_checkpoint(tmp_path / "run"))
    assert st["step"] == 2 and st["data"] == tr.batches.state_dict() and st["optimizer"]["state"]


def test_time_budget_calibrates_the_schedule(corpus, tmp_path):
    tr = _trainer(corpus, tmp_path / "run", steps=None, time_budget_s=4.0, calib_steps=3)
    s = tr.run()
    cal = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    cal = [r for r in cal if r.get("event") == "calibrated"]
    assert len(cal) == 1 and cal[0]["step"] == 3 and cal[0]["total_steps"] == tr.total_steps
    assert s["status"] in ("done", "stopped_at_time_limit") and s["steps"] <= tr.total_steps
    assert tr.formation[0]["step"] == 0  # the timed evaluation before training


# ---------------------------------------------------------------------------------- formation runs
def test_formation_runs_in_the_store(tmp_path):
    from backend.spec import RunSpec
    from backend.store import TraceStore
    from zoo.precompute import write_formation

    recs = [
        {"step": 0, "tokens": 0, "max_full": 0.01, "top5_full": 0.01},
        {"step": 8, "tokens": 100, "max_full": 0.2, "top5_full": 0.1, "val_loss": 3.0},
        {"step": 16, "tokens": 200, "max_full": 0.5, "top5_full": 0.3},
    ]
    store = TraceStore(tmp_path / "store")
    (run_id,) = write_formation(store, {"swa64": recs, "empty": []})
    m = store.manifest(run_id)
    RunSpec.build(**m["spec"])  # a valid spec
    t = store.read_table(run_id, "sweep").to_pydict()
    assert t["name"] == ["formation:swa64"] * 2 and t["metric"] == ["retrieval_mass"] * 2
    assert t["x"] == [8.0, 16.0] and t["y"] == [0.2, 0.5]
    assert m["meta"]["records"][1]["val_loss"] == 3.0
    assert not math.isnan(t["y"][0])
    assert write_formation(store, {"swa64": recs}) == [run_id]  # deterministic id, overwritten


def test_smoke_config_is_small():
    cfg = variant_config("swa256", "smoke")
    assert cfg.sliding_window == 16 and param_count(cfg) < 400_000
    assert replace(_args(), variant="gdn").variant == "gdn"


# ---------------------------------------------------------------------------------- packaging
def test_package_fits_file_limits(tmp_path):
    import tarfile

    from zoo.package import package

    work, rng = tmp_path / "work", np.random.default_rng(0)

    def blob(path: Path, n: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.integers(0, 256, n, dtype=np.uint8).tobytes())  # incompressible

    for v in ("a", "b", "c"):
        blob(work / "zoo" / v / "config.json", 10)
        blob(work / "zoo" / v / "model.safetensors", 30_000)
    for r in range(5):
        blob(work / "store" / "runs" / f"run{r}" / "t.parquet", 20_000)
    blob(work / "store" / "locks" / "run0.lock", 10)
    blob(work / "runs" / "a" / "train_log.jsonl", 100)
    blob(work / "formation.json", 100)
    res = package(work, tmp_path / "out", max_files=4, max_file=70_000, max_total=10**6)
    assert len(res["archives"]) <= 4 and not res["warnings"], res
    assert "zoo_traces.tar.gz" in res["archives"] and "zoo_traces_2.tar.gz" in res["archives"]
    names = set()
    for name in res["archives"]:
        with tarfile.open(tmp_path / "out" / name) as tf:
            names |= {m.name for m in tf.getmembers() if m.isfile()}
    want = {p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file() and "locks" not in p.parts}
    assert names == want
    tight = package(work, tmp_path / "out2", max_files=4, max_file=20_000, max_total=50_000)
    assert any("MiB" in w for w in tight["warnings"])  # oversized archives are reported, not dropped
