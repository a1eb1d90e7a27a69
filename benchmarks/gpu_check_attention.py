"""Check the fast attention paths against the naive reference on a CUDA device.

    python benchmarks/gpu_check_attention.py              # on a CUDA machine
    python benchmarks/gpu_check_attention.py --cpu-smoke  # tiny CPU run of the same code, no flex

For random fp32 and bf16 inputs over several lengths (incl. 4096), windows 64/128/None, sinks 0/4
and GQA, compares ``attention_flex`` and ``attention_sdpa`` with ``attention_reference`` (the
reference sees the same inputs upcast to fp32 and returns fp32), and ``attention_probs_rows``
with rows of ``attention_probs_reference``. Prints max abs error and the relative error
||out - ref|| / ||ref|| per case with PASS/FAIL (fp32: rel <= 1e-4; bf16: rel <= 1e-2; rows are
computed in fp32 either way: rel <= 1e-4). The HF families' features (chunked attention, logit
softcapping, learned per-head sink logits; alone and with windows / sinks) are checked the same way,
for attention and rows (``check_features``). Exits 1 if any case fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.attention import (  # noqa: E402
    attention,
    attention_flex,
    attention_probs_reference,
    attention_reference,
    attention_sdpa,
)
from kernels.attention_rows import attention_probs_rows  # noqa: E402

TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2}
DTYPE_NAME = {torch.float32: "fp32", torch.bfloat16: "bf16"}


def _errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    diff = out.double() - ref.double()
    return diff.abs().max().item(), (diff.norm() / ref.double().norm()).item()


def _inputs(b: int, hq: int, hkv: int, length: int, d: int, dtype: torch.dtype, device: str, seed: int):
    g = torch.Generator(device=device).manual_seed(seed)
    shapes = ((b, hq, length, d), (b, hkv, length, d), (b, hkv, length, d))
    return [torch.randn(s, generator=g, device=device, dtype=torch.float32).to(dtype) for s in shapes]


def _report(label: str, out: torch.Tensor, ref: torch.Tensor, tol: float, failures: list[str]) -> None:
    max_abs, rel = _errors(out, ref)
    ok = rel <= tol and torch.isfinite(out).all().item()
    verdict = "PASS" if ok else "FAIL"
    print(f"{label:<58} max_abs={max_abs:.3e} rel={rel:.3e} tol={tol:.0e} {verdict}", flush=True)
    if not ok:
        failures.append(label)


def check_attention(device: str, lengths, heads, dtypes, backends, failures: list[str]) -> None:
    d = 64
    for length in lengths:
        b = 1 if length >= 2048 else 2
        for hq, hkv in heads:
            for dtype in dtypes:
                q, k, v = _inputs(b, hq, hkv, length, d, dtype, device, seed=length + hq)
                for window in (64, 128, None):
                    for sinks in (0, 4):
                        ref = attention_reference(q.float(), k.float(), v.float(), window, sinks)
                        for name, fn in backends:
                            out = fn(q, k, v, window=window, sinks=sinks)
                            assert out.dtype == dtype and out.shape == q.shape
                            label = (f"{name:<5} {DTYPE_NAME[dtype]} L={length:<5} w={window!s:<4} s={sinks} "
                                     f"Hq={hq} Hkv={hkv}")
                            _report(label, out, ref, TOL[dtype], failures)
                        del ref
                if device == "cuda":
                    torch.cuda.empty_cache()


def check_rows(device: str, length: int, dtypes, failures: list[str]) -> None:
    d, hq, hkv = 64, 8, 2
    pos = torch.tensor([0, 1, 63, 64, 127, 128, length // 2, length - 2, length - 1], device=device)
    for dtype in dtypes:
        q, k, _ = _inputs(1, hq, hkv, length, d, dtype, device, seed=7)
        for window in (64, 128, None):
            for sinks in (0, 4):
                ref = attention_probs_reference(q.float(), k.float(), window, sinks)[:, :, pos]
                out = attention_probs_rows(q[:, :, pos], k, pos, window, sinks, key_chunk=1000)
                assert out.dtype == torch.float32
                label = (f"rows  {DTYPE_NAME[dtype]} L={length:<5} w={window!s:<4} s={sinks} "
                         f"nq={len(pos)} chunk=1000")
                _report(label, out, ref, TOL[torch.float32], failures)


# (window, sinks, chunk, softcap, with sink logits): Llama 4 chunks, Gemma 2 caps, gpt-oss sink logits
FEATURE_CASES = [(None, 0, 512, None, False), (128, 4, 512, None, False), (None, 0, None, 30.0, False),
                 (128, 0, None, 30.0, False), (None, 0, None, None, True), (128, 4, None, None, True),
                 (64, 2, 256, 20.0, True)]


def check_features(device: str, length: int, dtypes, backends, failures: list[str]) -> None:
    d, hq, hkv = 64, 8, 2
    pos = torch.tensor([0, 1, 255, 256, 511, 512, length // 2, length - 1], device=device)
    pos = pos[pos < length]
    for dtype in dtypes:
        q, k, v = _inputs(1, hq, hkv, length, d, dtype, device, seed=11)
        g = torch.Generator(device=device).manual_seed(3)
        sink = torch.randn(hq, generator=g, device=device) * 2
        for window, sinks, chunk, softcap, with_sink in FEATURE_CASES:
            feats = dict(chunk=chunk, softcap=softcap, sink_logits=sink if with_sink else None)
            tag = f"w={window!s:<4} s={sinks} c={chunk!s:<4} cap={softcap!s:<4} sinklog={int(with_sink)}"
            ref = attention_reference(q.float(), k.float(), v.float(), window, sinks, **feats)
            for name, fn in backends:
                out = fn(q, k, v, window=window, sinks=sinks, **feats)
                assert out.dtype == dtype and out.shape == q.shape
                _report(f"{name:<5} {DTYPE_NAME[dtype]} L={length:<5} {tag}", out, ref, TOL[dtype], failures)
            del ref
            want = attention_probs_reference(q.float(), k.float(), window, sinks, **feats)[:, :, pos]
            rows = attention_probs_rows(q[:, :, pos], k, pos, window, sinks, key_chunk=1000, **feats)
            _report(f"rows  {DTYPE_NAME[dtype]} L={length:<5} {tag}", rows, want, TOL[torch.float32], failures)
            if device == "cuda":
                torch.cuda.empty_cache()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny CPU run (sdpa + rows, flex skipped)")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 reference must be true fp32
    failures: list[str] = []
    start = time.time()
    if args.cpu_smoke:
        print("CPU smoke run: flex skipped; sdpa and rows only, small sizes")
        backends = [("sdpa", attention_sdpa), ("auto", attention)]
        check_attention("cpu", (200,), ((4, 2),), (torch.float32, torch.bfloat16), backends, failures)
        check_rows("cpu", 300, (torch.float32,), failures)
        check_features("cpu", 700, (torch.float32, torch.bfloat16), backends, failures)
    else:
        if not torch.cuda.is_available():
            print("no CUDA device; use --cpu-smoke for a CPU run", file=sys.stderr)
            return 2
        print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
        backends = [("flex", attention_flex), ("sdpa", attention_sdpa), ("auto", attention)]
        dtypes = (torch.float32, torch.bfloat16)
        check_attention("cuda", (300, 1000, 4096), ((8, 2),), dtypes, backends, failures)
        check_attention("cuda", (1000,), ((4, 4),), dtypes, backends, failures)
        check_rows("cuda", 4096, dtypes, failures)
        check_features("cuda", 1000, dtypes, backends, failures)
        check_features("cuda", 4096, dtypes, backends, failures)
    print(f"{len(failures)} FAIL; wall {time.time() - start:.1f}s")
    for label in failures:
        print(f"FAIL: {label}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
