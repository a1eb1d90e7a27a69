"""Zoo corpus + tokenizer: determinism, splits, package licences, synthetic retrieval docs, tokenizer
round-trip, gzip'd splits, packing."""

from __future__ import annotations

import email.message
import gzip
import hashlib
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from zoo.__main__ import main
from zoo.build import build_data, sha256_file
from zoo.corpus import (
    KV_SOURCE,
    PASSKEY_SOURCE,
    Doc,
    collect_stdlib,
    exclusion_reason,
    is_synthetic,
    make_kv_doc,
    make_passkey_doc,
    read_jsonl,
    split_of,
    split_path,
    split_query,
    write_jsonl,
)
from zoo.packages import (
    DEFAULT_PACKAGES,
    check_packages,
    collect_package,
    licence_allowed,
    licence_of,
    package_exclusion_reason,
    package_info,
)
from zoo.tokenizer import backend_of, encode_many, load_tokenizer, pack_ids, pack_tokens, train_bpe

SMALL = dict(
    max_files=14,
    packages=("platformdirs",),  # small, MIT, pinned in requirements.txt
    val_frac=0.2,
    test_frac=0.2,
    vocab_size=700,
    synthetic_frac=0.08,
    synthetic_max_tokens=900,
    seed=3,
)
CODE_SAMPLE = (
    "def f(x: int) -> str:\n\t'''Docstring with ünïcödé, emoji 🐍 and  two spaces.'''   \n"
    "    return {'a': [1, 2.5e-3, 0x1F]}[x]  # trailing\r\n\n\n\x0cclass C(object): pass\n"
)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    a, b = tmp_path_factory.mktemp("zoo_a"), tmp_path_factory.mktemp("zoo_b")
    manifest = build_data(a, **SMALL)
    build_data(b, **SMALL)
    return a, b, manifest


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_two_builds_are_byte_identical(builds: tuple[Path, Path, dict]) -> None:
    a, b, manifest = builds
    names = _files(a)
    assert names == _files(b)
    assert {
        "train.jsonl.gz",
        "val.jsonl",
        "test.jsonl",
        "manifest.json",
        "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer/special_tokens_map.json",
    } <= set(names)
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n
    for n, digest in manifest["sha256"].items():
        assert sha256_file(a / n) == digest, n
    assert "train.jsonl" not in names and gzip.decompress((a / "train.jsonl.gz").read_bytes())
    pkg = manifest["packages"]["platformdirs"]
    assert pkg["licence"] == "MIT" and pkg["version"] and pkg["docs"] > 0
    assert "pypi/platformdirs" in manifest["licence"]
    assert manifest["splits"]["train"]["by_source"]["pypi/platformdirs"]["docs"] > 0


def test_splits_are_disjoint_and_cover_the_selected_files(builds: tuple[Path, Path, dict]) -> None:
    a, _, manifest = builds
    ids = {s: [d.id for d in read_jsonl(split_path(a, s))] for s in ("train", "val", "test")}
    sets = {s: set(v) for s, v in ids.items()}
    assert all(len(ids[s]) == len(sets[s]) for s in ids)
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"])
    assert not (sets["val"] & sets["test"])
    assert sets["val"] and sets["test"]
    natural, _ = collect_stdlib(max_files=SMALL["max_files"])
    pkg, _ = collect_package(package_info("platformdirs"), max_files=SMALL["max_files"])
    natural_ids = {i for s in sets.values() for i in s if not i.startswith("synthetic:")}
    assert natural_ids == {d.id for d in natural + pkg}
    assert all(i.startswith("pypi/platformdirs:platformdirs/") for i in {d.id for d in pkg})
    scale = manifest["params"]["package_holdout_scale"]
    for s in ("val", "test"):  # held-out splits are natural text only, assigned by the path hash
        for i in ids[s]:
            k = scale if i.startswith("pypi/") else 1.0
            assert i.startswith(("stdlib:", "pypi/")) and split_of(i, 0.2 * k, 0.2 * k) == s, i
    assert manifest["splits"]["train"]["docs"] == len(ids["train"])


def test_split_of_is_a_pure_function_of_the_key() -> None:
    keys = [f"stdlib:pkg/mod{i}.py" for i in range(2000)]
    got = [split_of(k, 0.015, 0.015) for k in keys]
    assert got == [split_of(k, 0.015, 0.015) for k in reversed(keys)][::-1]
    held = sum(g != "train" for g in got) / len(got)
    assert 0.015 < held < 0.05
    with pytest.raises(ValueError, match="val_frac/test_frac"):
        split_of("x", 0.6, 0.5)


def test_synthetic_docs_hold_their_answer_exactly_once_before_the_query(
    builds: tuple[Path, Path, dict],
) -> None:
    a, _, manifest = builds
    tok = backend_of(load_tokenizer(a / "tokenizer"))
    synth = [d for d in read_jsonl(split_path(a, "train")) if is_synthetic(d.source)]
    assert {d.source for d in synth} == {KV_SOURCE, PASSKEY_SOURCE}
    for d in synth:
        context, prompt, answer = split_query(d.text)
        assert context + prompt + answer + "\n" == d.text
        assert answer.isdigit() and len(answer) == 5
        assert context.count(answer) == 1, d.id
        if d.source == KV_SOURCE:
            key = prompt.removeprefix("# what is the value of ").removesuffix("? ")
            assert f"\n{key} = {answer}\n" in context
        else:
            assert prompt == "# what is the pass key? " and f"# pass key: {answer}\n" in context
        assert len(tok.encode(d.text).ids) <= SMALL["synthetic_max_tokens"]
    by = manifest["splits"]["train"]["by_source"]
    synth_tokens = by[KV_SOURCE]["tokens"] + by[PASSKEY_SOURCE]["tokens"]
    assert synth_tokens / manifest["splits"]["train"]["tokens"] >= SMALL["synthetic_frac"]


def test_synthetic_generators_fit_the_token_budget_and_vary_depth() -> None:
    sources = [f"x_{i} = compute({i})\nprint(x_{i})\n" * 5 for i in range(10)]
    count = len  # one "token" per character keeps this independent of any tokenizer
    rng = random.Random(0)
    depths = []
    for _ in range(20):
        kv = make_kv_doc(rng, 800, count)
        assert len(kv) <= 800 and len(kv) > 700  # fitted close to the budget
        pk = make_passkey_doc(rng, sources, 500, count)
        context, _, answer = split_query(pk)
        assert len(pk) <= 500 and context.count(answer) == 1
        depths.append(context.index("# pass key:") / len(context))
    assert min(depths) < 0.25 and max(depths) > 0.75
    with pytest.raises(ValueError, match="max_tokens"):
        make_kv_doc(rng, 10, count)


def test_tokenizer_round_trips_code_and_loads_with_auto_tokenizer(builds: tuple[Path, Path, dict]) -> None:
    a, _, _ = builds
    hf = load_tokenizer(a / "tokenizer")
    assert (hf.eos_token, hf.eos_token_id, hf.pad_token, hf.pad_token_id) == (
        "<|endoftext|>",
        0,
        "<|pad|>",
        1,
    )
    ids = hf.encode(CODE_SAMPLE, add_special_tokens=False)
    assert hf.decode(ids) == CODE_SAMPLE
    real = next(read_jsonl(a / "val.jsonl")).text
    assert hf.decode(hf.encode(real, add_special_tokens=False)) == real
    assert hf.encode("a<|endoftext|>b", add_special_tokens=False)[1] == 0
    assert len(hf) == SMALL["vocab_size"]
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(["abc"], vocab_size=70000)


def test_pack_ids_known_values() -> None:
    rows, stats = pack_ids([([5, 6, 7], False), ([9], True), ([2, 3, 4, 5, 6], False)], 4, eos_id=0, pad_id=1)
    assert rows == [5, 6, 7, 0, 9, 0, 2, 3, 4, 5, 6, 0]
    assert stats["rows"] == 3 and stats["pad_tokens"] == 0 and stats["dropped_tokens"] == 0
    rows, stats = pack_ids([([5, 6], False), ([7, 8], True), ([9, 9, 9], True)], 4, eos_id=0, pad_id=1)
    assert rows == [5, 6, 0, 1, 7, 8, 0, 1, 9, 9, 9, 0] and stats["pad_tokens"] == 2
    rows, stats = pack_ids([([5, 6, 7, 8, 9], False), ([1, 2, 3, 4], True)], 4, eos_id=0, pad_id=1)
    assert (
        rows == [5, 6, 7, 8, 9, 0, 1, 2] and stats["aligned_too_long"] == 1 and stats["dropped_tokens"] == 3
    )


def test_pack_tokens_keeps_synthetic_docs_inside_one_row(
    builds: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    a, _, _ = builds
    seq_len = 1024
    out = tmp_path / "train.npy"
    train = split_path(a, "train")
    stats = pack_tokens(train, a / "tokenizer", seq_len, out)
    arr = np.load(out)
    assert arr.dtype == np.uint16 and arr.size == stats["tokens"] == stats["rows"] * seq_len
    assert json.loads(out.with_suffix(".json").read_text())["rows"] == stats["rows"]
    docs = list(read_jsonl(train))
    ids = encode_many(a / "tokenizer", [d.text for d in docs])
    rows = arr.reshape(-1, seq_len).tolist()
    synth = [i + [0] for i, d in zip(ids, docs, strict=True) if is_synthetic(d.source)]
    starts = {tuple(r[: len(s)]) for r in rows for s in synth if len(s) <= seq_len}
    assert all(tuple(s) in starts for s in synth)
    flat_natural = [t for i, d in zip(ids, docs, strict=True) if not is_synthetic(d.source) for t in i + [0]]
    for s in synth:  # removing every synthetic doc (one per row start) leaves the natural stream in order
        r = next(k for k, row in enumerate(rows) if row[: len(s)] == s)
        rows[r] = rows[r][len(s) :]
    kept = [t for row in rows for t in row if t != stats["pad_id"]]  # pads only follow late synthetic docs
    assert kept == flat_natural[: len(kept)]
    with pytest.raises(ValueError, match="out_path"):
        pack_tokens(train, a / "tokenizer", seq_len, tmp_path / "x.bin")


def test_exclusions_and_bad_input() -> None:
    assert exclusion_reason("test/test_os.py", 5000, 2000, 200_000) == "tests_or_build"
    assert exclusion_reason("idlelib/idle_test/test_x.py", 5000, 2000, 200_000) == "tests_or_build"
    assert exclusion_reason("site-packages/x.py", 5000, 2000, 200_000) == "tests_or_build"
    assert exclusion_reason("_pydecimal.py", 229_202, 2000, 200_000) == "too_large"
    assert exclusion_reason("this.py", 1003, 2000, 200_000) == "too_small"
    assert exclusion_reason("asyncio/tasks.py", 34_000, 2000, 200_000) is None
    docs, excluded = collect_stdlib()
    assert excluded["generated_table"] > 0 and all("encodings/cp1252" not in d.id for d in docs)
    assert not any("/test/" in d.id or d.id.startswith("stdlib:test/") for d in docs)
    with pytest.raises(ValueError, match="max_files"):
        collect_stdlib(max_files=0)
    with pytest.raises(ValueError, match="stdlib_root"):
        collect_stdlib(Path("/nonexistent/lib"))


def _meta(**fields: str | list[str]) -> email.message.Message:
    m = email.message.Message()
    for k, v in fields.items():
        for x in v if isinstance(v, list) else [v]:
            m[k.replace("_", "-")] = x
    return m


def test_licence_filter_reads_metadata_and_refuses_non_permissive_terms() -> None:
    assert licence_of(_meta(License_Expression="Apache-2.0", License="GPL")) == (
        "Apache-2.0",
        "License-Expression",
    )
    assert licence_of(_meta(License="Apache 2.0 License")) == ("Apache-2.0", "License")
    assert licence_of(_meta(License="MPL-2.0 AND MIT")) == ("MPL-2.0 AND MIT", "License")
    bsd3 = "Copyright (c) X\nRedistribution and use in source and binary forms ...\nNeither the name of X"
    assert licence_of(_meta(License=bsd3)) == ("BSD-3-Clause", "License (text)")
    osi = "License :: OSI Approved :: "
    classifiers = [osi + "MIT License", "License :: DFSG approved"]
    assert licence_of(_meta(Classifier=classifiers)) == ("MIT", "classifier")
    assert licence_of(_meta()) == ("UNKNOWN", "none")
    for ok in ("MIT", "BSD-3-Clause AND 0BSD AND MIT AND Zlib AND CC0-1.0", "(Apache-2.0 OR mit)", "PSF-2.0"):
        assert licence_allowed(ok), ok
    for bad in ("MPL-2.0 AND MIT", "GPL-3.0-only", "Apache-2.0 WITH LLVM-exception", "BSL-1.0", "UNKNOWN", ""):
        assert not licence_allowed(bad), bad
    with pytest.raises(ValueError, match=r"^packages: 'no-such-package-zoo' is not installed"):
        check_packages(["numpy", "No_Such.Package-zoo"])
    with pytest.raises(ValueError, match=r"^packages: tqdm .* licence 'MPL-2.0 AND MIT'"):
        check_packages(["tqdm"])
    with pytest.raises(ValueError, match="listed twice"):
        check_packages(["numpy", "NumPy"])


def test_default_packages_are_pinned_installed_and_permissive() -> None:
    reqs = "".join(p.read_text() for p in Path(__file__).resolve().parents[2].glob("requirements*.txt"))
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", reqs, flags=re.M))
    infos = check_packages(DEFAULT_PACKAGES)
    assert [i.name for i in infos] == sorted(DEFAULT_PACKAGES) and "torch" not in DEFAULT_PACKAGES
    for i in infos:
        assert pins.get(i.name) == i.version, i.name


def test_package_exclusions() -> None:
    assert package_exclusion_reason("pyarrow/vendored/version.py", 5000, 2000, 200_000) == "vendored"
    assert package_exclusion_reason("numpy/_core/tests/test_x.py", 5000, 2000, 200_000) == "tests_or_build"
    assert package_exclusion_reason("pkg/test_helpers.py", 5000, 2000, 200_000) == "tests_or_build"
    assert package_exclusion_reason("pkg/conftest.py", 5000, 2000, 200_000) == "tests_or_build"
    assert package_exclusion_reason("../../bin/tool.py", 5000, 2000, 200_000) == "outside_package"
    assert package_exclusion_reason("numpy/testing/_private/utils.py", 5000, 2000, 200_000) is None
    docs, excluded = collect_package(package_info("pyarrow"))
    assert excluded["vendored"] > 0 and excluded["tests_or_build"] > 0 and docs
    assert not any("/vendored/" in d.id or "/tests/" in d.id for d in docs)
    assert all(d.source == "pypi/pyarrow" and d.id.startswith("pypi/pyarrow:pyarrow/") for d in docs)
    docs, excluded = collect_package(package_info("duckdb"))
    assert excluded["generated"] > 0
    assert not any(re.search("(?i)never edit|do not edit", d.text[:1500]) for d in docs)
    seen = {hashlib.sha256(docs[0].text.encode()).hexdigest()}
    again, excluded = collect_package(package_info("duckdb"), seen=seen)
    assert excluded["duplicate"] == 1 and [d.id for d in again] == [d.id for d in docs[1:]]


def test_cli_names_a_missing_package_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "zoo"
    assert main(["build-data", "--out", str(out), "--packages", "numpy,not-installed-zoo-pkg"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'not-installed-zoo-pkg' is not installed" in err and not out.exists()
    with pytest.raises(SystemExit):
        main(["build-data", "--out", str(out), "--packages", "numpy", "--stdlib-only"])


def test_gzip_jsonl_is_deterministic_and_readable_like_plain(tmp_path: Path) -> None:
    docs = [Doc(f"x:{i}", f"print({i})  # ünï 🐍\n" * (i + 1), "stdlib") for i in range(50)]
    digests = [write_jsonl(tmp_path / name, docs) for name in ("a.jsonl.gz", "b.jsonl.gz", "c.jsonl")]
    assert len(set(digests)) == 1
    raw = (tmp_path / "a.jsonl.gz").read_bytes()
    assert raw == (tmp_path / "b.jsonl.gz").read_bytes() and raw[4:8] == b"\0\0\0\0"  # mtime 0
    assert gzip.decompress(raw) == (tmp_path / "c.jsonl").read_bytes()
    assert list(read_jsonl(tmp_path / "a.jsonl.gz")) == list(read_jsonl(tmp_path / "c.jsonl")) == docs
    d = tmp_path / "data"
    d.mkdir()
    with pytest.raises(ValueError, match="has no train.jsonl or train.jsonl.gz"):
        split_path(d, "train")
    write_jsonl(d / "train.jsonl", docs)
    assert split_path(d, "train") == d / "train.jsonl"
    write_jsonl(d / "train.jsonl.gz", docs)
    with pytest.raises(ValueError, match="both"):
        split_path(d, "train")
    (d / "train.jsonl").unlink()
    assert split_path(d, "train") == d / "train.jsonl.gz"
