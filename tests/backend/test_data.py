"""Local text datasets and synthetic passkey / NIAH tasks."""

from __future__ import annotations

import json
import random

import pytest

from backend.data import synthetic as syn
from backend.data.text import DatasetError, Doc, fingerprint, load_text_dataset, read_docs

# ---------------------------------------------------------------------------------------------- text


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "b.txt").write_text("bravo " * 20)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "c.jsonl").write_text(
        json.dumps({"text": "charlie " * 30, "id": "c-one"}) + "\n\n"
        + json.dumps({"text": "delta " * 10}) + "\n")
    (root / ".hidden" / "x.txt").write_text("hidden")
    (root / "notes.md").write_text("ignored")
    return root


def test_listing_order_ids_and_filters(corpus):
    docs = load_text_dataset(corpus)
    assert [d.id for d in docs] == ["a.txt", "b.txt", "c-one", "sub/c.jsonl:3"]
    assert docs[1].text == "bravo " * 20 and docs[3].text == "delta " * 10
    assert [d.id for d in load_text_dataset(corpus, min_chars=100)] == ["b.txt", "c-one"]
    assert [d.id for d in load_text_dataset(corpus / "sub" / "c.jsonl")] == ["c-one", "c.jsonl:3"]


def test_sampling_is_seeded_and_prefix_stable(tmp_path):
    lines = [json.dumps({"text": f"document number {i}"}) for i in range(40)]
    (tmp_path / "d.jsonl").write_text("\n".join(lines))
    a = load_text_dataset(tmp_path, n_docs=10, seed=3)
    assert a == load_text_dataset(tmp_path, n_docs=10, seed=3)
    assert a[:4] == load_text_dataset(tmp_path, n_docs=4, seed=3)
    assert a != load_text_dataset(tmp_path, n_docs=10, seed=4)
    assert len({d.id for d in a}) == 10
    # reference: the first n_docs of random.Random(seed).shuffle over the listing order
    order = list(range(40))
    random.Random(3).shuffle(order)
    assert [d.text for d in a] == [f"document number {i}" for i in order[:10]]
    assert len(load_text_dataset(tmp_path, n_docs=100)) == 40


@pytest.mark.parametrize("setup, kwargs, message", [
    (lambda p: None, {}, "does not exist"),
    (lambda p: p.mkdir(), {}, r"no \.txt or \.jsonl files"),
    (lambda p: p.write_text("x"), {}, "has suffix ''; allowed: .txt, .jsonl"),
    (lambda p: (p.mkdir(), (p / "a.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n')), {},
     r'a\.jsonl:2: each line must be a JSON object with a string "text" field'),
    (lambda p: (p.mkdir(), (p / "a.jsonl").write_text('{"text": 5}\n')), {}, r'a\.jsonl:1: .*"text" field'),
    (lambda p: (p.mkdir(), (p / "a.jsonl").write_text("{not json\n")), {}, r"a\.jsonl:1: not valid JSON"),
    (lambda p: (p.mkdir(), (p / "a.txt").write_text("short")), {"min_chars": 10},
     r"no documents .* with at least 10 characters \(1 shorter\)"),
    (lambda p: (p.mkdir(), (p / "a.jsonl").write_text("\n\n")), {}, "no documents in"),
    (lambda p: (p.mkdir(), (p / "a.txt").write_text("x")), {"n_docs": 0},
     "n_docs: must be a positive integer"),
    (lambda p: (p.mkdir(), (p / "a.txt").write_text("x")), {"min_chars": -1}, "min_chars: must be"),
])
def test_dataset_errors(tmp_path, setup, kwargs, message):
    path = tmp_path / "data"
    setup(path)
    with pytest.raises(DatasetError, match=message):
        load_text_dataset(path, **kwargs)


def test_fingerprint_covers_ids_texts_order_and_params():
    docs = [Doc("a", "x y"), Doc("b", "z")]
    fp = fingerprint(docs, {"n_docs": 2})
    assert fp == fingerprint([Doc("a", "x y"), Doc("b", "z")], {"n_docs": 2}) and len(fp) == 64
    others = [fingerprint(docs[::-1], {"n_docs": 2}),
              fingerprint([Doc("a", "x y"), Doc("b", "Z")], {"n_docs": 2}),
              fingerprint([Doc("a2", "x y"), Doc("b", "z")], {"n_docs": 2}), fingerprint(docs, {"n_docs": 3}),
              fingerprint([Doc("a", "x"), Doc("b", "y z")], {"n_docs": 2}), fingerprint(docs)]
    assert len({fp, *others}) == 7


def test_read_docs_matches_load_without_sampling(corpus):
    assert read_docs(corpus) == load_text_dataset(corpus)


# ----------------------------------------------------------------------------------------- synthetic

def words(s: str) -> int:
    return len(s.split())


class ListEncoder:
    """An object with .encode returning a list (like a slow tokenizer): ~4 characters per token."""

    def encode(self, s: str) -> list[int]:
        return list(range((len(s) + 3) // 4))


def bpe():
    return train_bpe([syn.FILLER, syn.NIAH_PREAMBLE, syn.NIAH_QUERY, TEXT_DOCS[0]])


def train_bpe(texts: list[str]):
    """A small byte-level BPE (vocab 400) trained on ``texts`` x 5: real multi-character tokens."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(list(texts) * 5, trainer)
    return tok


TEXT_DOCS = [
    "Rivers carve valleys over long ages. Rain feeds them in spring! Do they ever rest? Rarely.\n"
    "In 1999 a survey counted 1234567 stones along the bank; the count was repeated twice.\n",
    "Lighthouses guide ships at night. Their keepers once lived in small cottages by the sea.",
]


def _check(s: syn.Sample, count, units: list[str]) -> None:
    assert s.n_tokens == count(s.prompt) <= s.length
    n_expected = 1 if s.task == "niah" else 2
    assert s.prompt.count(s.answer) == n_expected == len(s.answer_spans)
    a, b = s.needle_sentence_span
    needle = s.prompt[a:b]
    if s.task == "niah":
        assert needle == f"One of the special magic numbers for {s.key} is: {s.answer}."
        assert s.prompt.endswith(syn.NIAH_QUERY.format(key=s.key)) and s.prompt.startswith(syn.NIAH_PREAMBLE)
        assert s.prompt.count(s.key) == 3
    else:
        assert needle == f"The pass key is {s.answer}. Remember it. {s.answer} is the pass key."
        assert s.prompt.endswith(syn.PASSKEY_QUERY) and s.prompt.startswith(syn.PASSKEY_PREAMBLE)
    assert s.needle_span == s.answer_spans[0]
    for lo, hi in s.answer_spans:
        assert s.prompt[lo:hi] == s.answer and a <= lo < hi <= b
    c0, c1 = s.context_span
    assert c0 <= a < b <= c1 < len(s.prompt) and s.prompt[c1] == "\n"
    # depth, measured from the spans: context characters before the needle / context without the needle
    ctx_wo = (c1 - c0) - (b - a)
    measured = (a - c0) / ctx_wo if ctx_wo > 0 else s.depth
    assert measured == pytest.approx(s.depth_actual, rel=1e-12)
    tol = (max(len(u) for u in units) + 2) / max(ctx_wo, 1)
    assert abs(measured - s.depth) <= tol, (measured, s.depth, tol)


@pytest.mark.parametrize("task", syn.TASKS)
@pytest.mark.parametrize("haystack", syn.HAYSTACKS)
@pytest.mark.parametrize("counter", ["words", "encode-list", "bpe"])
def test_grid_lengths_depths_spans(task, haystack, counter):
    tok = {"words": words, "encode-list": ListEncoder(), "bpe": None}[counter] or bpe()
    count = syn.token_counter(tok)
    lengths, depths = [150, 700], [0.0, 0.25, 0.5, 1.0]
    grid = syn.make_grid(task, tok, lengths, depths, samples=2, seed=7, haystack=haystack, docs=TEXT_DOCS)
    assert [(s.length, s.depth, s.sample) for s in grid] == [
        (n, d, i) for n in lengths for d in depths for i in range(2)]
    units = syn._units_for(haystack, TEXT_DOCS)
    max_unit_tokens = max(count(u) for u in units)
    for s in grid:
        _check(s, count, units)
        assert s.length - s.n_tokens <= max_unit_tokens + 3  # the haystack was filled
    assert len({s.answer for s in grid}) > len(grid) // 2


def test_same_seed_same_samples_other_seed_differs():
    a = syn.niah_grid(words, [200], [0.3, 0.9], 3, seed=11, haystack="text", docs=TEXT_DOCS)
    assert a == syn.niah_grid(words, [200], [0.3, 0.9], 3, seed=11, haystack="text", docs=TEXT_DOCS)
    b = syn.niah_grid(words, [200], [0.3, 0.9], 3, seed=12, haystack="text", docs=TEXT_DOCS)
    assert [s.prompt for s in a] != [s.prompt for s in b]
    one = syn.make_sample("niah", words, 200, 0.9, sample=1, seed=11, haystack="text", docs=TEXT_DOCS)
    assert one == a[4]  # standalone sample == the grid's (the fit hint changes no result)
    pk = syn.passkey_grid(words, [120], [0.5], 2, seed=1)
    assert pk == syn.passkey_grid(words, [120], [0.5], 2, seed=1)
    assert pk != syn.passkey_grid(words, [120], [0.5], 2, seed=2)


def test_fit_equals_linear_scan_reference():
    rng = random.Random(0)
    for trial in range(60):
        costs = [rng.randint(1, 9) for _ in range(300)]
        base = rng.randint(1, 20)

        def build(n, costs=costs):
            return {"prompt": n}

        def count(n, costs=costs, base=base):
            return base + sum(costs[:n])

        length = rng.randint(base, base + sum(costs) - 1)
        ref = max(n for n in range(301) if count(n) <= length)  # naive reference
        hint = rng.choice([None, ref, ref + 1, ref + 2, ref + 9, max(ref - 3, 0), 0])
        assert syn._fit(count, build, length, hint) == ref, (trial, hint)


def test_long_prompt_fills_to_target():
    s = syn.make_sample("niah", ListEncoder(), 8192, 0.5, seed=0)
    assert 8192 - 6 <= s.n_tokens <= 8192 and abs(s.depth_actual - 0.5) < 0.01


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "qa"}, "task: 'qa' is not allowed; allowed: niah, passkey"),
    ({"haystack": "noise"}, "haystack: 'noise' is not allowed; allowed: repeat, text"),
    ({"haystack": "text", "docs": None}, "docs: haystack 'text' needs a list of documents"),
    ({"haystack": "text", "docs": ["  ", ""]}, "docs: the text haystack needs at least one non-empty"),
    ({"length": 20}, r"length: 20 tokens is too short for the needle and query alone \(\d+ tokens\)"),
    ({"length": 0}, "length: must be a positive integer"),
    ({"depth": 1.5}, r"depth: must be in \[0, 1\]"),
])
def test_synthetic_errors(kwargs, message):
    args = {"task": "niah", "count_tokens": words, "length": 200, "depth": 0.5, **kwargs}
    with pytest.raises(ValueError, match=message):
        syn.make_sample(**args)


def test_split_units_round_trip():
    text = TEXT_DOCS[0] + "x" * 1000 + ". end"
    units = syn.split_units(text)
    assert "".join(units) == text and max(len(u) for u in units) <= 400
    assert units[:2] == ["Rivers carve valleys over long ages.", " Rain feeds them in spring!"]
    with pytest.raises(TypeError, match="count_tokens"):
        syn.token_counter(42)
