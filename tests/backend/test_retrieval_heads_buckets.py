"""No recompilation when only the data changes (issue 11), for the retrieval_heads probe.

The probe teacher-forces ``prompt + " " + answer``; its haystack is fitted so that this whole sequence
(not only the prompt) has at most ``length`` tokens. Requested lengths are usually bucket boundaries of
the compiled GPU FlexAttention (512, 4096, 32768: ``kernels.attention.flex_length_bucket``), so a
sequence even one token longer ran in the next bucket and compiled a new graph for new data.

- The fit: for several tokenizers, haystacks, lengths, seeds and depths the teacher-forced sequence
  fits ``length`` and fills it up to one haystack sentence; the prompt-only fit of the same samples
  overflows (what the test guards against).
- Through ``Runner.run``: the windowed layers are routed through the GPU path's bucketed flex call
  (``flex_bucketed``) compiled with dynamo's counting backend (no inductor, no GPU); two runs with
  other seeds feed lengths of one bucket, compile one graph in the first run and none in the second,
  and the scores equal those of the plain CPU path.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter
from torch._dynamo.utils import counters

from backend.codec import CharCodec
from backend.data import synthetic as syn
from backend.runner import Runner
from backend.spec import RunSpec
from kernels.attention import effective_mask, flex_bucketed, flex_length_bucket
from tests.backend.test_data import train_bpe

TEXT_DOCS = [
    "Rivers carve valleys over long ages. Rain feeds them in spring! Do they ever rest? Rarely.\n"
    "In 1999 a survey counted 1234567 stones along the bank; the count was repeated twice.\n",
    "Lighthouses guide ships at night. Their keepers once lived in small cottages by the sea. "
    "A keeper wrote letters home every week, and the letters were kept in a wooden box for decades.",
]


def bpe():
    return train_bpe([syn.FILLER, syn.NIAH_PREAMBLE, syn.NIAH_QUERY, syn.PASSKEY_NEEDLE, *TEXT_DOCS])


def forced_tokens(count, s: syn.Sample) -> int:
    return count(syn.teacher_forced_text(s.prompt, s.answer))


@pytest.mark.parametrize("haystack", syn.HAYSTACKS)
@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
@pytest.mark.parametrize("task", syn.TASKS)
def test_teacher_forced_sequence_fits_the_length_and_fills_it(task, tokenizer, haystack):
    tok = CharCodec().count if tokenizer == "char" else bpe()
    count = syn.token_counter(tok)
    units = syn._units_for(haystack, TEXT_DOCS)
    # The fit takes the largest haystack that fits: one more unit (sentence) would overflow. A unit adds
    # at most its own tokens, plus 2 where BPE merges across its two boundaries differ; so the sequence
    # is at most that far below the length.
    slack = max(count(u) for u in units) + 2
    lengths, depths = [512, 1000, 4096], [0.0, 0.3, 0.7, 1.0]
    overflowed = 0
    for seed in (0, 1, 2):
        new = syn.make_grid(task, tok, lengths, depths, 2, seed=seed, haystack=haystack, docs=TEXT_DOCS,
                            teacher_forced=True)
        old = syn.make_grid(task, tok, lengths, depths, 2, seed=seed, haystack=haystack, docs=TEXT_DOCS)
        assert len(new) == len(old) == len(lengths) * len(depths) * 2
        for s, o in zip(new, old):
            assert (s.length, s.depth, s.sample) == (o.length, o.depth, o.sample)
            n = forced_tokens(count, s)
            assert s.length - slack <= n <= s.length, (s.length, n, slack)
            assert s.n_tokens == count(s.prompt) < n  # n_tokens stays the prompt's count
            # the same needle and query as a prompt-only sample: only the haystack is shorter (or equal)
            assert (s.key, s.answer) == (o.key, o.answer) and len(s.prompt) <= len(o.prompt)
            assert s.prompt[s.needle_span[0]:s.needle_span[1]] == s.answer
            assert o.n_tokens <= o.length
            overflowed += forced_tokens(count, o) > o.length
    # the prompt-only fit lets the answer run past the length for some of these very samples
    assert overflowed > 0


def test_retrieval_probe_prompts_fit_with_their_class_value():
    """retrieval_probe places each class's value before the haystack is fitted: a value that tokenises to
    more tokens than the drawn one no longer pushes the prompt past the length (prefill: the prompt is
    the whole sequence), and one that tokenises to fewer tokens gets a haystack as long as ever."""
    from types import SimpleNamespace

    from backend.probes.retrieval_probe import MAGIC, prompts

    count = syn.token_counter(bpe())
    slack = max(count(u) for u in syn._units_for("repeat", None)) + 2  # one haystack unit, as above
    before_fix_over = 0
    for length in (512, 1024, 2048):
        ctx = SimpleNamespace(params=SimpleNamespace(length=length, per_class=5, seed=0, haystack="repeat"),
                              lm=SimpleNamespace(codec=SimpleNamespace(count=count)), docs=None)
        for which, values in MAGIC.items():
            got = prompts(ctx, which)
            assert [k for _, k in got] == [k for k in range(8) for _ in range(5)]
            for i, (prompt, k) in enumerate(got):
                n = count(prompt)
                assert length - slack <= n <= length and prompt.count(values[k]) == 1
                # the former construction: a random value's fit, the class value substituted afterwards
                s = syn.make_sample("niah", count, length, (i % 5 + 0.5) / 5, sample=i, seed=0)
                old = s.prompt.replace(s.answer, values[k])
                assert old.replace(values[k], "") == s.prompt.replace(s.answer, "")
                if count(old) <= length:  # it fitted, so the fit (the largest haystack) is at least as long
                    assert len(prompt) >= len(old)
                before_fix_over += count(old) > length
    assert before_fix_over > 0


def test_given_value_keeps_the_keys_and_is_checked():
    count = syn.token_counter(bpe())
    drawn = syn.make_sample("niah", count, 600, 0.4, sample=3, seed=2)
    s = syn.make_sample("niah", count, 600, 0.4, sample=3, seed=2, value="4729307")
    assert s.answer == "4729307" != drawn.answer and s.key == drawn.key and s.prompt.count("4729307") == 1
    assert s.prompt[s.needle_span[0]:s.needle_span[1]] == "4729307" and s.n_tokens == count(s.prompt) <= 600
    for bad in ("", " 12", 12):
        with pytest.raises(ValueError, match="value: must be a non-empty string"):
            syn.make_sample("niah", count, 600, 0.4, value=bad)


def test_too_short_length_names_the_answer():
    message = r"^length: 200 tokens is too short for the needle and query alone \(\d+ tokens with the answer\)$"
    with pytest.raises(ValueError, match=message):
        syn.make_sample("niah", CharCodec().count, 200, 0.5, teacher_forced=True)


@pytest.fixture
def _fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def test_runner_compiles_one_graph_for_two_seeds(tmp_path, monkeypatch, _fresh_dynamo):
    """Runner.run of retrieval_heads at a bucket boundary (512) for two seeds, the windowed layers on the
    GPU path's bucketed flex call compiled with a counting backend: one bucket, one graph, no recompile."""
    from torch.nn.attention.flex_attention import flex_attention

    import models.attention_mixer as mixer

    length, ablation = 512, "window[all]=384;sinks=2"  # every layer windowed, the needle within reach
    plain = mixer.attention
    cnt = CompileCounter()
    flex = torch.compile(flex_attention, backend=cnt, dynamic=False)
    fed: list[int] = []

    def gpu_like(q, k, v, window=None, sinks=0, backend="auto", **kw):
        """kernels.attention.attention's CUDA choice: flex (bucketed, compiled) for windowed layers."""
        w, s, _ = effective_mask(window, sinks, None, q.shape[2], k.shape[2])
        if w is None or kw:
            return plain(q, k, v, window=window, sinks=sinks, backend=backend, **kw)
        fed.append(k.shape[2])
        return flex_bucketed(flex, q, k, v, w, s, None)

    params = {"lengths": [length], "depths": [0.1, 0.5, 0.9], "samples": 2}

    def run(seed, store):
        return Runner(tmp_path / store, read_only_roots=[]).run(RunSpec.build(
            model="tiny/SFSF", probe="retrieval_heads", ablation=ablation, params={**params, "seed": seed}))

    reference = {seed: run(seed, f"plain{seed}").tables["head_scores"] for seed in (0, 1)}
    monkeypatch.setattr(mixer, "attention", gpu_like)
    first = run(0, "flex").tables["head_scores"]
    frames, graphs, lengths_first = cnt.frame_count, counters["stats"]["unique_graphs"], list(fed)
    with torch._dynamo.config.patch(error_on_recompile=True):
        second = run(1, "flex").tables["head_scores"]
    lengths_second = fed[len(lengths_first):]

    # every layer of SFSF (all windowed) of every sample (6) went through the compiled call, at several lengths
    assert len(lengths_first) == len(lengths_second) == 4 * 6
    assert len(set(lengths_first) | set(lengths_second)) > 1
    assert max(lengths_first + lengths_second) <= length
    assert {flex_length_bucket(n) for n in lengths_first + lengths_second} == {flex_length_bucket(length)}
    assert frames == 1 and graphs >= 1
    assert cnt.frame_count == frames and counters["stats"]["unique_graphs"] == graphs
    # the padded compiled path computes the same scores as the plain CPU path
    for got, ref in ((first, reference[0]), (second, reference[1])):
        assert got["layer"] == ref["layer"] and got["head"] == ref["head"]
        assert got["score"] == pytest.approx(ref["score"], abs=1e-5)
    assert min(first["score"]) > 0 and min(second["score"]) > 0 and first["score"] != second["score"]
