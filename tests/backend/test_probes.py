"""Probes against eager references: every attention probability is rebuilt here from captured q/k
with an explicit masked softmax over the full L x L matrix (kernels.masks.dense_mask), and that
matrix is checked to reproduce the layer's real output before any score is compared."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backend.codec import CharCodec
from backend.data.synthetic import make_sample
from backend.probes.retrieval_heads import sample_scores
from backend.runner import Runner
from backend.spec import RunSpec
from kernels.masks import dense_mask
from models.adapters import adapter_for
from models.apply import apply_ablation
from models.attention_mixer import HybridAttention
from models.tiny import tiny_model

TOL = 1e-5
ABLATIONS = ["", "window[full]=40;sinks=3", "window[swa]=32;pe[full]=nope", "rf[full]=24;heads=1.2,3.0",
             "skip=3"]
CPU = torch.device("cpu")


def attention_mixers(model) -> dict[int, torch.nn.Module]:
    """Attention modules by layer: native HybridAttention, or HF ``model.model.layers[i].self_attn``."""
    found = {m.layer_idx: m for m in model.modules() if isinstance(m, HybridAttention)}
    return found or {i: layer.self_attn for i, layer in enumerate(model.model.layers)}


@torch.no_grad()
def eager_probs(model, ids: torch.Tensor, check_output: bool = True) -> dict[int, torch.Tensor]:
    """{attention layer: float64 softmax matrix [H, L, L]} from captured q/k and an explicit mask.

    With ``check_output`` the matrix times v, through o_proj, must reproduce the attention output
    the model itself computed: proof that mask, scale and RoPE are what the model really uses.
    """
    plans, n = adapter_for(model).current_plans(), ids.shape[1]
    inputs: dict[int, torch.Tensor] = {}
    mixers = attention_mixers(model) if check_output else {}

    def grab(mod, args, kwargs):
        inputs[mod.layer_idx] = args[0] if args else kwargs["hidden_states"]

    hooks = [m.register_forward_pre_hook(grab, with_kwargs=True) for m in mixers.values()]
    try:
        with adapter_for(model).capture(names=("q", "k", "mixer_out")) as cap, torch.inference_mode():
            model(input_ids=ids)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for layer, plan in enumerate(plans):
        if not plan.is_attention or (layer, "q") not in cap:
            continue
        q, k = cap[(layer, "q")][0].double(), cap[(layer, "k")][0].double()  # [H, L, D], [Hkv, L, D]
        k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)
        scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        mask = dense_mask(n, n, plan.window, plan.sinks)
        probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        if layer in mixers:
            m = mixers[layer]
            v = m.v_proj(inputs[layer][0]).view(n, -1, m.head_dim).transpose(0, 1).double()
            o = probs @ v.repeat_interleave(q.shape[0] // v.shape[0], dim=0)  # [H, L, D]
            o[list(plan.masked_heads)] = 0.0
            y = o.transpose(0, 1).reshape(n, -1) @ m.o_proj.weight.double().T
            torch.testing.assert_close(y, cap[(layer, "mixer_out")][0].double(), rtol=0, atol=TOL)
        out[layer] = probs
    return out


def reference_scores(model, prompt: str, answer: str, spans, metric: str):
    """Retrieval scores by hand for the one-character-per-token codec."""
    text = prompt + " " + answer
    ids = torch.tensor([[ord(c) for c in text]])
    first = len(prompt) + 1  # the answer's first character
    rows = list(range(first - 1, len(text) - 1))  # positions whose next token is an answer token
    needles = sorted({i for s, e in spans for i in range(s, e)})
    out = {}
    for layer, probs in eager_probs(model, ids).items():
        p = probs[:, rows]  # [H, n_rows, L]
        if metric == "mass":
            out[layer] = p[:, :, needles].sum(-1).mean(-1).numpy()
        else:
            top = p.argmax(-1)  # [H, n_rows]
            hit = [[int(top[h, i]) in needles and text[int(top[h, i])] == text[r + 1]
                    for i, r in enumerate(rows)] for h in range(p.shape[0])]
            out[layer] = np.array(hit, dtype=np.float64).mean(-1)
    return out


def copy_case() -> tuple[str, str, list[tuple[int, int]]]:
    """A prompt whose context is mostly needle, so that top-1 keys often copy (copy score > 0)."""
    rng = random.Random(3)
    needle = "".join(rng.choice("1234") for _ in range(60))
    prompt = needle + " ? the value is"  # the needle starts at 0: sinks (if any) are needle tokens
    return prompt, "".join(rng.choice("1234") for _ in range(8)), [(0, len(needle))]


@pytest.mark.parametrize("pattern", ["SFSF", "SMGF"])
@pytest.mark.parametrize("ablation", ABLATIONS)
def test_retrieval_scores_equal_eager_full_attention(pattern, ablation):
    model = tiny_model(pattern, seed=2)
    codec = CharCodec()
    s = make_sample("niah", codec.count, 420, 0.4, seed=1)
    p, a, sp = copy_case()
    with apply_ablation(model, ablation) as plans:
        attn = [i for i, pl in enumerate(plans) if pl.is_attention and not pl.skip]
        for prompt, answer, spans in ((s.prompt, s.answer, s.answer_spans), (p, a, sp)):
            for metric in ("mass", "copy"):
                got = sample_scores(model, codec, prompt, answer, spans, metric, CPU)
                ref = reference_scores(model, prompt, answer, spans, metric)
                assert sorted(got) == sorted(ref) == attn  # recurrent and skipped layers: no score
                for layer in attn:
                    np.testing.assert_allclose(got[layer], ref[layer], rtol=0, atol=TOL)
        if ablation == "":  # the constructed copy case really exercises the copy metric
            assert max(ref[layer].max() for layer in attn) > 0


def test_retrieval_scores_hf_qwen3():
    from tests.hf_tiny import build

    model = build("qwen3", vocab_size=256)  # the CharCodec's byte vocabulary
    try:
        with adapter_for(model).capture(names=("q", "k")):
            pass
    except TypeError as e:
        pytest.skip(f"models.capture does not support HF adapted models yet ({e})")
    codec = CharCodec()
    s = make_sample("niah", codec.count, 420, 0.6, seed=2)
    for ablation in ("", "window[full]=16;sinks=3", "pe[full]=nope;heads=1.2"):
        with apply_ablation(model, ablation):
            for metric in ("mass", "copy"):
                got = sample_scores(model, codec, s.prompt, s.answer, s.answer_spans, metric, CPU)
                ref = reference_scores(model, s.prompt, s.answer, s.answer_spans, metric)
                assert sorted(got) == sorted(ref) == [0, 1, 2, 3]
                for layer in ref:
                    np.testing.assert_allclose(got[layer], ref[layer], rtol=0, atol=TOL)


def test_retrieval_heads_run_averages_samples_and_reports_recurrent_layers(tmp_path):
    runner = Runner(tmp_path / "store", read_only_roots=[])
    params = {"lengths": [400], "depths": [0.2, 0.8], "samples": 1, "seed": 5}
    res = runner.run(RunSpec.build(model="tiny/SMGF", probe="retrieval_heads", params=params,
                                   ablation="window[full]=64"))
    rows = res.tables["head_scores"]
    codec, model = CharCodec(), tiny_model("SMGF", seed=0)
    expected = {}
    with apply_ablation(model, "window[full]=64"):
        for depth in (0.2, 0.8):
            s = make_sample("niah", codec.count, 400, depth, 0, seed=5, teacher_forced=True)
            assert len(s.prompt + " " + s.answer) <= 400  # the probe's samples: the teacher-forced text fits
            for layer, v in reference_scores(model, s.prompt, s.answer, s.answer_spans, "mass").items():
                expected[layer] = expected.get(layer, 0) + v / 2
    kinds = ["sliding_attention", "mamba2", "gated_deltanet", "full_attention"]
    assert rows["layer"] == [i for i in range(4) for _ in range(4)] and rows["head"] == list(range(4)) * 4
    assert rows["layer_type"] == [k for k in kinds for _ in range(4)]
    assert set(rows["n_samples"]) == {2} and set(rows["metric"]) == {"mass"}
    for layer, head, score in zip(rows["layer"], rows["head"], rows["score"]):
        if layer in (1, 2):
            assert score is None  # recurrent: reported as such, never as zero
        else:
            assert score == pytest.approx(float(expected[layer][head]), abs=TOL)


def write_doc(tmp_path, n_chars: int = 160) -> str:
    rng = random.Random(7)
    path = tmp_path / "doc.txt"
    path.write_text("".join(rng.choice("abcdefgh ijklmnop.") for _ in range(n_chars)))
    return f"file:{path}"


def test_attention_rows_match_eager_rows(tmp_path):
    data = write_doc(tmp_path)
    runner = Runner(tmp_path / "store", read_only_roots=[])
    params = {"n_docs": 1, "max_tokens": 120, "layers": [1, 3], "heads": [0, 2], "queries": [-1, 5, 64],
              "top_k": 4}
    res = runner.run(RunSpec.build(model="tiny/SFSF", probe="attention_rows", data=data, params=params,
                                   ablation="sinks=2;window[full]=40"))
    model = tiny_model("SFSF", seed=0)
    ids = torch.tensor([[ord(c) for c in (tmp_path / "doc.txt").read_text()[:120]]])
    with apply_ablation(model, "sinks=2;window[full]=40"):
        probs = eager_probs(model, ids)
    rows, ent = res.tables["attention_rows"], res.tables["head_entropy"]
    assert len(rows["layer"]) == 2 * 2 * 3 * 4 and len(ent["layer"]) == 2 * 2 * 3
    keys = zip(rows["layer"], rows["head"], rows["query_pos"], rows["rank"])
    for i, (layer, head, q, rank) in enumerate(keys):
        w, k = torch.topk(probs[layer][head, q], 4)
        assert rows["key_pos"][i] == int(k[rank])
        assert rows["weight"][i] == pytest.approx(float(w[rank]), abs=TOL)
        assert rows["token"][i] == chr(int(ids[0, int(k[rank])]))
    for layer, head, q, e in zip(ent["layer"], ent["head"], ent["query_pos"], ent["entropy"]):
        p = probs[layer][head, q]
        assert e == pytest.approx(float(-(p[p > 0] * p[p > 0].log()).sum()), abs=TOL)
    assert sorted(set(ent["query_pos"])) == [5, 64, 119]


def test_token_loss_matches_full_logits(tmp_path):
    data = write_doc(tmp_path, 150)
    runner = Runner(tmp_path / "store", read_only_roots=[])
    params = {"n_docs": 1, "max_tokens": 100, "bucket": 32}
    res = runner.run(RunSpec.build(model="tiny/SMGF", probe="token_loss", data=data, params=params,
                                   ablation="rf[linear]=8"))
    model = tiny_model("SMGF", seed=0)
    ids = torch.tensor([[ord(c) for c in (tmp_path / "doc.txt").read_text()[:100]]])
    with apply_ablation(model, "rf[linear]=8"), torch.inference_mode():
        ref = F.cross_entropy(model(input_ids=ids).logits[0, :-1], ids[0, 1:], reduction="none").numpy()
    tl, buckets = res.tables["token_loss"], res.tables["position_loss"]
    assert tl["pos"] == list(range(1, 100)) and tl["char_start"] == list(range(1, 100))
    np.testing.assert_allclose(tl["nll"], ref, rtol=0, atol=TOL)
    assert buckets["bucket_start"] == [0, 32, 64, 96] and buckets["n"] == [31, 32, 32, 4]
    assert buckets["mean_nll"][1] == pytest.approx(float(ref[31:63].mean()), abs=TOL)
    assert res.manifest["meta"]["ppl"] == pytest.approx(math.exp(float(ref.mean())), rel=1e-5)
