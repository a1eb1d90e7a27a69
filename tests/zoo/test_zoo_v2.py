"""Zoo v2 (issue 12), CPU: variants and sizes (v1 unchanged), the Q/K weight series, passkey rows and
the passkey evaluation, key-token counts, long / parallel synthetic rows, chunked held-out documents,
continued training, split archives, merging rounds, and the pilot (with the imports the device lacks
blocked)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.zoo.test_zoo_train import _args
from zoo import qk
from zoo.corpus import split_path
from zoo.data import BatchStream, SyntheticSource, load_corpus
from zoo.train import Trainer, lr_at
from zoo.variants import (
    NAMES,
    NAMES_V2,
    SIZES,
    VARIANTS_V2,
    get_variant,
    param_count,
    variant_config,
    variants_of,
)

ROOT = Path(__file__).resolve().parents[2]
ARCH = ("layer_types", "sliding_window", "layer_pe", "hidden_size", "intermediate_size", "num_attention_heads",
        "num_key_value_heads", "head_dim", "linear_num_heads", "linear_head_dim", "linear_key_dim",
        "mamba_state_size", "vocab_size", "num_hidden_layers")


@pytest.fixture(scope="module")
def corpus(data_dir):
    return load_corpus(data_dir, 256)


def _v2(corpus, run_dir, export_dir=None, eval_set=None, **kw):
    args = _args(variant="swa128", size="smoke-5m", **kw)
    syn = SyntheticSource(corpus, args.synthetic_frac, args.seed)
    return Trainer(args, corpus, syn, run_dir, export_dir, eval_set, quiet=True)


# ---------------------------------------------------------------------------------- variants and sizes
def test_v1_variants_are_the_bundled_ones():
    assert NAMES == ("full", "swa64", "swa256", "swa1024", "mamba2", "gdn", "swa64_nope")
    assert param_count(variant_config("swa64")) == 3_837_632  # benchmarks/RESULTS.md
    bundle = ROOT / "precomputed" / "zoo"
    for name in NAMES:
        cfg = bundle / name / "config.json"
        if cfg.is_file():  # the bundled checkpoints were made from these configs
            saved, ours = json.loads(cfg.read_text()), variant_config(name).to_dict()
            assert {k: saved.get(k) for k in ARCH} == {k: ours.get(k) for k in ARCH}, name


@pytest.mark.parametrize("size", ["5m", "10m", "15m"])
def test_v2_variants_equal_size_and_layout(size):
    assert NAMES_V2 == ("full", "swa128", "swa128_nope", "swa512", "swa2048", "mamba2", "gdn")
    assert variants_of(size) is VARIANTS_V2
    counts = {n: param_count(variant_config(n, size)) for n in NAMES_V2}
    attention = {counts[n] for n in ("full", "swa128", "swa128_nope", "swa512", "swa2048")}
    assert len(attention) == 1
    (full,) = attention
    assert all(abs(c - full) / full < 0.01 for c in counts.values()), counts
    target = {"5m": 5e6, "10m": 10e6, "15m": 15e6}[size]
    assert 0.9 * target < full < 1.1 * target * (1.05 if size == "15m" else 1)
    for n in NAMES_V2:
        cfg = variant_config(n, size)
        assert cfg.num_hidden_layers == 8 and cfg.max_position_embeddings >= 4096
        if n != "full":
            assert [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"] == [3, 7]
            assert VARIANTS_V2[n].ratio == "3:1"
    assert [variant_config(n, size).sliding_window for n in ("swa128", "swa512", "swa2048")] == [128, 512, 2048]
    nope = variant_config("swa128_nope", size)
    assert [nope.pe_of(i) for i in range(8)] == ["rope"] * 3 + ["nope"] + ["rope"] * 3 + ["nope"]
    assert variant_config("swa128", size).pe_of(3) == "rope"


def test_sizes_and_generations():
    assert {s.generation for s in SIZES.values()} == {"v1", "v2"}
    assert [variant_config(n, "smoke-5m").sliding_window for n in ("swa128", "swa512", "swa2048")] == [8, 32, 128]
    assert param_count(variant_config("full", "smoke-15m")) > param_count(variant_config("full", "smoke-5m"))
    with pytest.raises(ValueError, match=r"variant: 'swa64' is not one of \['full', 'swa128'"):
        get_variant("swa64", "5m")
    with pytest.raises(ValueError, match="variant: 'swa128' is not one of"):
        get_variant("swa128", "zoo")
    with pytest.raises(ValueError, match="size: '20m' is not one of"):
        variant_config("full", "20m")


# ---------------------------------------------------------------------------------- Q/K series
def test_qk_series_round_trip(tmp_path):
    from models.modeling import HybridForCausalLM

    model = HybridForCausalLM(variant_config("gdn", "smoke-5m"))
    d = tmp_path / "qk"
    for step in (0, 5, 10):
        qk.save_point(model, d, step, step * 100)
    index = json.loads((d / "index.json").read_text())
    assert index["format"] == qk.FORMAT and index["layers"] == [3, 7] and index["head_dim"] == 16
    assert [p["step"] for p in index["points"]] == [0, 5, 10] and index["points"][1]["tokens"] == 500
    assert index["points"][2]["file"] == "step_000010.safetensors"
    t = qk.load_point(d / "step_000005.safetensors")
    assert sorted(t) == [f"layers.{i}.{n}_proj.weight" for i in (3, 7) for n in ("k", "q")]
    w = model.model.layers[7].mixer.q_proj.weight
    assert t["layers.7.q_proj.weight"].dtype == torch.bfloat16
    assert torch.equal(t["layers.7.q_proj.weight"], w.detach().to(torch.bfloat16))
    assert t["layers.3.k_proj.weight"].shape == (1 * 16, 32)  # kv heads x head_dim, hidden
    qk.drop_after(d, 5)
    assert [s for s, _ in qk.points(d)] == [0, 5] and len(json.loads((d / "index.json").read_text())["points"]) == 2
    assert qk.copy_series(d, tmp_path / "other", up_to=0) == 1


def test_trainer_records_series_passkey_and_key_tokens(corpus, data_dir, tmp_path):
    from safetensors.torch import load_file

    from zoo.train_all import eval_set_for

    ev = eval_set_for(corpus, "smoke-5m", lengths=(384,))  # this test tokenizer (vocab 700) needs room
    assert ev.passkey and {s.length for s in ev.passkey} == {256} and ev.trunc_len == 64
    tr = _v2(corpus, tmp_path / "run", tmp_path / "export", ev, steps=4, eval_fractions=(0.5, 1.0))
    s = tr.run()
    last = s["formation"]
    assert last["step"] == 4 and 0 <= last["passkey_acc"] <= 1 and last["passkey_length"] == 256
    assert last["val_ppl"] == pytest.approx(np.exp(last["val_loss"]))
    if ev.key_chunks:
        assert last["n_targets"] == len(ev.key_chunks) * (256 - 64) and last["trunc_len"] == 64
    series = tmp_path / "export" / "qk"
    assert [st for st, _ in qk.points(series)] == [0, 2, 4]
    final = qk.load_point(series / "step_000004.safetensors")
    weights = load_file(str(tmp_path / "export" / "model.safetensors"))
    assert torch.equal(final["layers.3.q_proj.weight"], weights["model.layers.3.mixer.q_proj.weight"])
    assert s["data"] == tr.batches.state_dict() and s["size"] == "smoke-5m"

    part = _v2(corpus, tmp_path / "b", steps=4, eval_fractions=(0.5, 1.0))
    part.run(stop_after=3)  # checkpoint at 3 (after the evaluation point 2)
    qk.save_point(part.model, tmp_path / "b" / "qk", 9, 0)  # a point past the checkpoint
    resumed = _v2(corpus, tmp_path / "b", steps=4, eval_fractions=(0.5, 1.0))
    resumed.run(resume=True)
    assert [st for st, _ in qk.points(tmp_path / "b" / "qk")] == [0, 2, 4]


def test_key_token_thresholds_are_the_probes():
    from backend.params import LongPPLParams
    from zoo.formation import ALPHA, BETA

    p = LongPPLParams()
    assert (ALPHA, BETA) == (p.alpha, p.beta)


def test_key_token_stats_count_what_the_probe_maths_counts(corpus):
    from backend.forward import token_nll
    from backend.probes.longppl_math import key_mask, short_logprobs
    from models.tiny import tiny_model
    from zoo.formation import key_token_stats

    model = tiny_model("SSFF", seed=1, vocab_size=700)
    chunk = corpus.val_rows[0, :200].astype(np.int64).tolist()
    ev = replace(_eval_stub(), key_chunks=[chunk], trunc_len=64, stride=16)
    with torch.no_grad():  # a random model: make it prefer the long context by construction is not needed
        stats = key_token_stats(model, ev, torch.device("cpu"))
    x = torch.tensor([chunk])
    nll = token_nll(model.eval(), x)[0].numpy().astype(np.float64)
    key = key_mask(-nll, short_logprobs(model, x, 64, 16), 2.0, -2.0)
    assert stats["n_key"] == int(key.sum()) and stats["n_targets"] == 200 - 64


def _eval_stub():
    from zoo.formation import EvalSet

    return EvalSet(codec=None, samples=[], val_rows=torch.zeros(0, 1), pad_id=1)


# ---------------------------------------------------------------------------------- passkey rows vs the probe
def test_passkey_rows_are_the_probes_prompts_plus_the_answer(data_dir):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from backend.codec import HFCodec
    from backend.data.synthetic import PASSKEY_PREAMBLE, PASSKEY_QUERY, first_word, make_sample
    from zoo.synthetic_rows import maker_from_files

    codec = HFCodec(AutoTokenizer.from_pretrained(data_dir / "tokenizer"))
    texts = [d.text for d in __import__("zoo.corpus", fromlist=["read_jsonl"]).read_jsonl(data_dir / "val.jsonl")]
    for depth in (0.0, 0.5, 1.0):
        s = make_sample("passkey", codec.count, 400, depth, haystack="text", docs=texts)
        prompt = codec.encode(s.prompt).ids
        trained = codec.encode(s.prompt + " " + s.answer + "\n").ids
        assert trained[: len(prompt)] == prompt  # the model continues the probe's prompt as trained
        assert first_word(codec.decode(trained[len(prompt):])) == s.answer
    maker = maker_from_files(data_dir / "tokenizer" / "tokenizer.json", split_path(data_dir, "train"), 512, 0, 1, 64)
    tok = Tokenizer.from_file(str(data_dir / "tokenizer" / "tokenizer.json"))
    text = tok.decode(maker.doc("passkey_text", random.Random(2), 400))
    head, _, last = text.rstrip("\n").rpartition("\n")
    key = last.rsplit(" ", 1)[1]
    assert text.startswith(PASSKEY_PREAMBLE) and last == f"{PASSKEY_QUERY} {key}"
    assert f"The pass key is {key}. Remember it. {key} is the pass key." in head


def test_long_rows_and_parallel_parts(data_dir, corpus):
    from zoo.synthetic_rows import maker_from_files

    tj, train = data_dir / "tokenizer" / "tokenizer.json", split_path(data_dir, "train")
    plain = maker_from_files(tj, train, 512, 0, 1, 64)
    again = maker_from_files(tj, train, 512, 0, 1, 64, long_frac=0.0)
    assert np.array_equal(plain.rows(4, 7), again.rows(4, 7))  # long_frac 0 draws what v1 drew
    long = maker_from_files(tj, train, 512, 0, 1, 64, long_frac=1.0)
    rows = long.rows(6, 7)
    first_eos = [int(np.nonzero(r == 0)[0][0]) for r in rows]
    assert min(first_eos) > 0.8 * 512, first_eos  # one document takes (nearly) the whole row
    a = SyntheticSource(corpus, 0.25, seed=1, parts=3)
    b = SyntheticSource(corpus, 0.25, seed=1, parts=3)
    assert np.array_equal(a.get(0), b.get(0)) and len(a.get(0)) == a.n_rows
    assert not np.array_equal(a.get(0), SyntheticSource(corpus, 0.25, seed=1).get(0))
    with pytest.raises(ValueError, match="synthetic_parts"):
        SyntheticSource(corpus, 0.25, seed=1, parts=0)


# ---------------------------------------------------------------------------------- continued training
def test_continued_training_goes_on_with_the_data_and_the_schedule(corpus, tmp_path):
    root = tmp_path / "stage1"
    first = _v2(corpus, root / "runs" / "swa128", root / "zoo" / "swa128", steps=3, eval_fractions=(1.0,))
    s1 = first.run()
    (root / "train_summary.json").write_text(json.dumps({"variants": {"swa128": s1}}))
    second = _v2(corpus, tmp_path / "run2", tmp_path / "exp2", steps=2, eval_fractions=(1.0,),
                 init_from=str(root), schedule_total=5, warmup_steps=2)
    assert second.batches.state_dict() == first.batches.state_dict()
    straight = BatchStream(corpus, second.batches.synthetic, 2, 0)
    for _ in range(3):
        straight.next()
    assert torch.equal(second.batches.next()[0], straight.next()[0])  # the tokens a 5-step run sees next
    second.batches.load_state_dict(first.batches.state_dict())
    second.train_step()
    want = lr_at(3, 5, 2, second.args.lr, second.args.min_lr_ratio) * 0.5  # global step 3, re-warm 1/2
    assert second.opt.param_groups[0]["lr"] == pytest.approx(want)
    s2 = second.run()
    assert s2["steps"] == 3 + 2
    assert [st for st, _ in qk.points(tmp_path / "exp2" / "qk")] == [0, 3, 5]


# ---------------------------------------------------------------------------------- precompute data, packaging, merge
def test_chunked_held_out_documents(data_dir):
    from zoo.corpus import Doc
    from zoo.precompute import chunk_doc
    from zoo.tokenizer import backend_of

    tok = backend_of(data_dir / "tokenizer")
    text = "".join(f"def f{i}(x):\n    return x * {i} + {i * 7}\n\n" for i in range(400))
    pieces = chunk_doc(Doc("d1", text, "stdlib"), tok, 300)
    assert len(pieces) >= 3 and [p.id for p in pieces[:2]] == ["d1#0", "d1#1"]
    assert text.startswith("".join(p.text for p in pieces))  # consecutive, from the start
    assert all(len(tok.encode(p.text, add_special_tokens=False).ids) >= 300 and p.text.endswith("\n") for p in pieces)


def test_package_splits_a_large_export(tmp_path):
    import tarfile

    from zoo.package import package

    work, rng = tmp_path / "w", np.random.default_rng(1)
    for name, size in (("model-00001-of-00002.safetensors", 40_000), ("model-00002-of-00002.safetensors", 40_000),
                       ("config.json", 100), ("qk/step_000000.safetensors", 5_000)):
        p = work / "zoo" / "big" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    (work / "formation.json").write_text("{}")
    res = package(work, tmp_path / "out", max_files=6, max_file=60_000, max_total=10**6)
    assert not res["warnings"] and {"zoo_big.tar.gz", "zoo_big_2.tar.gz"} <= set(res["archives"]), res
    names = set()
    for a in res["archives"]:
        with tarfile.open(tmp_path / "out" / a) as tf:
            names |= {m.name for m in tf.getmembers() if m.isfile()}
    assert {n for n in names if n.startswith("zoo/")} == {
        p.relative_to(work).as_posix() for p in (work / "zoo").rglob("*") if p.is_file()}


def test_merge_rounds(tmp_path):
    from zoo.merge import merge

    def root(name, variant, run_id):
        r = tmp_path / name
        for d in (f"zoo/{variant}", f"runs/{variant}", f"store/runs/{run_id}", "store/runs/shared", "data"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "zoo" / variant / "config.json").write_text("{}")
        (r / "store" / "runs" / "shared" / "manifest.json").write_text('{"same": 1}')
        (r / "data" / "test.jsonl").write_text("x\n")
        (r / "formation.json").write_text(json.dumps({variant: [{"step": 1}]}))
        (r / "train_summary.json").write_text(json.dumps({"steps": 7, "variants": {variant: {"steps": 7}}}))
        (r / "precompute_summary.json").write_text(json.dumps({"steps": {f"longppl:{variant}": {}}, "failed": {}}))
        (r / "plan.json").write_text("{}")
        return r

    a, b = root("r1", "full", "run_a"), root("r2", "swa128", "run_b")
    res = merge(tmp_path / "all", [a, b])
    out = tmp_path / "all"
    assert res["variants"] == ["full", "swa128"] and sorted(res["added"]["store/runs"]) == ["run_a", "run_b", "shared"]
    assert set(json.loads((out / "formation.json").read_text())) == {"full", "swa128"}
    assert set(json.loads((out / "precompute_summary.json").read_text())["steps"]) == {"longppl:full", "longppl:swa128"}
    assert (out / "rounds" / "r2" / "plan.json").is_file()
    (b / "store" / "runs" / "shared" / "manifest.json").write_text('{"same": 2}')
    with pytest.raises(ValueError, match="store/runs/shared differs"):
        merge(tmp_path / "all2", [a, b])


# ---------------------------------------------------------------------------------- the pilot
def test_pilot_plan_fits_the_budget():
    from zoo.pilot import COMPILE_S, EVAL_S, SAFETY, THROUGHPUT, plan_steps

    plan = plan_steps(["5m", "15m"], "full", 500.0, 16, 9)
    overhead = 2 * (COMPILE_S + 9 * EVAL_S + 5.0)
    train = plan["tokens"] / THROUGHPUT["5m"] + plan["tokens"] / THROUGHPUT["15m"]
    assert train <= SAFETY * (500 - overhead) + 1e-6 and sum(plan["planned_s"].values()) <= 500
    assert plan["steps"] == plan["tokens"] // (16 * 4096) and plan["steps"] > 1000
    with pytest.raises(ValueError, match="no throughput estimate"):
        plan_steps(["smoke-5m"], "full", 100.0, 2, 2)


def test_pilot_smoke_without_what_the_device_lacks(data_dir, tmp_path):
    """The pilot end to end on CPU (two tiny sizes, 2 steps), with pydantic, duckdb, platformdirs, fla
    and the dashboard's packages made unimportable, as on the device image; then its $OUT packing."""
    blocked = ("pydantic", "duckdb", "platformdirs", "streamlit", "fastapi", "uvicorn", "altair", "fla")
    code = (
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        f"for m in {blocked!r}: sys.modules[m] = None\n"
        "sys.argv = ['zoo'] + sys.argv[1:]\n"
        "runpy.run_module('zoo', run_name='__main__')\n"
    )
    work = tmp_path / "work"
    cmd = [sys.executable, "-c", code, "pilot", "--variant", "swa128", "--sizes", "smoke-5m,smoke-15m", "--steps", "2",
           "--evals", "1", "--device", "cpu", "--max-docs", "30", "--workers", "0", "--batch-size", "2",
           "--warmup-steps", "1", "--data", str(data_dir), "--out", str(work)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((work / "pilot.json").read_text())
    assert set(summary["results"]) == {"smoke-5m", "smoke-15m"}
    for size, r in summary["results"].items():
        assert r["status"] == "done" and r["steps"] == 2 and r["tokens"] == 2 * 2 * 256, (size, r)
        (rec,) = r["records"]
        assert {"val_ppl", "passkey_acc", "max_full", "top5_full"} <= set(rec)
        assert "passkey_ge_0.9" in r["first"]
    assert summary["results"]["smoke-15m"]["params"] > summary["results"]["smoke-5m"]["params"]
    from zoo.pilot import pack_outputs, table

    packed = pack_outputs(work, tmp_path / "OUT")
    assert "pilot_runs.tar.gz" in packed["archives"] and any(k.startswith("qk_") for k in packed["archives"])
    assert not packed["left_out"] and "smoke-15m" in table(summary)
