"""Issue 5 benchmark: training tokens/s of one zoo variant vs an HF Llama of the same size, in one run.

    python benchmarks/bench_train.py --out out/bench_train.json            # CUDA (H100/H200), ~1-2 min
    python benchmarks/bench_train.py --smoke --out /tmp/t.json             # tiny, CPU, every code path

Models (random init, fp32 weights, never downloaded):

- native: ``HybridForCausalLM(variant_config(VARIANT))`` (default ``swa64``: pattern SSSFSSSF, window 64,
  hidden 192, 8 layers, 6 query / 2 KV heads of 32, intermediate 320, vocab 8192, tied embeddings),
  mixer backends "auto" as the zoo trainer sets them (FlexAttention / fla on CUDA). If its row fails
  (compile / kernel error, OOM) it is re-run once with ``attn_backend="sdpa"`` (dense mask), like the
  trainer's first fallback, and the ratio uses the row that ran.
- llama: ``LlamaForCausalLM(LlamaConfig(...))`` with the same vocab, hidden, layers, heads / KV heads,
  head_dim, intermediate size, RMSNorm eps, RoPE theta and tied embeddings; full causal attention in
  every layer through ``attn_implementation="sdpa"``. It has no q/k RMSNorm, so it is smaller than
  the native model by 2 x head_dim weights per attention layer (printed; a few hundred parameters).

Each model trains ``--warmup`` untimed steps (the first compiles the FlexAttention kernels) and then
``--steps`` timed steps on random token batches (``--batch`` x ``--context``, default 16 x 4096 = the
zoo's batch) with exactly the zoo trainer's step: ``Trainer.train_step`` of zoo/train.py (LR
warmup + cosine, bf16 autocast on CUDA, grad clipping, AdamW) on an AdamW built as the trainer builds
it (decay / no-decay groups, betas (0.9, 0.95), eps 1e-8, fused on CUDA; TrainArgs defaults), and the
trainer's TF32 settings. Each step is timed with CUDA events and a synchronisation
(``benchlib.measure``); tokens/s = batch x context / median step time. Peak memory: CUDA
``max_memory_allocated`` over the timed steps (weights, AdamW state and activations). The last row
is the ratio native / llama of tokens/s (> 1: the hybrid trains faster).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import Bench, bench_parser, env_meta, measure, pick_device, random_ids  # noqa: E402

from models.config import HybridConfig  # noqa: E402
from zoo.train import TrainArgs, Trainer, make_optimizer, set_backends  # noqa: E402
from zoo.train_all import setup_torch  # noqa: E402
from zoo.variants import NAMES, context_of, variant_config  # noqa: E402

GPU = dict(size="zoo", batch=16, context=context_of("zoo"), warmup=5, steps=20)
SMOKE = dict(size="smoke", batch=2, context=128, warmup=1, steps=2)
N_BATCHES = 4  # distinct random batches, cycled


class RandomBatches:
    """Stands in for the trainer's ``BatchStream``: ``next()`` -> (input_ids, labels) int64 CPU tensors
    [batch, context], cycling over ``n`` seeded random batches (labels = input_ids; shifted in the model)."""

    def __init__(self, vocab: int, batch: int, context: int, n: int = N_BATCHES, seed: int = 0) -> None:
        cpu = torch.device("cpu")
        self.rows = [random_ids(vocab, context, cpu, seed + i, batch=batch) for i in range(n)]
        self.i = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.rows[self.i % len(self.rows)]
        self.i += 1
        return x, x


class StepHost:
    """The state ``Trainer.train_step`` reads and updates (args, step, total_steps, opt, batches,
    device, model, forward, tokens), without the trainer's corpus, checkpoints and logs: the benchmark
    runs the zoo trainer's own step function, not a copy of it."""

    train_step = Trainer.train_step

    def __init__(self, model: torch.nn.Module, args: TrainArgs, batches: RandomBatches, device: torch.device) -> None:
        self.args, self.batches, self.device = args, batches, device
        self.model = model.to(device).train()
        self.forward = torch.compile(self.model) if args.compile else self.model
        self.opt = make_optimizer(self.model, args, device)
        self.step, self.tokens = 0, 0
        self.total_steps = args.steps


def llama_config(cfg: HybridConfig):
    """An HF ``LlamaConfig`` of the same size as the native ``cfg`` (SDPA attention, full everywhere)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
        hidden_act="silu",
        max_position_embeddings=cfg.max_position_embeddings,
        initializer_range=cfg.initializer_range,
        rms_norm_eps=cfg.rms_norm_eps,
        tie_word_embeddings=cfg.tie_word_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
        attention_bias=False,
        mlp_bias=False,
        use_cache=False,
        pad_token_id=cfg.pad_token_id,
        eos_token_id=cfg.eos_token_id,
        bos_token_id=None,
        attn_implementation="sdpa",
    )


def build_native(cfg: HybridConfig, attn_backend: str, seed: int, linear_backend: str = "auto") -> torch.nn.Module:
    from models.modeling import HybridForCausalLM

    torch.manual_seed(seed)
    model = HybridForCausalLM(cfg)
    set_backends(model, attn_backend, linear_backend)
    return model


def build_llama(cfg: HybridConfig, seed: int) -> torch.nn.Module:
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(cfg))
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"llama: attn_implementation is {model.config._attn_implementation!r}, not 'sdpa'")
    return model


def n_params(model: torch.nn.Module) -> int:
    """Parameters, tied embeddings counted once."""
    return sum(p.numel() for p in model.parameters())


def train_row(build, args: TrainArgs, vocab: int, context: int, warmup: int, steps: int, device: torch.device) -> dict:
    """``warmup`` + ``steps`` trainer steps of ``build()``; median tokens/s, peak memory, losses."""
    model = build()
    host = StepHost(model, args, RandomBatches(vocab, args.batch_size, context), device)
    m = measure(host.train_step, device, warmup=warmup, min_reps=steps, max_reps=steps, target_s=1e9)
    loss, grad_norm = (float(t) for t in m.pop("result"))
    if not math.isfinite(loss):
        raise FloatingPointError(f"loss is {loss} after {host.step} steps")
    tokens = args.batch_size * context
    m.update(
        params=n_params(model),
        tok_s=tokens / (m["ms"] / 1e3),
        tok_s_mean=tokens * len(m["ms_all"]) / (sum(m["ms_all"]) / 1e3),
        steps_run=host.step,
        last_loss=round(loss, 4),
        grad_norm=round(grad_norm, 4),
    )
    return m


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--variant", default="swa64", choices=NAMES, help="zoo variant (default swa64)")
    ap.add_argument("--batch", type=int, default=None, help="rows per step (default 16; smoke 2)")
    ap.add_argument("--context", type=int, default=None, help="tokens per row (default 4096; smoke 128)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5; smoke 1)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20; smoke 2)")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models (as train --compile)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--linear-backend", default="auto", choices=("auto", "chunked", "fla"),
        help="Mamba-2 / GDN kernels of the native model (default auto: fla on CUDA when installed)",
    )  # fmt: skip
    ap.add_argument("--native-only", action="store_true", help="skip the HF Llama row (no ratio)")
    args = ap.parse_args(argv)
    device = pick_device(args.smoke)
    if device is None:
        return 2
    S = dict(SMOKE if args.smoke else GPU)
    for key in ("batch", "context", "warmup", "steps"):
        if getattr(args, key) is not None:
            S[key] = getattr(args, key)
    if S["batch"] < 1 or S["context"] < 2 or S["warmup"] < 1 or S["steps"] < 1:
        raise SystemExit(f"batch/context/warmup/steps: must be >= 1/2/1/1, got {S}")
    setup_torch(device)
    cfg = variant_config(args.variant, S["size"])
    if S["context"] > cfg.max_position_embeddings:
        raise SystemExit(f"context: at most max_position_embeddings={cfg.max_position_embeddings}, got {S}")
    targs = TrainArgs(
        variant=args.variant, size=S["size"], batch_size=S["batch"], steps=S["warmup"] + S["steps"],
        compile=args.compile, seed=args.seed,
    )  # fmt: skip
    native_n = n_params(build_native(cfg, "auto", args.seed))
    llama_n = n_params(build_llama(cfg, args.seed))
    dims = {k: getattr(cfg, k) for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                         "num_key_value_heads", "head_dim", "intermediate_size",
                                         "tie_word_embeddings", "sliding_window", "layer_types")}  # fmt: skip
    meta = {
        **env_meta(device),
        "script": "bench_train",
        "smoke": args.smoke,
        "variant": args.variant,
        "sizes": S,
        "compile": args.compile,
        "linear_backend": args.linear_backend,
        "config": dims,
        "params": {"native": native_n, "llama": llama_n, "native_minus_llama": native_n - llama_n},
        "optimizer": {k: getattr(targs, k) for k in ("lr", "weight_decay", "beta1", "beta2", "grad_clip")},
    }
    bench = Bench(args.out, device, meta, args.budget_s)
    print(
        f"bench_train on {meta.get('gpu', device)} torch {torch.__version__}: {args.variant} "
        f"({native_n:,} params) vs HF Llama ({llama_n:,} params; native - llama = {native_n - llama_n:,}); "
        f"batch {S['batch']} x {S['context']} tokens, {S['warmup']} warm-up + {S['steps']} timed steps",
        flush=True,
    )
    run = dict(vocab=cfg.vocab_size, context=S["context"], warmup=S["warmup"], steps=S["steps"], device=device)
    bench.section("train")
    native = None
    lin = args.linear_backend
    for attn in ("auto", "sdpa"):
        name = f"native:{args.variant}" + ("" if attn == "auto" else f"[attn={attn}]")
        rec = bench.row(
            "train", name, lambda a=attn: train_row(lambda: build_native(cfg, a, args.seed, lin), targs, **run),
            attn_backend=attn, linear_backend=lin,
        )  # fmt: skip
        if rec.get("status") == "ok":
            native = rec
            break
    if args.native_only:
        bench.end_section("train")
    else:
        llama = bench.row(
            "train", "llama[sdpa]", lambda: train_row(lambda: build_llama(cfg, args.seed), targs, **run),
            attn_backend="sdpa",
        )  # fmt: skip
        bench.end_section("train")
        ok = native is not None and llama.get("status") == "ok"
        bench.ratio(
            "tok_s native/llama",
            native["tok_s"] / llama["tok_s"] if ok else None,
            goal="(> 1: the hybrid trains faster)",
            native_row=native["name"] if native else None,
            peak_gib_native=native.get("peak_gib") if native else None,
            peak_gib_llama=llama.get("peak_gib"),
        )
    bench.finish(["params", "tok_s", "tok_s_mean", "ms", "peak_gib", "first_call_s", "last_loss", "note"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
