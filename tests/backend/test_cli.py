"""CLI: a table of bad inputs (exit code 2, one line on stderr naming the problem), and the
models / run / show / sql commands on a tiny model. Runs ``backend.cli.main`` in-process, plus
two real ``python -m backend`` processes."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from backend.cli import main

REPO = Path(__file__).resolve().parents[2]
RUN = "run --model tiny/SF --probe token_loss --data {doc} --param n_docs=1 --param max_tokens=64"
RH = "run --model tiny/SF --probe retrieval_heads"
AR = "run --model tiny/MF --probe attention_rows --data {doc} --param max_tokens=64"
LP = "run --model tiny/SF --probe longppl --data {doc}"
RUN_MF, RUN_GF = RUN.replace("tiny/SF", "tiny/MF"), RUN.replace("tiny/SF", "tiny/GF")
SPEC_EXTRA = '{{"model": "tiny/SF", "probe": "token_loss", "colour": 1}}'

BAD = [  # (command line, text the one-line message must contain)
    # unknown model / probe / dataset
    ("run --model nope/x --probe token_loss --data {doc}", "model: unknown model 'nope/x'"),
    ("run --model tiny/SFX --probe token_loss --data {doc}", "model: unknown model 'tiny/SFX'"),
    ("run --model zoo/nothing --probe token_loss --data {doc}", "model: unknown zoo model 'zoo/nothing'"),
    ("run --model 'tiny SF' --probe token_loss", "model: 'tiny SF' is not a valid ref"),
    ("run --model tiny/SF --probe foo", "probe: unknown probe 'foo'; allowed: token_loss"),
    ("run --model tiny/SF --probe token_loss --data zoo:nope", "data: unknown bundled dataset 'zoo:nope'"),
    ("run --model tiny/SF --probe token_loss --data file:/nonexistent/x.txt",
     "data: 'file:/nonexistent/x.txt' not found"),
    ("run --model tiny/SF --probe token_loss --data {csv}", "has suffix '.csv'; allowed: .txt, .jsonl"),
    ("run --model tiny/SF --probe token_loss --data {emptydir}", "data: no .txt or .jsonl files"),
    # malformed ablations, and ablations that do not fit the model
    (RUN + " --ablation 'window[swa]=abc'", "ablation.window[swa]: 'abc' is not allowed"),
    (RUN + " --ablation 'colour=1'", "ablation: unknown field 'colour'"),
    (RUN + " --ablation 'window[swaa]=64'", "unknown selector 'swaa'; allowed: all, full, swa"),
    (RUN + " --ablation 'sinks=-1'", "ablation.sinks: -1 is not allowed"),
    (RUN + " --ablation 'pe[full]=alibi'", "'alibi' is not allowed; allowed: rope, nope"),
    (RUN + " --ablation 'skip=9'", "ablation.skip_layers: layer 9 out of range; allowed: 0-1"),
    (RUN + " --ablation 'heads=1.9'", "head 9 of layer 1 out of range"),
    (RUN_MF + " --ablation 'window[0]=8'", "window applies to attention layers; layer 0 is mamba2"),
    (RUN_MF + " --ablation 'pe[0]=nope'", "pe applies to attention layers; layer 0 is mamba2"),
    (RUN_GF + " --ablation 'rf[linear]=2'", "shorter than the short-conv width"),
    # text too short for the probe
    ("run --model tiny/SF --probe token_loss --data {short}",
     "data: document has 1 token(s); at least 2 are needed"),
    (AR + " --param queries=500", "params.queries: positions [500] out of range for 64 tokens"),
    (RH + " --param lengths=20", "length: 20 tokens is too short for the needle and query alone"),
    # store
    (RUN + " --store {file}/sub", "store: cannot create"),
    # --param syntax, unknown and out-of-range params
    (RUN + " --param n_docs", "--param: expected key=value, got 'n_docs'"),
    (RUN + " --param =5", "--param: expected key=value, got '=5'"),
    (RUN + " --param foo=1", "params.foo: Extra inputs are not permitted"),
    (RUN + " --param max_tokens=-5", "params.max_tokens: Input should be greater than or equal to 16"),
    (RUN + " --param n_docs=0", "params.n_docs: Input should be greater than or equal to 1"),
    (RUN + " --param max_tokens=99999999999", "params.max_tokens: Input should be less than or equal to"),
    (RUN + " --param n_docs=abc", "params.n_docs: Input should be a valid integer"),
    (RUN + " --param bucket=1.5", "params.bucket: Input should be a valid integer"),
    (LP + " --param alpha=abc", "params.alpha: Input should be a valid number"),
    (LP + " --param trunc_len=64 --param stride=64", "params: stride must be < trunc_len (64), got 64"),
    (LP + " --param trunc_len=4096", "params: trunc_len must be < max_tokens (4096), got 4096"),
    (LP + " --param trunc_len=4", "params.trunc_len: Input should be greater than or equal to 8"),
    (LP + " --param evaluator=nope/x", "model: unknown model 'nope/x'"),
    (RH + " --param depths=1.5", "params.depths: each depth must be in [0, 1]"),
    (RH + " --param lengths=8", "params.lengths: each length must be in [16,"),
    (RH + " --param haystack=forest", "params.haystack: Input should be 'repeat' or 'text'"),
    (RH + " --param metric=bogus", "params.metric: Input should be 'mass', 'copy' or 'authors'"),
    (RH + " --param samples=-1", "params.samples: Input should be greater than or equal to 1"),
    # attention_rows on a non-attention layer / heads out of range
    (AR + " --param layers=0", "params.layers: [0] are not attention layers; attention layers: [1]"),
    (AR + " --param heads=9", "params.heads: [9] out of range; layer 1 has 4 heads"),
    (AR + " --param top_k=0", "params.top_k: Input should be greater than or equal to 1"),
    # --spec-json
    ("run --spec-json '{{not json'", "--spec-json: not valid JSON"),
    ("run --spec-json '[1, 2]'", "--spec-json: expected a JSON object"),
    (f"run --spec-json '{SPEC_EXTRA}'", "colour: Extra inputs are not permitted"),
    ("run --spec-json '{{\"probe\": \"token_loss\"}}'", "model: Field required"),
    ("run --model tiny/SF", "run: --model and --probe are required"),
    # show / sql
    ("show ../etc", "run_id: '../etc' is not allowed"),
    ("show abc123", "run_id: no run 'abc123'"),
    ("sql 'DELETE FROM runs'", "only read-only statements"),
    ("sql 'SELECT 1; SELECT 2'", "exactly one statement is allowed, got 2"),
    ("sql 'SELEC 1'", "sql: Parser Error"),
    ("sql \"SELECT * FROM read_csv('/etc/passwd')\"", "sql: file access is disabled"),
    ("sql 'SELECT nope FROM runs'", "sql: Binder Error"),
    # argparse
    (RUN + " --bogus", "unrecognized arguments: --bogus"),
    ("frobnicate", "invalid choice: 'frobnicate'"),
    ("serve --port abc", "invalid port 'abc'; allowed: an integer 1-65535"),
    ("serve --port 99999", "invalid port '99999'; allowed: an integer 1-65535"),
]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Files for the table's placeholders; store, model roots and precomputed/ all under tmp_path."""
    (tmp_path / "doc.txt").write_text("".join(f"sentence {i} of a small test document. " for i in range(8)))
    (tmp_path / "short.txt").write_text("a")
    (tmp_path / "data.csv").write_text("a,b\n")
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "file").write_text("a regular file, not a directory")
    (tmp_path / "roots" / "mymodel").mkdir(parents=True)
    (tmp_path / "roots" / "mymodel" / "config.json").write_text("{}")
    monkeypatch.setenv("HYBRIDSCOPE_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(tmp_path / "roots"))
    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(tmp_path / "precomputed"))
    return {k: str(tmp_path / v) for k, v in
            (("doc", "doc.txt"), ("short", "short.txt"), ("csv", "data.csv"), ("emptydir", "emptydir"),
             ("file", "file"), ("store", "store"))}


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_bad_input_table_is_large():
    assert len(BAD) >= 30


@pytest.mark.parametrize("cmd, expected", BAD, ids=[c for c, _ in BAD])
def test_bad_input_exits_2_with_one_line(cmd, expected, env, capsys):
    code, out, err = cli(shlex.split(cmd.format(**env)), capsys)
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, err  # exactly one line
    assert err.startswith("error: ") and expected in err, err
    assert out == ""


def test_models_run_show_sql(env, capsys):
    code, out, _ = cli(["models"], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("model ") and len(lines) == 3
    assert lines[1].startswith("mymodel ") and lines[2].startswith("tiny/<pattern of F,S,M,G> ")
    code, out, _ = cli(["models", "--json"], capsys)
    listed = json.loads(out)
    assert code == 0 and [r["ref"] for r in listed] == ["mymodel", "tiny/<pattern of F,S,M,G>"]
    assert [r["supported"] for r in listed] == [False, True]  # mymodel's config.json is {}: no model_type
    assert listed[0]["reason"].startswith("config: cannot be read (")

    argv = shlex.split(RUN.format(**env)) + ["--ablation", "skip=0", "--json"]
    code, out, err = cli(argv, capsys)
    assert code == 0, err
    first = json.loads(out)
    assert first["cached"] is False and first["rows"] == {"token_loss": 63, "position_loss": 1}
    assert first["spec"]["ablation"] == {"skip_layers": [0]} and first["store"] == env["store"]
    code, out, _ = cli(argv, capsys)
    assert code == 0 and json.loads(out)["run_id"] == first["run_id"] and json.loads(out)["cached"] is True
    run_id = first["run_id"]

    code, out, _ = cli(["show", run_id, "--json"], capsys)
    m = json.loads(out)
    assert code == 0 and m["run_id"] == run_id and m["status"] == "ok" and m["rows"]["token_loss"] == 63
    code, out, _ = cli(["show", run_id], capsys)
    assert code == 0 and out.startswith(f"run_id  {run_id}") and "rows    token_loss: 63" in out

    q = ("SELECT r.run_id, r.probe, r.ablation, count(*) AS n FROM runs r JOIN token_loss t USING (run_id) "
         "GROUP BY ALL")
    code, out, _ = cli(["sql", q, "--json"], capsys)
    assert code == 0
    assert json.loads(out) == [{"run_id": run_id, "probe": "token_loss", "ablation": "skip=0", "n": 63}]
    code, out, _ = cli(["sql", "SELECT probe, status FROM runs"], capsys)
    assert code == 0 and out == "probe\tstatus\ntoken_loss\tok\n"


def test_failing_probe_exits_1(env, capsys, monkeypatch):
    import backend.probes.token_loss as token_loss

    def boom(ctx):
        raise RuntimeError("kernel exploded\nwith a second line")

    monkeypatch.setattr(token_loss, "run", boom)
    code, out, err = cli(shlex.split(RUN.format(**env)), capsys)
    assert code == 1 and err == "error: kernel exploded\n" and out == ""


def test_python_m_backend_processes(env, tmp_path):
    run_env = {**os.environ, "HYBRIDSCOPE_PRECOMPUTED": str(tmp_path / "precomputed"),
               "PYTHONPATH": str(REPO)}

    def py(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "backend", *args], cwd=REPO, env=run_env,
                              capture_output=True, text=True, timeout=120)

    bad = py("run", "--model", "tiny/SF", "--probe", "token_loss", "--data", env["short"], "--progress")
    assert bad.returncode == 2 and bad.stdout == ""
    lines = bad.stderr.splitlines()
    assert all(json.loads(line)["progress"] >= 0 for line in lines[:-1])  # --progress: JSON lines
    assert lines[-1] == "error: data: document has 1 token(s); at least 2 are needed"
    ok = py("models", "--json")
    assert ok.returncode == 0 and [r["ref"] for r in json.loads(ok.stdout)] == ["mymodel", "tiny/<pattern of F,S,M,G>"]
