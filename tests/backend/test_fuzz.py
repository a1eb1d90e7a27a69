"""Generated bad input (seeded, bounded in count and time) against the CLI and the HTTP API: every case
is refused with exit code 2 / an HTTP 4xx and one line, no traceback, and nothing is stored.

The cases are a valid spec with one mutation drawn from a table of kinds (refs escaping their root or
holding control characters, probes, datasets, strict params, ablations, sizes over the limits,
malformed or hostile JSON), plus interface-specific ones (``--param`` syntax, ``serve`` ports, run ids,
SQL; raw bodies, Host headers, methods, paths).
"""

from __future__ import annotations

import json
import random
import shlex
import time
import warnings

import pytest

from backend.cli import main
from backend.server import make_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

N_CASES = 240  # per interface (the issue asks for at least 200)
BUDGET_S = 60.0  # per interface; the loops stop early rather than overrun
CTRL = [chr(c) for c in range(32)] + ["\x7f", "\u2028", "\u202e"]
BASE = {"token_loss": {"n_docs": 1, "max_tokens": 64}, "niah": {"lengths": [128], "samples": 1},
        "longppl": {"n_docs": 1, "max_tokens": 64, "trunc_len": 32, "stride": 16},
        "attention_rows": {"n_docs": 1, "max_tokens": 64}, "retrieval_heads": {"lengths": [128]}}
INT_FIELDS = {"token_loss": ["n_docs", "max_tokens", "bucket"], "longppl": ["n_docs", "trunc_len", "stride"],
              "niah": ["samples", "max_new_tokens", "seed"], "attention_rows": ["top_k", "n_docs"],
              "retrieval_heads": ["samples"]}
BAD_INTS = [True, False, 1.5, 2.0, "5", "1e3", "abc", None, [], {}, -1, 0, 10**30, [[1]], {"a": 1}]
BAD_FLOATS = [True, "abc", "2", None, [], {"x": 1}]
BAD_ABLATIONS = ["window[swaa]=4", "pe[full]=alibi", "skip=99", "heads=9.9", "sinks=-1", "rf[full]=0",
                 "window[all]=abc", "colour=1", "window[0-]=4", "skip=1,,2", "window[swa]=", "=;=;=",
                 "window[swa]=64;window[swa]=32", 17, ["skip=1"], {"window": "x"}, {"skip_layers": [-1]},
                 {"mask_heads": [[1]]}, {"colour": 1}, "x" * 5000]


def bad_model(rng: random.Random, tmp) -> str:
    return rng.choice([
        "zoo/../outside/evil", "zoo/../../etc", "../x", "/etc", f"{tmp}/outside", "zoo//full", "zoo/./full",
        "tiny/SF" + rng.choice(CTRL), rng.choice(CTRL) + "tiny/SF", "tiny/SXF", "tiny/" + "F" * 40, "tiny/",
        "a" * rng.randint(256, 511), "zoo/" + "b" * rng.randint(256, 400), "x" * 600, "", " ", "zoo/nothing",
        "tiny SF", "tïny/SF", "zoo/full\u202e", "link", "nope/" + str(rng.randint(0, 10**6)), "~/.ssh",
    ])


def bad_data(rng: random.Random, tmp) -> object:
    return rng.choice([
        "zoo:nope", "zoo:", "zoo:../x", "file:/nonexistent/x.txt", f"file:{tmp}/outside/secret.txt",
        f"file:{tmp}/data/../outside/secret.txt", f"file:{tmp}/data/link.txt", f"file:{tmp}/data/empty.txt",
        "stdlib" + rng.choice(CTRL), "x" * 600, 5, True, ["stdlib"], {"ref": "stdlib"}, "file:~/.bashrc",
    ])


def bad_params(rng: random.Random, probe: str) -> dict:
    p = dict(BASE[probe])
    kind = rng.randrange(6)
    if kind == 0:
        p[rng.choice(INT_FIELDS[probe])] = rng.choice(BAD_INTS)
    elif kind == 1 and probe == "longppl":
        p[rng.choice(["alpha", "beta"])] = rng.choice(BAD_FLOATS)
    elif kind == 2:
        p["".join(rng.choice("abcxyz_") for _ in range(rng.randint(1, 12))) + "_q"] = 1
    elif kind == 3 and probe in ("niah", "retrieval_heads"):
        p[rng.choice(["lengths", "depths"])] = rng.choice([[], [True], ["x"], [1.5], [-1], [2.0, "y"], [[1]]])
    elif kind == 4 and probe in ("niah", "retrieval_heads"):
        p[rng.choice(["haystack", "task"])] = rng.choice(["forest", "", 1, None, "NIAH"])
    elif probe == "longppl":
        p["stride"] = p["trunc_len"] + rng.randint(0, 10)
    else:
        p[rng.choice(INT_FIELDS[probe])] = rng.choice(BAD_INTS)
    return p


def over_limit(rng: random.Random, probe: str) -> dict:
    p = dict(BASE[probe])
    if probe in ("niah", "retrieval_heads"):
        p["lengths"] = [128, rng.randint(4097, 1 << 20)]
    elif rng.random() < 0.5:
        p["max_tokens"] = rng.randint(4097, 1 << 20)
    else:
        p["n_docs"] = rng.randint(5, 100 if probe == "attention_rows" else 10_000)
    return p


def bad_spec(rng: random.Random, tmp) -> tuple[dict, str]:
    """(spec dict, the kind of its one mutation)."""
    probe = rng.choice(list(BASE))
    spec: dict = {"model": "tiny/SF", "probe": probe, "params": dict(BASE[probe])}
    if probe not in ("niah", "retrieval_heads"):
        spec["data"] = "stdlib"
    kind = rng.choice(["model", "data", "probe", "params", "ablation", "limit", "evaluator", "extra", "missing"])
    if kind == "model":
        spec["model"] = bad_model(rng, tmp)
    elif kind == "data":
        spec["data"] = bad_data(rng, tmp)
    elif kind == "probe":
        spec["probe"] = rng.choice(["", "nope", "TOKEN_LOSS", "token_loss ", 3, None, ["niah"], "x" * 300])
    elif kind == "params":
        spec["params"] = bad_params(rng, probe)
    elif kind == "ablation":
        spec["ablation"] = rng.choice(BAD_ABLATIONS)
    elif kind == "limit":
        spec["params"] = over_limit(rng, probe)
    elif kind == "evaluator":
        spec.update(probe="longppl", data="stdlib", params={**BASE["longppl"], "evaluator": bad_model(rng, tmp)})
    elif kind == "extra":
        spec["".join(rng.choice("abcdefgh") for _ in range(6))] = 1
    else:
        spec.pop(rng.choice(["model", "probe"]))
    if kind != "data" and spec.get("data") in (None, "stdlib") and rng.random() < 0.2:
        spec["data"] = f"file:{tmp}/data/ok.txt"  # an allowed file: the mutation is what must be refused
    return spec, kind


@pytest.fixture
def world(tmp_path, monkeypatch):
    """Data inside the allowed directory (plus a link and an empty file), a secret outside, and a
    hosted backend (its limits apply on the command line too)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret " * 50)
    (tmp_path / "data" / "ok.txt").write_text("a fine document. " * 20)
    (tmp_path / "data" / "empty.txt").write_text("")
    (tmp_path / "data" / "link.txt").symlink_to(tmp_path / "outside" / "secret.txt")
    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(tmp_path / "precomputed"))
    monkeypatch.setenv("HYBRIDSCOPE_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("HYBRIDSCOPE_DATA_ROOTS", str(tmp_path / "data"))
    monkeypatch.setenv("HYBRIDSCOPE_HOSTED", "1")
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(tmp_path / "roots"))
    for k in ("HYBRIDSCOPE_MAX_TOKENS", "HYBRIDSCOPE_MAX_DOCS", "HYBRIDSCOPE_ALLOW_PICKLE"):
        monkeypatch.delenv(k, raising=False)
    return tmp_path


def stored_runs(root) -> list[dict]:
    """Manifests in the store; the only ones allowed are error runs, marked as such."""
    runs = root / "store" / "runs"
    return [json.loads(p.read_text()) for p in runs.glob("*/manifest.json")] if runs.is_dir() else []


def cli_cases(rng: random.Random, tmp) -> list[list[str]]:
    cases: list[list[str]] = []
    while len(cases) < N_CASES:
        r = rng.random()
        if r < 0.55:
            spec, _ = bad_spec(rng, tmp)
            cases.append(["run", "--spec-json", json.dumps(spec)])
        elif r < 0.75:  # the same mutations through the flags
            spec, kind = bad_spec(rng, tmp)
            if kind == "extra" or not all(isinstance(spec.get(k, ""), str) for k in ("model", "probe", "data")):
                continue  # an unknown field has no flag
            if not isinstance(spec.get("ablation", ""), str) or "model" not in spec or "probe" not in spec:
                continue
            argv = ["run", "--model", spec["model"], "--probe", spec["probe"]]
            if spec.get("data"):
                argv += ["--data", spec["data"]]
            if spec.get("ablation"):
                argv += ["--ablation", spec["ablation"]]
            params = spec.get("params", {})
            flat = [(k, v) for k, v in params.items()
                    if isinstance(v, int | float | str) and not isinstance(v, bool) and "," not in str(v)
                    and v != "5"]  # as text, "5" is the number 5: a valid value
            if len(flat) < len(params):
                continue  # not expressible as --param key=value
            argv += [a for k, v in flat for a in ("--param", f"{k}={v}")]
            cases.append(argv)
        elif r < 0.85:
            cases.append(["run", "--spec-json", rng.choice([
                "[" * rng.randint(33, 5000) + "]" * 3, '{"model": ' + "9" * rng.randint(4301, 6000) + "}",
                '{"model": "tiny/SF", "probe": "longppl", "params": {"alpha": NaN}}', "{not json", "[1, 2]",
                '"a string"', "null", "", "{" + '"a":' * 50 + "1" + "}" * 50, '{"model": "tiny/SF",}',
                "x" * 70000,
            ])])
        elif r < 0.92:
            cases.append(shlex.split(rng.choice([
                "run --model tiny/SF --probe token_loss --param n_docs", "run --model tiny/SF --probe token_loss "
                "--param =5", "run --model tiny/SF", "run --probe niah", "frobnicate", "run --bogus",
                "serve --port 99999", "serve --port -1", "serve --port 0", "serve --port abc",
                "serve --port 1e3", "show ../etc", "show .hidden", "show " + "a" * 200, "show abc123",
            ])))
        else:
            cases.append(["sql", rng.choice([
                "DELETE FROM runs", "SELECT 1; SELECT 2", "SELEC 1", "SELECT * FROM read_csv('/etc/passwd')",
                "COPY runs TO '/tmp/x.csv'", "ATTACH '/tmp/x.db'", "INSTALL httpfs", "PRAGMA version",
                "SELECT nope FROM runs", "", "   ", "WITH x AS (DELETE FROM runs RETURNING *) SELECT * FROM x",
                "SET enable_external_access=true", "CREATE TABLE t AS SELECT 1",
            ])])
    return cases


def test_cli_fuzz_every_bad_input_exits_2_with_one_line(world, capsys):
    rng = random.Random(15)
    cases = cli_cases(rng, world)
    t0, done = time.monotonic(), 0
    for argv in cases:
        if time.monotonic() - t0 > BUDGET_S:
            break
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code
        out, err = capsys.readouterr()
        assert code == 2, (argv, err)
        assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, (argv, err)
        assert "Traceback" not in err and out == "", (argv, err)
        done += 1
    assert done >= 200, f"only {done} cases within {BUDGET_S} s"
    runs = stored_runs(world)
    assert all(m["status"] == "error" and m["error"] for m in runs), runs
    assert runs == []  # in fact every case was refused before anything ran


def http_cases(rng: random.Random, tmp) -> list[tuple[str, str, dict]]:
    """(method, path, httpx request kwargs)."""
    cases: list[tuple[str, str, dict]] = []
    while len(cases) < N_CASES:
        r = rng.random()
        if r < 0.6:
            cases.append(("POST", "/runs", {"json": bad_spec(rng, tmp)[0]}))
        elif r < 0.75:
            body = rng.choice([
                b"[" * rng.randint(33, 20000), b'{"model": ' + b"9" * rng.randint(4301, 6000) + b"}",
                b'{"model": "tiny/SF", "probe": "longppl", "params": {"beta": -Infinity}}', b"{not json",
                b"[1, 2]", b'"x"', b"null", b"", b"\xff\xfe\x00", b'{"model": "tiny/SF",}', b"x" * 70000,
                json.dumps({"model": "tiny/SF", "probe": "token_loss", "pad": "y" * 20000}).encode(),
            ])
            ctype = rng.choice(["application/json", "text/plain", "application/x-www-form-urlencoded"])
            cases.append(("POST", "/runs", {"content": body, "headers": {"content-type": ctype}}))
        elif r < 0.85:
            rid = rng.choice([".hidden", "-x", "_y", "a" * 129, "9" * rng.randint(130, 5000), "abc%00def",
                              "a%2F..%2Fetc", "%E2%80%AE", "x y", "a" * rng.randint(1, 100), str(10**40)])
            cases.append(("GET", f"/runs/{rid}", {}))
        elif r < 0.92:
            host = rng.choice(["evil.example", "127.0.0.1.nip.io", "localhost.evil", "", "a" * 300,
                               "[::2]", "10.0.0.1", "0.0.0.0", "localhost:abc"])
            cases.append((rng.choice(["GET", "POST"]), rng.choice(["/limits", "/runs", "/health"]),
                          {"headers": {"host": host}, "json": {"model": "tiny/SF", "probe": "niah"}}))
        else:
            cases.append(rng.choice([("DELETE", "/runs/abc", {}), ("PUT", "/runs", {}), ("PATCH", "/limits", {}),
                                     ("GET", "/nope", {}), ("GET", "/runs/", {}), ("POST", "/limits", {}),
                                     ("GET", "/runs/a/b", {})]))
    return cases


def test_http_fuzz_every_bad_request_is_a_4xx_with_one_line(world):
    client = TestClient(make_app(str(world / "store")), base_url="http://127.0.0.1")
    rng = random.Random(1515)
    t0, done, seen = time.monotonic(), 0, set()
    for method, path, kw in http_cases(rng, world):
        if time.monotonic() - t0 > BUDGET_S:
            break
        r = client.request(method, path, **kw)
        seen.add(r.status_code)
        assert 400 <= r.status_code < 500, (method, path, kw, r.status_code, r.text[:300])
        if r.headers.get("content-type", "").startswith("application/json"):
            detail = r.json()["detail"]
            assert isinstance(detail, str) and detail and "\n" not in detail, (path, kw, r.text[:300])
        else:
            assert r.text in ("Invalid host header", "Content Too Large"), (path, kw, r.text[:300])
        assert "Traceback" not in r.text
        done += 1
    assert done >= 200, f"only {done} cases within {BUDGET_S} s"
    assert {400, 404, 405, 413, 422} <= seen, seen
    assert stored_runs(world) == []
