"""Site corpus (zoo.site_corpus / zoo.site_sources): a base build extended from a fake site-packages tree
and a fake stdlib that the tests write; determinism, order, dedup, held-out leakage, manifest, loading
(memory map, hash checks) and the plan's corpus hash refusing another corpus."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from zoo.corpus import read_jsonl
from zoo.site_corpus import DOC_ENDS_FILE, TOKENS_FILE, build_site_data, overlaps
from zoo.site_sources import site_path_reason, text_reason
from zoo.tokenizer import backend_of

SEQ = 64


def _code(seed: int, n_funcs: int = 40) -> str:
    """Deterministic, unique Python-looking text of a few KB."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "lambda_", "rho"]
    out = [f'"""Module {seed}: helpers for {rng.choice(words)} handling."""\n\n']
    for i in range(n_funcs):
        a, b = rng.choice(words), rng.choice(words)
        out.append(f"def {a}_{b}_{seed}_{i}(value, scale={rng.randint(2, 99)}):\n"
                   f"    result_{a} = value * scale + len('{b}{rng.randint(0, 10**6)}')\n"
                   f"    return result_{a} if result_{a} > 0 else -result_{a}\n\n")
    return "".join(out)


def _dist(root: Path, name: str, licence: str, files: dict[str, str]) -> None:
    info = root / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
                                   f"License-Expression: {licence}\n", encoding="utf-8")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    (info / "RECORD").write_text("".join(f"{r},,\n" for r in [*files, f"{info.name}/METADATA"]), encoding="utf-8")


@pytest.fixture(scope="module")
def tree(tmp_path_factory, data_dir) -> dict:
    """A fake site-packages (fakepkg: every kind of file; gplpkg: refused) and a fake stdlib."""
    root = tmp_path_factory.mktemp("site")
    val = list(read_jsonl(data_dir / "val.jsonl"))
    base_ids = [d.id for d in read_jsonl(data_dir / "train.jsonl.gz") if d.id.startswith("stdlib:")]
    leak = val[0].text
    near = leak.replace("\n", "\n# a comment line that is new here\n", 1)
    site, stdlib = root / "site-packages", root / "Lib"
    _dist(site, "fakepkg", "MIT", {
        "fakepkg/core.py": _code(1),
        "fakepkg/util.pyi": _code(2),
        "fakepkg/README.md": "# fakepkg\n\n" + "Some prose about the package, line by line.\n" * 100,
        "fakepkg/ext.c": "/* ext */\n" + "".join(f"static int f{i}(int x) {{ return x * {i}; }}\n" for i in range(80)),
        "fakepkg/dup.py": _code(1),
        "fakepkg/leak.py": leak,
        "fakepkg/near.py": near,
        "fakepkg/gen.py": "# DO NOT EDIT: generated\n" + _code(3),
        "fakepkg/table.txt": "\n".join(str(i * 7919) for i in range(2000)),
        "fakepkg/small.py": "x = 1\n",
        "fakepkg/tests/test_core.py": _code(4),
        "fakepkg/_vendor/other.py": _code(5),
        "fakepkg/LICENSE.txt": "MIT License\n" * 200,
        "fakepkg/data.bin": _code(6),  # not a source extension: never a candidate
    })
    _dist(site, "gplpkg", "GPL-3.0-only", {"gplpkg/mod.py": _code(7)})
    val_std = next(d.id for d in val if d.id.startswith("stdlib:"))
    files = {"newmod.py": _code(8), base_ids[0].split(":", 1)[1]: _code(9), val_std.split(":", 1)[1]: _code(10)}
    for rel, text in files.items():
        (stdlib / rel).parent.mkdir(parents=True, exist_ok=True)
        (stdlib / rel).write_text(text, encoding="utf-8")
    return {"root": root, "site": site, "stdlib": stdlib, "leak": leak}


def _build(out: Path, data_dir: Path, tree: dict, **kw) -> dict:
    return build_site_data(out, data_dir, stdlib_root=tree["stdlib"], roots=[tree["site"]], **kw)


@pytest.fixture(scope="module")
def site(tmp_path_factory, data_dir, tree) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("site_corpus")
    return out, _build(out, data_dir, tree, workers=0)


def _docs(out: Path) -> list[np.ndarray]:
    stream = np.load(out / TOKENS_FILE)
    ends = np.load(out / DOC_ENDS_FILE)
    return [stream[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def test_site_manifest_sources_and_exclusions(site, data_dir) -> None:
    out, m = site
    by = {s["source"]: s for s in m["sources"]}
    assert [s["source"] for s in m["sources"]] == ["base", "stdlib", "pypi/fakepkg"]
    assert "gplpkg" in m["refused_packages"] and "GPL-3.0-only" in m["refused_packages"]["gplpkg"]
    fake = by["pypi/fakepkg"]
    assert fake["version"] == "1.0" and fake["licence"] == "MIT"
    assert fake["docs"] == 4  # core.py, util.pyi, README.md, ext.c
    assert fake["excluded"] == {"duplicate": 1, "generated": 1, "heldout_duplicate": 1, "heldout_overlap": 1,
                                "data_table": 1, "too_small": 1, "tests_or_build": 1, "vendored": 1,
                                "licence_text": 1}
    assert by["stdlib"]["docs"] == 1 and by["stdlib"]["excluded"] == {"heldout_id": 1, "in_base": 1}
    base_natural = [d for d in read_jsonl(data_dir / "train.jsonl.gz") if not d.source.startswith("synthetic/")]
    assert by["base"]["docs"] == len(base_natural)
    t = m["train_tokens"]
    assert t["docs"] == sum(s["docs"] for s in m["sources"]) and t["tokens"] == sum(s["tokens"] for s in m["sources"])
    stream = np.load(out / TOKENS_FILE)
    assert stream.dtype == np.uint16 and len(stream) == t["tokens"]
    assert hashlib.sha256(stream.tobytes()).hexdigest() == t["sha256"]
    for rel in ("tokenizer/tokenizer.json", "val.jsonl", "test.jsonl", "train.jsonl.gz"):
        assert (out / rel).read_bytes() == (data_dir / rel).read_bytes()
    assert m["seconds"]["total"] > 0 and m["base"]["sha256"]["val.jsonl"] == m["sha256"]["val.jsonl"]


def test_site_stream_order_and_roundtrip(site, data_dir, tree) -> None:
    out, m = site
    tok = backend_of(out / "tokenizer")
    eos = m["tokenizer"]["eos_id"]
    docs = _docs(out)
    assert all(d[-1] == eos for d in docs)
    texts = [tok.decode(d[:-1].tolist(), skip_special_tokens=False) for d in docs]
    base = [d.text for d in read_jsonl(data_dir / "train.jsonl.gz") if not d.source.startswith("synthetic/")]
    site_files = ["newmod.py", "fakepkg/README.md", "fakepkg/core.py", "fakepkg/ext.c", "fakepkg/util.pyi"]
    want = base + [((tree["stdlib"] if i == 0 else tree["site"]) / f).read_text(encoding="utf-8")
                   for i, f in enumerate(site_files)]
    assert texts == want  # base first (its order), then stdlib, then packages by name, paths sorted
    held = {d.text for s in ("val", "test") for d in read_jsonl(data_dir / f"{s}.jsonl")}
    assert not held & set(texts) and tree["leak"] not in texts


def test_site_build_deterministic_across_workers(site, tmp_path, data_dir, tree) -> None:
    out, m = site
    m2 = _build(tmp_path / "again", data_dir, tree, workers=2)
    assert m2["train_tokens"] == m["train_tokens"]
    assert (tmp_path / "again" / TOKENS_FILE).read_bytes() == (out / TOKENS_FILE).read_bytes()
    assert m2["sources"] == m["sources"] and m2["sha256"] == m["sha256"]


def test_site_without_extra_sources_has_base_hash(tmp_path, data_dir) -> None:
    from zoo.data import load_corpus

    empty = tmp_path / "empty-site"
    empty.mkdir()
    m = build_site_data(tmp_path / "s", data_dir, roots=[empty], include_stdlib=False, workers=0)
    base = load_corpus(data_dir, SEQ)
    assert m["train_tokens"]["sha256"] == base.sha256 and m["train_tokens"]["tokens"] == base.natural_tokens
    site = load_corpus(tmp_path / "s", SEQ)
    assert site.sha256 == base.sha256 and np.array_equal(np.asarray(site.rows), base.rows)
    assert isinstance(site.rows.base, np.memmap) or isinstance(site.rows, np.memmap)
    assert np.array_equal(site.val_rows, base.val_rows)
    few = load_corpus(tmp_path / "s", SEQ, max_docs=5)
    assert few.sha256 == load_corpus(data_dir, SEQ, max_docs=5).sha256


def test_site_refuses_tampered_base_and_corrupt_stream(tmp_path, data_dir, site) -> None:
    from zoo.data import load_corpus

    bad = tmp_path / "base"
    shutil.copytree(data_dir, bad)
    with open(bad / "val.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "x:y", "text": "leaked", "source": "stdlib"}) + "\n")
    with pytest.raises(ValueError, match="val.jsonl is missing or differs from the sha256"):
        build_site_data(tmp_path / "o", bad, roots=[], include_stdlib=False, workers=0)
    with pytest.raises(ValueError, match="must differ from base"):
        build_site_data(data_dir, data_dir, roots=[], workers=0)
    out = tmp_path / "corrupt"
    shutil.copytree(site[0], out)
    stream = np.load(out / TOKENS_FILE, mmap_mode="r+")
    stream[5] = stream[5] ^ 1
    stream.flush()
    del stream
    with pytest.raises(ValueError, match="does not match the sha256 its manifest records"):
        load_corpus(out, SEQ)


def test_plan_hash_refuses_other_corpus(site, data_dir, tmp_path, capsys) -> None:
    from zoo.__main__ import main
    from zoo.data import check_corpus, load_corpus

    corpus = load_corpus(site[0], SEQ)
    assert corpus.sha256 == site[1]["train_tokens"]["sha256"]
    check_corpus(corpus, corpus.sha256)
    check_corpus(corpus, None)
    with pytest.raises(ValueError, match=f"has token-stream sha256 {corpus.sha256}, but the plan names 0000"):
        check_corpus(corpus, "0" * 64)
    rc = main(["train", "--variant", "swa64", "--size", "smoke", "--steps", "1", "--data", str(site[0]),
               "--out", str(tmp_path / "r"), "--device", "cpu", "--workers", "0", "--corpus-sha256", "ab" * 32])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "but the plan names abab" in err
    assert not (tmp_path / "r" / "runs").exists()


def test_train_all_resume_refuses_plan_of_other_corpus(site, tmp_path) -> None:
    from zoo.train import TrainArgs
    from zoo.train_all import train_all

    out = tmp_path / "round"
    out.mkdir()
    (out / "plan.json").write_text(json.dumps({"steps": 1, "size": "smoke", "corpus_sha256": "cd" * 32}))
    base = TrainArgs(variant="swa64", size="smoke", steps=1, device="cpu", batch_size=2, warmup_steps=0)
    with pytest.raises(ValueError, match="but the plan names cdcd"):
        train_all(out, site[0], base, ["swa64"], workers=0, max_docs=20)


@pytest.mark.parametrize(("rel", "size", "want"), [
    ("pkg/mod.py", 5000, None),
    ("pkg/include/x.h", 5000, None),
    ("../../bin/tool.py", 5000, "outside_package"),
    ("pkg-1.0.dist-info/entry_points.txt", 5000, "metadata"),
    ("pkg/LICENSE.md", 5000, "licence_text"),
    ("pkg/third_party/x.c", 5000, "vendored"),
    ("pkg/testing/helpers.py", 5000, "tests_or_build"),
    ("pkg/mod_test.py", 5000, "tests_or_build"),
    ("pkg/big.cpp", 300_000, "too_large"),
    ("pkg/tiny.rst", 100, "too_small"),
])
def test_site_path_reason(rel, size, want) -> None:
    assert site_path_reason(rel, size, 2000, 200_000) == want


def test_text_reason_and_overlap() -> None:
    code = _code(11)
    assert text_reason(code) is None
    assert text_reason("// @generated by torchgen\n" + code) == "generated"
    assert text_reason("# GNU General Public License v3\n" + code) == "other_licence"
    assert text_reason("/* NOTICE TO LICENSEE: proprietary */\n" + code) == "other_licence"
    assert text_reason("\n".join(["ab", "cd"] * 500)) == "word_list"
    assert text_reason("x" * 5000) == "long_lines"
    assert text_reason(code + "\x00") == "binary"
    held = {s.strip() for s in code.splitlines() if len(s.strip()) >= 20}
    assert overlaps(code, held) and not overlaps(_code(12), held)
    half = "\n".join(code.splitlines()[: len(code.splitlines()) // 3]) + "\n" + _code(13)
    assert not overlaps(half, held)


def test_site_licence_terms(tmp_path) -> None:
    from zoo.site_sources import package_sources

    _dist(tmp_path, "boostish", "MIT AND BSL-1.0", {"boostish/m.py": _code(14)})
    srcs, refused = package_sources([tmp_path], 2000, 200_000, None)
    assert [s.name for s in srcs] == ["pypi/boostish"] and not refused
    assert [rel for rel, _ in srcs[0].files] == ["pypi/boostish:boostish/m.py"]
    srcs, refused = package_sources([tmp_path], 2000, 200_000, None, frozenset())
    assert not srcs and "BSL-1.0" in refused["boostish"]


def test_site_longeval_split_leaves_the_stream(site, tmp_path, data_dir, tree) -> None:
    """Long held-out documents: chosen by text hash among site documents of >= LONGEVAL_MIN_TOKENS,
    removed from the training stream (nothing else changes), stored as tokens with ids/sources; the cap
    stops the split; with the real thresholds the small fake files hold nothing out."""
    import zoo.site_corpus as sc

    out, m = site
    assert m["longeval"]["docs"] == 0 and len(np.load(out / sc.LONGEVAL_TOKENS_FILE)) == 0
    kw = {"longeval_min_tokens": 1, "longeval_every": 1}
    m2 = _build(tmp_path / "le", data_dir, tree, workers=0, longeval_cap=1, **kw)  # the first site doc only
    held = json.loads((tmp_path / "le" / sc.LONGEVAL_DOCS_FILE).read_text(encoding="utf-8"))
    assert [d["source"] for d in held] == ["stdlib"] and m2["longeval"]["docs"] == 1
    toks = np.load(tmp_path / "le" / sc.LONGEVAL_TOKENS_FILE)
    assert list(np.load(tmp_path / "le" / sc.LONGEVAL_DOC_ENDS_FILE)) == [len(toks)] == [held[0]["tokens"]]
    tok = backend_of(out / "tokenizer")
    assert tok.decode(toks.tolist(), skip_special_tokens=False) == (tree["stdlib"] / "newmod.py").read_text()
    docs, docs2 = _docs(out), _docs(tmp_path / "le")
    assert len(docs2) == len(docs) - 1 and not any(np.array_equal(d[:-1], toks) for d in docs2)
    by = {s["source"]: s for s in m2["sources"]}
    assert by["stdlib"]["excluded"]["longeval"] == 1 and by["base"]["docs"] == len(docs) - 5
    m3 = _build(tmp_path / "all", data_dir, tree, workers=0, longeval_cap=10**9, **kw)  # every site doc
    assert m3["longeval"]["docs"] == 5 and len(_docs(tmp_path / "all")) == len(docs) - 5
