"""No way out of the roots: every ref kind (zoo/, model roots, the LongPPL evaluator, file: data) must
resolve to a real path inside its root, symlinks resolved; refused refs are one line, exit 2 / HTTP 422,
and nothing is stored. Also: pickle checkpoints refused unless allowed, file data over HTTP only from
the allowed directories, empty files a clear error, and no existence oracle outside them."""

from __future__ import annotations

import os
import shlex
import warnings

import pytest

from backend import model_refs
from backend.datasets import resolve as resolve_data
from backend.server import make_app
from tests.backend.test_cli import cli

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


def checkpoint(path, weights: str = "model.safetensors"):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / weights).write_bytes(b"\0")
    return path


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """precomputed/zoo/real, roots/ok, outside/evil (a checkpoint nobody may load) and links to it."""
    pre, roots, out = tmp_path / "precomputed", tmp_path / "roots", tmp_path / "outside"
    checkpoint(pre / "zoo" / "real")
    checkpoint(roots / "ok")
    checkpoint(roots / "team" / "nested")
    checkpoint(out / "evil")
    checkpoint(roots / "pickled", weights="pytorch_model.bin")
    os.symlink(out / "evil", pre / "zoo" / "link")
    os.symlink(out / "evil", roots / "link")
    os.symlink(out, roots / "up")
    data, secret = tmp_path / "data", out / "secret.txt"
    (data / "folder").mkdir(parents=True)
    secret.write_text("the operator's secret " * 20)
    (data / "ok.txt").write_text("a fine document for the tests. " * 8)
    (data / "empty.txt").write_text("")
    (data / "folder" / "a.txt").write_text("inside " * 30)
    os.symlink(secret, data / "folder" / "b.txt")
    os.symlink(secret, data / "link.txt")
    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(pre))
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(roots))
    monkeypatch.setenv("HYBRIDSCOPE_STORE", str(tmp_path / "store"))
    for k in ("HYBRIDSCOPE_DATA_ROOTS", "HYBRIDSCOPE_ALLOW_PICKLE", "HYBRIDSCOPE_HOSTED"):
        monkeypatch.delenv(k, raising=False)
    return tmp_path


BAD_MODELS = [  # (ref, text of the one-line refusal)
    ("zoo/../outside/evil", "no empty, '.' or '..' components"),
    ("zoo/../../etc", "no empty, '.' or '..' components"),
    ("zoo/./real", "no empty, '.' or '..' components"),
    ("zoo//real", "no empty, '.' or '..' components"),
    ("zoo/link", "unknown zoo model 'zoo/link'"),  # a symlink out of the zoo
    ("link", "unknown model 'link'"),  # a symlink out of a model root
    ("up/evil", "unknown model 'up/evil'"),  # a linked folder out of a model root
    ("ok/../../outside/evil", "no empty, '.' or '..' components"),
    ("../outside/evil", "no empty, '.' or '..' components"),
    ("{abs}", "no empty, '.' or '..' components"),  # an absolute path
    ("tiny/SSSF\n", "is not a valid ref"),
    ("tiny/SF\x00", "is not a valid ref"),
    ("zoo/real\t", "is not a valid ref"),
    ("a" * 300, "unknown model 'aaaa"),  # longer than a file name may be
    ("zoo/" + "b" * 300, "unknown zoo model"),
    ("x" * 513, "is not a valid ref"),
    ("~/x", "unknown model '~/x'"),
    ("pickled", "has only pickle weights (pytorch_model.bin)"),
]


@pytest.mark.parametrize("ref, expected", BAD_MODELS, ids=[r[:30].encode("unicode_escape").decode()
                                                             for r, _ in BAD_MODELS])
def test_model_refs_stay_inside_their_root(tree, ref, expected):
    ref = ref.format(abs=tree / "outside" / "evil")
    with pytest.raises(ValueError) as e:
        model_refs.resolve(ref)
    msg = str(e.value)
    assert msg.startswith("model: ") and "\n" not in msg and expected in msg, msg


def test_good_model_refs_resolve_to_real_paths_inside(tree):
    assert model_refs.resolve("zoo/real").path == (tree / "precomputed" / "zoo" / "real").resolve()
    assert model_refs.resolve("ok").path == (tree / "roots" / "ok").resolve()
    assert model_refs.resolve("team/nested").path == (tree / "roots" / "team" / "nested").resolve()
    assert model_refs.resolve("tiny/SF").path is None


def test_pickle_weights_only_with_the_opt_in(tree, monkeypatch):
    monkeypatch.setenv("HYBRIDSCOPE_ALLOW_PICKLE", "1")
    ref = model_refs.resolve("pickled")
    assert ref.path == (tree / "roots" / "pickled").resolve()
    fp = model_refs.fingerprint(ref)
    (tree / "roots" / "pickled" / "pytorch_model.bin").write_bytes(b"\1")
    assert model_refs.fingerprint(ref) != fp  # the pickle weights are what is loaded: fingerprinted


def test_loading_asks_transformers_for_safetensors_only(tree, monkeypatch):
    import transformers

    from backend import loading

    seen = {}

    class Stop(Exception):
        pass

    def fake(path, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake)
    with pytest.raises(Stop):
        loading._load(model_refs.resolve("ok"), "fp", loading.torch.device("cpu"))
    assert seen["use_safetensors"] is True and seen["local_files_only"] is True
    assert seen["trust_remote_code"] is False


def no_runs(tree) -> bool:
    runs = tree / "store" / "runs"
    return not runs.exists() or not any(runs.iterdir())


@pytest.mark.parametrize("flag", ["--model {ref}", "--model tiny/SF --param evaluator={ref}"])
@pytest.mark.parametrize("ref", ["zoo/link", "link", "zoo/../outside/evil", "up/evil", "pickled"])
def test_cli_refuses_escaping_models_and_evaluators(tree, capsys, flag, ref):
    probe = "longppl" if "evaluator" in flag else "token_loss"
    argv = shlex.split(f"run {flag.format(ref=ref)} --probe {probe} --data file:{tree / 'data' / 'ok.txt'} "
                       "--param max_tokens=64 --param n_docs=1")
    if probe == "longppl":
        argv += ["--param", "trunc_len=32", "--param", "stride=16"]
    code, out, err = cli(argv, capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: model: "), err
    assert no_runs(tree)


DATA_OUTSIDE = ["{t}/outside/secret.txt", "{t}/data/../outside/secret.txt", "{t}/data/link.txt",
                "{t}/outside/no-such-file.txt", "/etc/hostname", "~/.bashrc"]


def test_http_file_data_is_off_without_allowed_directories(tree):
    client = TestClient(make_app(str(tree / "store")), base_url="http://127.0.0.1")
    for ref in ["file:{t}/data/ok.txt", "{t}/data/ok.txt", *(f"file:{p}" for p in DATA_OUTSIDE)]:
        r = client.post("/runs", json={"model": "tiny/SF", "probe": "token_loss", "data": ref.format(t=tree),
                                       "params": {"n_docs": 1, "max_tokens": 64}})
        assert r.status_code == 422 and r.json()["detail"].startswith("data: file datasets are off"), r.text
    assert no_runs(tree)


def test_http_file_data_only_inside_the_allowed_directories(tree, monkeypatch):
    monkeypatch.setenv("HYBRIDSCOPE_DATA_ROOTS", str(tree / "data"))
    client = TestClient(make_app(str(tree / "store")), base_url="http://127.0.0.1")

    def post(ref):
        return client.post("/runs", json={"model": "tiny/SF", "probe": "token_loss", "data": ref,
                                          "params": {"n_docs": 1, "max_tokens": 64}})

    details = set()
    for ref in DATA_OUTSIDE:
        r = post(f"file:{ref.format(t=tree)}")
        assert r.status_code == 422, r.text
        details.add(r.json()["detail"].split("'")[2])
    # the same refusal whether the file exists or not, a symlink or not: no existence oracle
    assert details == {" is not inside an allowed data directory (HYBRIDSCOPE_DATA_ROOTS); allowed: "
                       "zoo:val, zoo:test, stdlib, or file:PATH under those directories"}
    r = post(f"file:{tree / 'data' / 'folder'}")  # a folder with a symlink out of it
    assert r.status_code == 422 and r.json()["detail"] == "data: 'b.txt' links outside the allowed data directory"
    r = post(f"file:{tree / 'data' / 'empty.txt'}")
    assert r.status_code == 422 and r.json()["detail"] == (
        "data: document 'empty.txt' is empty; every document needs text")
    assert no_runs(tree)
    with client.stream("POST", "/runs", json={"model": "tiny/SF", "probe": "token_loss",
                                              "data": f"file:{tree / 'data' / 'ok.txt'}",
                                              "params": {"n_docs": 1, "max_tokens": 64}}) as r:
        assert r.status_code == 200 and "run_id" in list(r.iter_lines())[-1]


def test_command_line_file_data_is_free_unless_the_operator_confines_it(tree, monkeypatch):
    secret = tree / "outside" / "secret.txt"
    assert resolve_data(f"file:{secret}", 1, roots=None)[1][0].text.startswith("the operator's secret")
    monkeypatch.setenv("HYBRIDSCOPE_DATA_ROOTS", str(tree / "data"))
    from backend.paths import file_data_roots

    with pytest.raises(ValueError, match="is not inside an allowed data directory"):
        resolve_data(f"file:{secret}", 1, roots=file_data_roots(remote=False))
    monkeypatch.delenv("HYBRIDSCOPE_DATA_ROOTS")
    monkeypatch.setenv("HYBRIDSCOPE_HOSTED", "1")
    assert file_data_roots(remote=False) == []  # a hosted backend reads no files by default
