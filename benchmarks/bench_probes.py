"""Issue 3 benchmark: long-context probes against plain forwards of the same ~0.4B model, in one run.

    python benchmarks/bench_probes.py --out out/bench_probes.json     # CUDA (H100/H200), ~1.5 min
    python benchmarks/bench_probes.py --smoke --out /tmp/p.json       # tiny, CPU, every code path

Model: random-init native "F"*16 (full attention everywhere, so eager attention matrices are a
meaningful comparison), hidden 1024, 16 heads x 64 (MHA), SwiGLU 5632, vocab 32000, untied head:
~0.41B parameters (printed). attn_backend "sdpa" (is_causal: flash). bf16 on GPU. Random token ids.

Per length L in 4K/8K/32K/128K:
- fwd:      plain forward ``model.model(input_ids)`` (hidden states, no LM head) - the baseline.
- rows:     retrieval-head map via ``backend.attention_probe.row_probs`` (8 answer rows = the last 8
            query positions; reduce = attention mass on 16 needle positions at depth 0.5, averaged
            over the rows, moved to the host per layer, exactly like backend/probes/retrieval_heads).
            Goal vs fwd: peak memory <= 1.25x, time <= 1.5x.
- eager:    output_attentions-style: every layer's full softmax(QK^T) [H, L, L] materialised in
            float32 (kernels.attention.attention_probs_reference), kept in bf16 for all layers until
            the forward ends (as HF eager output_attentions returns them), then reduced the same way.
            The layer outputs still come from SDPA, so this is a lower bound on eager's cost. Only
            L <= 8K (16 x 16 x L^2 x 2 bytes = 32 GiB at 8K, 128 GiB at 16K). Also reports
            max |mass_rows - mass_eager| (a GPU correctness check of the row probe).
- bare:     ``model(input_ids).logits`` (full-vocab logits) vs token_nll: ``backend.forward.token_nll``.
            Goal: token_nll tokens/s >= 0.8x bare.
LongPPL (32K document, trunc_len 4096, stride 1024; see ``longppl_section``): naive = key tokens by
slices (full-logit long pass + ``short_logprobs_naive``, one forward per window) + a full-logit pass
of the evaluated model; fast cold = token_nll + batched ``short_logprobs`` + token_nll; fast warm =
token_nll with cached key tokens. Goal: >= 3x faster, identical key tokens (alpha 2, beta -2); also
max |d logp_short|, |d logp_long|, and key-set differences at a stress threshold (alpha 0,
beta -inf: with a random-init model LSD ~ 0, so the official key set is empty).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import GIB, Bench, bench_parser, env_meta, free, measure, pick_device, random_ids  # noqa: E402

from backend.attention_probe import row_probs  # noqa: E402
from backend.forward import token_nll  # noqa: E402
from backend.probes.longppl_math import (  # noqa: E402
    key_mask,
    longppl_value,
    short_logprobs,
    short_logprobs_naive,
)
from kernels.attention import attention_probs_reference  # noqa: E402
from models.adapters import adapter_for  # noqa: E402
from models.config import HybridConfig  # noqa: E402
from models.modeling import HybridForCausalLM  # noqa: E402

# fmt: off
GPU = dict(
    layers=16,
    dims=dict(hidden_size=1024, intermediate_size=5632, num_attention_heads=16, num_key_value_heads=16,
              head_dim=64, vocab_size=32000, tie_word_embeddings=False, max_position_embeddings=131072),
    lengths=(4096, 8192, 32768, 131072), eager_max=8192, n_rows=8, n_needle=16,
    longppl=dict(length=32768, trunc_len=4096, stride=1024, batch=8),
)
SMOKE = dict(
    layers=4,
    dims=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=4,
              head_dim=16, vocab_size=256, tie_word_embeddings=False, max_position_embeddings=2048),
    lengths=(128, 256), eager_max=256, n_rows=4, n_needle=4,
    longppl=dict(length=330, trunc_len=64, stride=16, batch=4),
)
# fmt: on
GOALS = {"mem": 1.25, "time": 1.5, "nll": 0.8, "longppl": 3.0}


def build(S: dict, device: torch.device, dtype: torch.dtype) -> HybridForCausalLM:
    cfg = HybridConfig.from_pattern("F" * S["layers"], attn_backend="sdpa", **S["dims"])
    torch.manual_seed(0)
    return HybridForCausalLM(cfg).eval().to(device=device, dtype=dtype)


def mass_reduce(need: torch.Tensor):
    """retrieval_heads' "mass" reduce: attention on the needle keys, mean over rows, per head (host)."""

    def reduce(layer: int, probs: torch.Tensor) -> torch.Tensor:  # probs [H, nq, L]; stays on device
        return probs[:, :, need].sum(-1).mean(-1)

    return reduce


@torch.inference_mode()
def eager_map(model, ids: torch.Tensor, qpos: torch.Tensor, need: torch.Tensor) -> dict[int, np.ndarray]:
    """output_attentions-style: all layers' full probability matrices kept (bf16), then reduced."""
    adapter = adapter_for(model)
    plans = adapter.current_plans()
    mats: dict[int, torch.Tensor] = {}
    pending: dict[int, dict[str, torch.Tensor]] = {}

    def on_record(layer: int, name: str, t: torch.Tensor) -> None:
        slot = pending.setdefault(layer, {})
        slot[name] = t
        if "q" in slot and "k" in slot:
            q, k = slot["q"], slot["k"]
            del pending[layer]
            plan = plans[layer]
            probs = attention_probs_reference(
                q, k, plan.window, plan.sinks if plan.window else 0, adapter.attention_scale(layer)
            )
            mats[layer] = probs[0].to(q.dtype)  # [H, L, L], like HF eager attn_weights
            del probs

    with adapter.capture(names=("q", "k"), on_record=on_record):
        adapter.decoder()(input_ids=ids)
    return {layer: m[:, qpos][:, :, need].float().sum(-1).mean(-1).cpu().numpy() for layer, m in mats.items()}


def strip(m: dict) -> dict:
    return {k: v for k, v in m.items() if k != "result"}


def lengths_section(bench: Bench, model, S: dict, length: int) -> None:
    dev, vocab = bench.device, S["dims"]["vocab_size"]
    sec = f"L={length}"
    bench.section(sec)
    ids = random_ids(vocab, length, dev, seed=length)
    qpos_list = list(range(length - 1 - S["n_rows"], length - 1))
    qpos = torch.tensor(qpos_list, device=dev)
    need = torch.arange(length // 2, length // 2 + S["n_needle"], device=dev)
    reduce = mass_reduce(need)
    info = dict(L=length)

    def fwd() -> dict:
        with torch.inference_mode():
            return strip(measure(lambda: model.model(input_ids=ids).last_hidden_state, dev))

    base = bench.row(sec, "fwd (plain sdpa)", fwd, **info)
    store: dict = {}

    def rows() -> dict:
        m = measure(lambda: row_probs(model, ids, qpos_list, reduce=reduce), dev)
        store["rows"] = {k: v.cpu().numpy() for k, v in m["result"].items()}
        return strip(m)

    rrow = bench.row(sec, "rows (row_probs)", rows, **info)
    _ratios(bench, f"rows/fwd @{length}", rrow, base, time_goal=GOALS["time"], mem_goal=GOALS["mem"])

    if length <= S["eager_max"]:

        def eager() -> dict:
            m = measure(lambda: eager_map(model, ids, qpos, need), dev, min_reps=2, target_s=1.0)
            out = strip(m)
            if "rows" in store:
                out["max_abs_vs_rows"] = max(
                    float(np.abs(store["rows"][k] - m["result"][k]).max()) for k in m["result"]
                )
            return out

        erow = bench.row(sec, "eager (all L x L probs)", eager, **info)
        _ratios(bench, f"eager/fwd @{length}", erow, base)
        if rrow.get("status") == "ok" and erow.get("status") == "ok":
            bench.ratio(
                f"eager/rows time @{length}", erow["ms"] / rrow["ms"], "(rows speed-up over eager)", None
            )
    else:
        gib = S["layers"] * S["dims"]["num_attention_heads"] * length**2 * 2 / GIB
        skip = {"status": "SKIP", "note": f"does not fit: layers x heads x L^2 x 2 B = {gib:.0f} GiB"}
        bench.row(sec, "eager (all L x L probs)", lambda: skip, **info)

    def bare() -> dict:
        with torch.inference_mode():
            m = strip(measure(lambda: model(input_ids=ids).logits, dev))
        m["tok_s"] = length / (m["ms"] / 1e3)
        return m

    def nll() -> dict:
        m = strip(measure(lambda: token_nll(model, ids), dev))
        m["tok_s"] = length / (m["ms"] / 1e3)
        return m

    brow = bench.row(sec, "bare fwd+logits", bare, **info)
    nrow = bench.row(sec, "token_nll", nll, **info)
    if brow.get("status") == "ok" and nrow.get("status") == "ok":
        v = nrow["tok_s"] / brow["tok_s"]
        bench.ratio(f"token_nll/bare tok/s @{length}", v, f">= {GOALS['nll']}", v >= GOALS["nll"])
        mem = nrow.get("peak_gib", 0) / brow["peak_gib"] if brow.get("peak_gib") else None
        bench.ratio(f"token_nll/bare mem @{length}", mem, "(peak memory, info)", None)
    else:
        why = f"not computable ({brow.get('status')}, {nrow.get('status')})"
        bench.ratio(f"token_nll/bare tok/s @{length}", None, why, None)
    bench.end_section(sec)


def _ratios(bench: Bench, name: str, row: dict, base: dict, time_goal=None, mem_goal=None) -> None:
    if row.get("status") != "ok" or base.get("status") != "ok":
        bench.ratio(f"{name} time", None, f"not computable ({row.get('status')}, {base.get('status')})", None)
        return
    t = row["ms"] / base["ms"]
    bench.ratio(f"{name} time", t, f"<= {time_goal}" if time_goal else "(info)",
                (t <= time_goal) if time_goal else None)
    if base.get("peak_gib"):
        m = row["peak_gib"] / base["peak_gib"]
        act = (row["peak_gib"] - row["base_gib"]) / max(base["peak_gib"] - base["base_gib"], 1e-9)
        bench.ratio(f"{name} peak mem", m, f"<= {mem_goal}" if mem_goal else "(info)",
                    (m <= mem_goal) if mem_goal else None, activation_ratio=act)


@torch.inference_mode()
def long_logp_naive(model, ids: torch.Tensor) -> np.ndarray:
    """Straightforward long pass: full-vocab logits, log_softmax, gather. Index t-1 = target t."""
    lp = F.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return lp[:-1].gather(-1, ids[0, 1:, None])[:, 0].cpu().numpy().astype(np.float64)


def longppl_section(bench: Bench, model, S: dict) -> None:
    """LongPPL of one document, evaluator = evaluated model (as for the unablated model).

    naive = Fang et al.'s compute_longppl shape: key tokens by slices (full-logit long pass + one
    forward per window) and a full-logit pass of the evaluated model. fast cold = our key_tokens
    run (token_nll + batched short_logprobs) + our longppl run (token_nll). fast warm = the longppl
    run alone, key tokens read from the cache (every further ablation of the model pays only this).
    """
    p, dev = S["longppl"], bench.device
    sec = "longppl"
    bench.section(sec)
    ids = random_ids(S["dims"]["vocab_size"], p["length"], dev, seed=7)
    info = dict(L=p["length"], trunc_len=p["trunc_len"], stride=p["stride"])
    store: dict = {}

    def nll_fast() -> np.ndarray:
        return token_nll(model, ids)[0].cpu().numpy().astype(np.float64)

    def keys_fast():
        long = -nll_fast()
        short = short_logprobs(model, ids, p["trunc_len"], p["stride"], batch=p["batch"])
        return long, short, key_mask(long, short, 2.0, -2.0)

    def keys_naive():
        long = long_logp_naive(model, ids)
        short = short_logprobs_naive(model, ids, p["trunc_len"], p["stride"])
        return long, short, key_mask(long, short, 2.0, -2.0)

    def naive():
        keys = keys_naive()
        return keys, longppl_value(-long_logp_naive(model, ids), keys[2])

    def fast_cold():
        keys = keys_fast()
        return keys, longppl_value(nll_fast(), keys[2])

    def fast_warm():
        return None, longppl_value(nll_fast(), store["fast"][0][2])

    def run(fn, key):
        def inner() -> dict:
            m = measure(fn, dev, min_reps=2, target_s=2.0)
            store[key] = m["result"]
            return {**strip(m), "longppl": m["result"][1]}

        return inner

    nrow = bench.row(sec, "naive (slices + full logits)", run(naive, "naive"), **info)
    crow = bench.row(sec, "fast cold (key_tokens + longppl runs)", run(fast_cold, "fast"), **info)
    if "fast" in store:
        wrow = bench.row(sec, "fast warm (cached key tokens)", run(fast_warm, "warm"), **info)
    else:
        skip = {"status": "SKIP", "note": "needs the cold run's key tokens"}
        wrow = bench.row(sec, "fast warm (cached key tokens)", lambda: skip, **info)
    for label, row in (("cold", crow), ("warm", wrow)):
        if row.get("status") == "ok" and nrow.get("status") == "ok":
            v = nrow["ms"] / row["ms"]
            bench.ratio(
                f"longppl naive/fast {label} time", v, f">= {GOALS['longppl']}", v >= GOALS["longppl"]
            )
        else:
            bench.ratio(f"longppl naive/fast {label} time", None, "not computable", None)
    if "fast" in store and "naive" in store:
        (lf, sf, kf), (ln, sn, kn) = store["fast"][0], store["naive"][0]
        both = ~np.isnan(sf) & ~np.isnan(sn)
        same_cover = bool(np.array_equal(np.isnan(sf), np.isnan(sn)))
        d_short = float(np.abs(sf[both] - sn[both]).max()) if both.any() else 0.0
        d_long = float(np.abs(lf - ln).max())
        diff = int((kf != kn).sum())
        stress_f, stress_n = key_mask(lf, sf, 0.0, -np.inf), key_mask(ln, sn, 0.0, -np.inf)
        lsd = np.nan_to_num(ln - sn, nan=np.inf)
        near = int((np.abs(lsd - 2.0) <= d_short + d_long).sum())
        deltas = dict(max_abs_d_logp_short=d_short, max_abs_d_logp_long=d_long, n_scored=int(both.sum()),
                      same_scored_targets=same_cover)
        bench.meta["longppl_deltas"] = deltas
        bench.ratio("longppl key-token differences (alpha 2, beta -2)", diff, "== 0",
                    diff == 0 and same_cover, n_key_fast=int(kf.sum()), n_key_naive=int(kn.sum()),
                    n_within_noise_of_alpha=near, **deltas)
        bench.ratio("longppl key-token differences (stress: alpha 0, beta -inf)",
                    int((stress_f != stress_n).sum()), "(info: LSD ~ 0 in a random model)", None,
                    n_key_fast=int(stress_f.sum()), n_key_naive=int(stress_n.sum()))
        print(f"max |d logp_short| = {d_short:.3e}, max |d logp_long| = {d_long:.3e}, "
              f"scored targets {int(both.sum())}, key diffs {diff}", flush=True)
    bench.end_section(sec)


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--lengths", default=None, help="comma list overriding the default lengths")
    ap.add_argument("--no-longppl", action="store_true", help="skip the LongPPL section")
    args = ap.parse_args(argv)
    device = pick_device(args.smoke)
    if device is None:
        return 2
    dtype, S = (torch.float32, SMOKE) if args.smoke else (torch.bfloat16, GPU)
    lengths = [int(x) for x in args.lengths.split(",")] if args.lengths else list(S["lengths"])
    meta = {**env_meta(device), "script": "bench_probes", "smoke": args.smoke, "sizes": S,
            "dtype": str(dtype), "lengths": lengths}
    bench = Bench(args.out, device, meta, args.budget_s)
    bench.section("build")
    model = build(S, device, dtype)
    n = sum(p.numel() for p in model.parameters())
    bench.meta["params"] = n
    print(
        f"bench_probes on {meta.get('gpu', device)} torch {torch.__version__}: model {n / 1e9:.3f}B params "
        f"({S['layers']} full-attention layers), {dtype}",
        flush=True,
    )
    bench.end_section("build")
    for length in lengths:
        lengths_section(bench, model, S, length)
        free(device)
    if not args.no_longppl:
        longppl_section(bench, model, S)
    bench.finish(["L", "ms", "peak_gib", "tok_s", "first_call_s", "max_abs_vs_rows", "longppl", "note"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
