"""Issue 11, CPU goals: what a user's runs cost on the embedded default, through the users' entry points.

    python benchmarks/bench_runs_cpu.py --out out/bench_runs_cpu.json            # ~3-5 min on 2 cores
    python benchmarks/bench_runs_cpu.py --reps 1 --out /tmp/r.json               # quicker, noisier

Model zoo/swa64 (bundled; 3.8M parameters, 8 layers, 6 windowed to 64), one 4,096-token document of
zoo:test, fp32, torch's default thread count (--threads to change it). Every ratio is against a
baseline measured in the same run; repetitions interleave the compared things, medians reported.

1. forward: ``model.model(ids)`` of the loaded zoo model vs an HF ``LlamaForCausalLM`` built from a
   config of the same shape (random init, SDPA, full causal attention in every layer). Also, as a
   diagnostic, the zoo model with the former dense-mask SDPA path for its windowed layers.
   Goal: zoo/swa64 <= 0.5x Llama.
2. fresh token_loss: ``python -m backend run --model zoo/swa64 --probe token_loss --data zoo:test
   --param n_docs=1`` in a new process (new store each time) vs (a) the same-process forward of 1.
   plus 3 s, and (b) a new process that only loads the model and runs one bare forward (the imports
   and loading any script pays). Goal: fresh run <= forward + 3 s.
3. token_loss + LongPPL: a new process doing ``Runner.run`` of token_loss and of longppl (trunc_len 1024,
   stride 512; the key_tokens dependency included) on the document, timed whole (imports included) and
   per run. Goal: <= 10 s.
The machine's load average is recorded before and after (other work on a shared machine slows
everything, and multi-threaded small ops most).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import ROOT, Bench, bench_parser, env_meta  # noqa: E402

MODEL, DATA, TOKENS = "zoo/swa64", "zoo:test", 4096
GOALS = {"forward": 0.5, "fresh_extra_s": 3.0, "longppl_s": 10.0}
LONGPPL = {"trunc_len": 1024, "stride": 512}


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("HYBRIDSCOPE_STORE", None)
    return env


def _python(code: str, timeout: float = 600) -> tuple[dict, float]:
    """Run ``code`` in a fresh interpreter; (the JSON of its last stdout line, wall seconds)."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=timeout)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"child failed (rc {p.returncode}): {p.stderr.strip()[-400:]}")
    return json.loads(p.stdout.strip().splitlines()[-1]), wall


def _cli_run(store: str, *args: str) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "backend", "run", "--model", MODEL, "--data", DATA, "--store", store, "--json", *args]
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"CLI failed (rc {p.returncode}): {p.stderr.strip()[-400:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    if out.get("cached"):
        raise RuntimeError(f"run {out['run_id']} came from a store, not computed")
    return out, wall


def document_ids(lm) -> torch.Tensor:
    from backend.datasets import resolve

    _, docs, _ = resolve(DATA, 1)
    ids = lm.codec.encode(docs[0].text, max_tokens=TOKENS).ids
    if len(ids) < TOKENS:
        raise RuntimeError(f"document 0 of {DATA} has only {len(ids)} tokens")
    return torch.tensor([ids])


def llama_like(cfg) -> torch.nn.Module:
    """HF Llama of the zoo model's shape, full causal attention everywhere (SDPA), random init."""
    from transformers import LlamaConfig, LlamaForCausalLM

    lc = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                     num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                     num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
                     max_position_embeddings=cfg.max_position_embeddings, rms_norm_eps=cfg.rms_norm_eps,
                     rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_word_embeddings)
    torch.manual_seed(0)
    return LlamaForCausalLM(lc).eval()


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def forward_section(bench: Bench, reps: int) -> float | None:
    import kernels.attention as kattn
    from backend.loading import load

    sec = "forward"
    bench.section(sec)
    lm = load(MODEL)
    ids = document_ids(lm)
    llama = llama_like(lm.model.config)
    times: dict[str, list[float]] = {"swa64": [], "llama": [], "swa64_dense": []}
    banded = kattn.attention_sdpa

    def dense(q, k, v, window=None, sinks=0, scale=None, **extra):  # the former CPU path (diagnostic row)
        _, _, lq, lk = kattn._check_qkv(q, k, v)
        if extra or kattn.effective_mask(window, sinks, None, lq, lk)[0] is None:
            return banded(q, k, v, window, sinks, scale, **extra)
        return kattn.attention_sdpa_dense(q, k, v, window, sinks, scale)

    runs = {"swa64": lambda: lm.model.model(input_ids=ids), "llama": lambda: llama.model(input_ids=ids)}
    with torch.inference_mode():
        for fn in runs.values():
            fn()  # warm-up
        for _ in range(reps):
            for name, fn in runs.items():
                times[name].append(_timed(fn))
            kattn.attention_sdpa = dense
            try:
                times["swa64_dense"].append(_timed(runs["swa64"]))
            finally:
                kattn.attention_sdpa = banded
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in times:
        bench.row(sec, name, lambda name=name: {"s": med[name], "s_all": [round(t, 3) for t in times[name]],
                                                "L": TOKENS})
    r = med["swa64"] / med["llama"]
    bench.ratio("zoo/swa64 forward / Llama forward", r, f"<= {GOALS['forward']}", r <= GOALS["forward"],
                best_of=min(times["swa64"]) / min(times["llama"]))
    bench.ratio("zoo/swa64 dense-mask forward / Llama forward (before)", med["swa64_dense"] / med["llama"], "(info)")
    bench.end_section(sec)
    return med["swa64"]


BARE = f"""
    import json, time
    t0 = time.perf_counter()
    import torch
    from backend.loading import load
    from backend.datasets import resolve
    lm = load({MODEL!r})
    _, docs, _ = resolve({DATA!r}, 1)
    ids = torch.tensor([lm.codec.encode(docs[0].text, max_tokens={TOKENS}).ids])
    t1 = time.perf_counter()
    with torch.inference_mode():
        lm.model.model(input_ids=ids)
    t2 = time.perf_counter()
    print(json.dumps({{"setup_s": t1 - t0, "forward_s": t2 - t1}}))
"""


def fresh_section(bench: Bench, reps: int, forward_s: float | None) -> None:
    sec = "fresh token_loss"
    bench.section(sec)
    runs, bares, probe_s, load_s = [], [], [], []
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as store:
            _, wall = _cli_run(store, "--probe", "token_loss", "--param", "n_docs=1",
                               "--param", f"max_tokens={TOKENS}")
        runs.append(wall)
        bare, bare_wall = _python(BARE)
        bares.append(bare_wall)
        probe_s.append(bare["forward_s"])
        load_s.append(bare["setup_s"])
    run, bare = statistics.median(runs), statistics.median(bares)
    bench.row(sec, "CLI token_loss run (fresh process)", lambda: {"s": run, "s_all": [round(t, 2) for t in runs]})
    bench.row(sec, "bare forward (fresh process: imports, load, one forward)",
              lambda: {"s": bare, "s_all": [round(t, 2) for t in bares],
                       "forward_s": statistics.median(probe_s), "setup_s": statistics.median(load_s)})
    if forward_s is not None:
        extra = run - forward_s
        bench.ratio("fresh run - same-process forward (s)", extra, f"<= {GOALS['fresh_extra_s']}",
                    extra <= GOALS["fresh_extra_s"])
    extra = run - bare
    bench.ratio("fresh run - fresh bare forward (s)", extra, f"<= {GOALS['fresh_extra_s']}",
                extra <= GOALS["fresh_extra_s"])
    bench.end_section(sec)


BOTH = f"""
    import json, tempfile, time
    t0 = time.perf_counter()
    from backend.runner import Runner
    from backend.spec import RunSpec
    with tempfile.TemporaryDirectory() as store:
        runner = Runner(store, read_only_roots=[])
        out = {{}}
        for probe, extra in (("token_loss", {{}}), ("longppl", {LONGPPL!r})):
            t = time.perf_counter()
            res = runner.run(RunSpec.build(model={MODEL!r}, probe=probe, data={DATA!r},
                                           params={{"n_docs": 1, "max_tokens": {TOKENS}, **extra}}))
            out[probe + "_s"] = time.perf_counter() - t
            assert not res.cached
        out["longppl"] = res.manifest["meta"].get("longppl")
    out["total_s"] = time.perf_counter() - t0
    print(json.dumps(out))
"""


def longppl_section(bench: Bench, reps: int) -> None:
    sec = "token_loss + longppl"
    bench.section(sec)
    rows = [_python(BOTH) for _ in range(reps)]
    walls = [w for _, w in rows]
    wall = statistics.median(walls)
    last = rows[-1][0]
    bench.row(sec, "fresh process: Runner.run token_loss, then longppl (+ key_tokens)",
              lambda: {"s": wall, "s_all": [round(t, 2) for t in walls],
                       "token_loss_s": statistics.median(r["token_loss_s"] for r, _ in rows),
                       "longppl_s": statistics.median(r["longppl_s"] for r, _ in rows),
                       "longppl": last.get("longppl"), **LONGPPL})
    bench.ratio("token_loss + longppl, fresh process (s)", wall, f"<= {GOALS['longppl_s']}",
                wall <= GOALS["longppl_s"])
    runs_only = statistics.median(r["token_loss_s"] + r["longppl_s"] for r, _ in rows)
    bench.ratio("token_loss + longppl, the two Runner.run calls (s)", runs_only, f"<= {GOALS['longppl_s']}",
                runs_only <= GOALS["longppl_s"])
    bench.end_section(sec)


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions per measurement")
    ap.add_argument("--threads", type=int, default=0, help="torch threads here and in children (0: default)")
    ap.add_argument("--sections", default="forward,fresh,longppl")
    ap.set_defaults(budget_s=1800.0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    device = torch.device("cpu")
    meta = {**env_meta(device), "script": "bench_runs_cpu", "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "loadavg_before": os.getloadavg(), "reps": args.reps}
    bench = Bench(args.out, device, meta, args.budget_s)
    print(f"bench_runs_cpu: {MODEL}, {TOKENS} tokens, {meta['threads']} threads, load {meta['loadavg_before']}",
          flush=True)
    sections = args.sections.split(",")
    forward_s = forward_section(bench, args.reps) if "forward" in sections else None
    if "fresh" in sections:
        fresh_section(bench, args.reps, forward_s)
    if "longppl" in sections:
        longppl_section(bench, args.reps)
    bench.meta["loadavg_after"] = os.getloadavg()
    bench.finish(["s", "s_all", "forward_s", "setup_s", "token_loss_s", "longppl_s", "note"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
