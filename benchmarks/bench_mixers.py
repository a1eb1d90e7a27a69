"""Issue 2 benchmark: fast mixer paths of the native hybrid vs their torch baselines, in one run.

    python benchmarks/bench_mixers.py --out out/bench_mixers.json     # CUDA (H100/H200), ~2-2.5 min
    python benchmarks/bench_mixers.py --smoke --out /tmp/m.json       # tiny, CPU, every code path

Three random-init models (150M / 169M / 153M params: 12 layers, hidden 1024, attention 16 heads /
8 KV heads of 64, vocab 8192; GDN 8 heads Dk = Dv = 128; Mamba-2 16 heads P = 64, N = 128), one
model object per section whose mixers are switched between backends (the
``backend`` attribute each mixer copies from ``config.attn_backend`` / ``config.linear_backend``),
so both paths see the same weights:

- swa: pattern "SSSF"*3, window 128. FlexAttention (``attn_backend="flex"``, also for the F layers)
  vs dense-masked SDPA (``"sdpa"``: a boolean L x L mask per SWA layer, is_causal for F layers).
  Forward time at 32K (batch 1, bf16); if SDPA fails there (OOM) both are re-timed at 16K.
- gdn / mamba2: patterns "GGGF"*3 / "MMMF"*3. fla (``linear_backend="fla"``) vs the chunked torch
  reference (``"chunked"``); F layers use SDPA (is_causal) in both. Timed at 32K, or at the largest
  of 32K/16K/8K the chunked path is predicted (from its 4K time) to run in <= 20 s; L is reported.
- equivalence, per section, at 4K tokens: rel = ||logits_fast - logits_ref|| / ||logits_ref|| in
  fp32 (TF32 off) and bf16, plus the bf16 noise floor ||ref_bf16 - ref_fp32|| / ||ref_fp32||.
  PASS: fp32 rel <= 1e-4 (attention) / 5e-3 (fla: TF32-like dots); bf16 rel <= max(2 x floor, 2e-2).

fla is imported lazily; if it does not import, fla rows say SKIP. In --smoke mode (CPU) the
"recurrent" step-by-step backend stands in for fla so that every code path runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    Bench,
    bench_parser,
    env_meta,
    free,
    measure,
    pick_device,
    random_ids,
    rel_err,
    timed_once,
)

from models.attention_mixer import HybridAttention  # noqa: E402
from models.config import HybridConfig  # noqa: E402
from models.modeling import HybridForCausalLM  # noqa: E402

# fmt: off
GPU = dict(
    dims=dict(hidden_size=1024, intermediate_size=2816, num_attention_heads=16, num_key_value_heads=8,
              head_dim=64, vocab_size=8192, sliding_window=128, chunk_size=64, max_position_embeddings=32768),
    # recurrent mixer shapes per section (GDN heads as in gpu_check_recurrent: Dk = Dv = 128)
    linear=dict(gdn=dict(linear_num_heads=8, linear_key_dim=128, linear_head_dim=128),
                mamba2=dict(linear_num_heads=16, linear_head_dim=64, mamba_state_size=128)),
    repeat=3, l_time=32768, l_fallback=16384, l_eq=4096, chunked_limit_s=20.0,
)
SMOKE = dict(
    dims=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
              head_dim=16, vocab_size=256, sliding_window=16, chunk_size=16, max_position_embeddings=1024),
    linear=dict(gdn=dict(linear_num_heads=2, linear_key_dim=16, linear_head_dim=16),
                mamba2=dict(linear_num_heads=4, linear_head_dim=8, mamba_state_size=16)),
    repeat=1, l_time=256, l_fallback=128, l_eq=128, chunked_limit_s=20.0,
)
# fmt: on
TOL_FP32 = {"swa": 1e-4, "gdn": 5e-3, "mamba2": 5e-3}
TOL_BF16 = 2e-2


def build(pattern: str, dims: dict, device: torch.device, seed: int = 0) -> HybridForCausalLM:
    """fp32 random-init model on ``device`` (built on CPU, then moved)."""
    cfg = HybridConfig.from_pattern(pattern, **dims)
    torch.manual_seed(seed)
    model = HybridForCausalLM(cfg).eval()
    return model.to(device)


def set_backend(model: HybridForCausalLM, attn: str | None = None, linear: str | None = None) -> None:
    """Switch every attention (``attn``) / recurrent (``linear``) mixer's kernel path in place."""
    for layer in model.model.layers:
        m = layer.mixer
        if isinstance(m, HybridAttention):
            if attn:
                m.backend = attn
        elif linear:
            m.backend = linear


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def fla_status(device: torch.device, smoke: bool, skip: bool) -> tuple[str | None, str]:
    """(backend name standing for "fla", note); None = skip the fla rows."""
    if skip:
        return None, "fla rows skipped (--skip-fla)"
    if device.type != "cuda":
        return ("recurrent", "smoke: 'recurrent' stands in for fla on CPU") if smoke else (None, "no CUDA")
    try:
        import fla  # noqa: F401
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule  # noqa: F401
        from fla.ops.simple_gla import chunk_simple_gla  # noqa: F401
    except Exception as err:  # missing wheel / triton mismatch
        return None, f"fla import failed: {type(err).__name__}: {err}"[:200]
    return "fla", f"fla {getattr(fla, '__version__', '?')}"


def logits(model: HybridForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits.float()


def equivalence(bench: Bench, sec: str, model, ids, fast: dict, ref: dict, fast_name: str) -> dict:
    """fp32 and bf16 logits of the fast vs the reference backend (model is fp32 on entry, bf16 on exit).

    Returns {"ref_bf16_s": seconds of one warm bf16 reference forward} (to pick the timing L)."""
    store: dict = {}
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    def fp32() -> dict:
        set_backend(model, **ref)
        store["ref32"] = logits(model, ids).cpu()
        set_backend(model, **fast)
        try:
            a = logits(model, ids).cpu()
        except AssertionError as err:  # older fla refuses float32 inputs outright
            if "float32" in str(err) or "fp32" in str(err):
                return {"status": "SKIP", "note": f"fast path refuses fp32: {err}"[:200]}
            raise
        r = rel_err(a, store["ref32"])
        return {"rel": r, "tol": TOL_FP32[sec], "verdict": "PASS" if r <= TOL_FP32[sec] else "FAIL"}

    bench.row(sec, f"equiv fp32 {fast_name} vs ref", fp32, L=ids.shape[1], dtype="fp32")
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    model.to(torch.bfloat16)
    free(bench.device)

    def bf16() -> dict:
        set_backend(model, **ref)
        logits(model, ids)  # warm
        b, store["ref_s"] = timed_once(lambda: logits(model, ids), bench.device)
        b = b.cpu()
        set_backend(model, **fast)
        a = logits(model, ids).cpu()
        r = rel_err(a, b)
        floor = rel_err(b, store["ref32"]) if "ref32" in store else None
        tol = max(2 * floor, TOL_BF16) if floor is not None else TOL_BF16
        return {"rel": r, "bf16_floor": floor, "tol": tol, "verdict": "PASS" if r <= tol else "FAIL"}

    bench.row(sec, f"equiv bf16 {fast_name} vs ref", bf16, L=ids.shape[1], dtype="bf16")
    return {"ref_bf16_s": store.get("ref_s")}


def forward_row(bench: Bench, sec: str, name: str, model, backend: dict, length: int, vocab: int) -> dict:
    ids = random_ids(vocab, length, bench.device, seed=length)

    def run() -> dict:
        set_backend(model, **backend)

        def fwd():
            with torch.inference_mode():
                return model(input_ids=ids).logits

        m = measure(fwd, bench.device, warmup=1)
        return {k: v for k, v in m.items() if k != "result"}

    return bench.row(sec, name, run, L=length, dtype="bf16")


def speedup(bench: Bench, name: str, fast: dict, slow: dict, goal: str = "") -> None:
    if fast.get("status") == "ok" and slow.get("status") == "ok":
        bench.ratio(name, slow["ms"] / fast["ms"], goal or "(baseline ms / fast ms)", None, L=fast["L"])
    else:
        bench.ratio(
            name,
            None,
            f"not computable: fast {fast.get('status')}, baseline {slow.get('status')}",
            None,
            L=fast.get("L"),
        )


def section_swa(bench: Bench, S: dict) -> None:
    sec = "swa"
    bench.section(sec)
    model = build("SSSF" * S["repeat"], S["dims"], bench.device)
    bench.meta[f"{sec}_params"] = n_params(model)
    print(f"swa hybrid: {n_params(model) / 1e6:.1f}M params", flush=True)
    vocab = S["dims"]["vocab_size"]
    ids = random_ids(vocab, S["l_eq"], bench.device, seed=1)
    equivalence(bench, sec, model, ids, {"attn": "flex"}, {"attn": "sdpa"}, "flex")
    flex = forward_row(bench, sec, "fwd flex", model, {"attn": "flex"}, S["l_time"], vocab)
    sdpa = forward_row(bench, sec, "fwd sdpa(dense mask)", model, {"attn": "sdpa"}, S["l_time"], vocab)
    if sdpa.get("status") != "ok":
        print(
            f"dense SDPA failed at {S['l_time']} ({sdpa.get('status')}); retiming both at {S['l_fallback']}"
        )
        flex_fb = forward_row(bench, sec, "fwd flex", model, {"attn": "flex"}, S["l_fallback"], vocab)
        sdpa_fb = forward_row(
            bench, sec, "fwd sdpa(dense mask)", model, {"attn": "sdpa"}, S["l_fallback"], vocab
        )
        speedup(bench, f"swa flex speed-up vs dense SDPA @{S['l_fallback']}", flex_fb, sdpa_fb)
    speedup(bench, f"swa flex speed-up vs dense SDPA @{S['l_time']}", flex, sdpa)
    del model
    free(bench.device)
    bench.end_section(sec)


def section_linear(
    bench: Bench, S: dict, sec: str, letter: str, fast_backend: str | None, fast_note: str
) -> None:
    bench.section(sec)
    model = build(f"{letter * 3}F" * S["repeat"], {**S["dims"], **S["linear"][sec]}, bench.device)
    bench.meta[f"{sec}_params"] = n_params(model)
    print(f"{sec} hybrid: {n_params(model) / 1e6:.1f}M params; fast path: {fast_note}", flush=True)
    vocab = S["dims"]["vocab_size"]
    fast, ref = {"linear": fast_backend}, {"linear": "chunked"}
    ids = random_ids(vocab, S["l_eq"], bench.device, seed=2)
    if fast_backend is None:
        bench.row(sec, "equiv fla vs chunked", lambda: {"status": "SKIP", "note": fast_note}, L=S["l_eq"])
        model.to(torch.bfloat16)
        timing = {}
    else:
        timing = equivalence(bench, sec, model, ids, fast, ref, fast_backend)
    # pick L: the chunked path must fit in ~chunked_limit_s per forward (linear in L)
    length, t_eq = S["l_time"], timing.get("ref_bf16_s")
    if t_eq:
        fits = [
            n
            for n in (S["l_time"], S["l_time"] // 2, S["l_time"] // 4)
            if t_eq * n / S["l_eq"] <= S["chunked_limit_s"]
        ]
        length = fits[0] if fits else S["l_time"] // 4
        print(f"chunked bf16 forward {t_eq:.2f}s at {S['l_eq']}: timing at L={length}", flush=True)
    bench.meta[f"{sec}_L"] = length
    chunked = forward_row(bench, sec, "fwd chunked(torch)", model, ref, length, vocab)
    if fast_backend is None:
        bench.row(sec, "fwd fla", lambda: {"status": "SKIP", "note": fast_note}, L=length)
    else:
        f = forward_row(bench, sec, f"fwd {fast_backend}", model, fast, length, vocab)
        speedup(bench, f"{sec} {fast_backend} speed-up vs chunked @{length}", f, chunked)
    del model
    free(bench.device)
    bench.end_section(sec)


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--sections", default="swa,gdn,mamba2", help="comma list of swa,gdn,mamba2")
    ap.add_argument("--skip-fla", action="store_true", help="do not run the fla rows (they say SKIP)")
    ap.add_argument(
        "--chunked-limit-s",
        type=float,
        default=None,
        help="max predicted seconds of one chunked forward when picking L (default 20)",
    )
    args = ap.parse_args(argv)
    device = pick_device(args.smoke)
    if device is None:
        return 2
    S = SMOKE if args.smoke else GPU
    if args.chunked_limit_s is not None:
        S = {**S, "chunked_limit_s": args.chunked_limit_s}
    meta = {**env_meta(device), "script": "bench_mixers", "smoke": args.smoke, "sizes": S}
    fast_backend, fast_note = fla_status(device, args.smoke, args.skip_fla)
    meta["fla"] = fast_note
    bench = Bench(args.out, device, meta, args.budget_s)
    print(f"bench_mixers on {meta.get('gpu', device)} torch {torch.__version__}; {fast_note}", flush=True)
    sections = args.sections.split(",")
    if "swa" in sections:
        section_swa(bench, S)
    if "gdn" in sections:
        section_linear(bench, S, "gdn", "G", fast_backend, fast_note)
    if "mamba2" in sections:
        section_linear(bench, S, "mamba2", "M", fast_backend, fast_note)
    bench.finish(["L", "dtype", "ms", "peak_gib", "first_call_s", "rel", "bf16_floor", "verdict", "note"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
