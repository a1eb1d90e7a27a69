"""Check the fla GPU paths of the recurrent mixers against the torch chunked paths.

    python benchmarks/gpu_check_recurrent.py                 # CUDA: ssd_fla / gdn_fla vs torch chunked
    python benchmarks/gpu_check_recurrent.py --cpu-smoke     # CPU: torch chunked/windowed vs recurrent

Each row compares one output (``y``/``o`` or the final state) on seeded random inputs and prints the
relative error ``‖fast − ref‖ / ‖ref‖``. The reference is computed from the *same* (possibly bf16)
inputs by the float32 torch path with TF32 off. Thresholds: fp32 <= 2e-3 (fla's dots run at
TF32-like precision), bf16 <= 2e-2. Exits 1 if any row FAILs. A row says SKIP (and does not fail)
only when the installed fla refuses float32 inputs outright (older ``chunk_gated_delta_rule``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.gated_deltanet import gdn_chunked, gdn_fla, gdn_recurrent, gdn_windowed  # noqa: E402
from kernels.mamba2 import ssd_chunked, ssd_fla, ssd_recurrent  # noqa: E402

TOL = {torch.float32: 2e-3, torch.bfloat16: 2e-2}
DTYPE_NAME = {torch.float32: "fp32", torch.bfloat16: "bf16"}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    b = b.float()
    return ((a.float() - b).norm() / b.norm().clamp_min(1e-30)).item()


def ssd_inputs(length, dims, device, dtype, seed=0):
    b, h, p, n, groups = dims
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, h, p, generator=gen)
    dt = F.softplus(torch.randn(b, length, h, generator=gen) - 1.0)
    A = -(torch.rand(h, generator=gen) + 0.3)
    Bm = torch.randn(b, length, groups, n, generator=gen) / n**0.5
    Cm = torch.randn(b, length, groups, n, generator=gen) / n**0.5
    D = torch.randn(h, generator=gen)
    h0 = torch.randn(b, h, p, n, generator=gen)
    return [t.to(device, dtype) for t in (x, dt, A, Bm, Cm, D)], h0.to(device)


def gdn_inputs(length, dims, device, dtype, seed=0):
    b, h, dk, dv = dims
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(b, length, h, dk, generator=gen), dim=-1)
    k = F.normalize(torch.randn(b, length, h, dk, generator=gen), dim=-1)
    v = torch.randn(b, length, h, dv, generator=gen)
    g = F.logsigmoid(torch.randn(b, length, h, generator=gen) + 3.0)
    beta = torch.sigmoid(torch.randn(b, length, h, generator=gen))
    s0 = torch.randn(b, h, dk, dv, generator=gen) * 0.1
    return [t.to(device, dtype) for t in (q, k, v, g, beta)], s0.to(device)


def timed(fn):
    fn()  # warm-up (and Triton autotune on first call)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, (time.perf_counter() - start) * 1e3


def check(rows, kernel, length, dtype, fast, ref, names):
    """Run fast() and ref() (each returning a tuple) and add one row per named output."""
    try:
        out_fast, ms_fast = timed(fast)
    except AssertionError as err:  # older fla: "does not support float32"
        if dtype == torch.float32 and "float32" in str(err):
            rows.append((kernel, length, DTYPE_NAME[dtype], "-", float("nan"), 0.0, 0.0, "SKIP"))
            return
        raise
    out_ref, ms_ref = timed(ref)
    for name, a, b in zip(names, out_fast, out_ref, strict=True):
        err = rel(a, b)
        verdict = "PASS" if err <= TOL[dtype] else "FAIL"
        rows.append((kernel, length, DTYPE_NAME[dtype], name, err, ms_fast, ms_ref, verdict))


def gpu_rows(lengths):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev, rows = "cuda", []
    for length in lengths:
        for dtype in (torch.float32, torch.bfloat16):
            ins, h0 = ssd_inputs(length, (2, 8, 64, 128, 2), dev, dtype)
            check(rows, "ssd_fla", length, dtype,
                  lambda ins=ins, h0=h0: ssd_fla(*ins, initial_state=h0),
                  lambda ins=ins, h0=h0: ssd_chunked(*ins, initial_state=h0),
                  ("y", "final_state"))
            ins, s0 = gdn_inputs(length, (2, 8, 128, 128), dev, dtype)
            check(rows, "gdn_fla", length, dtype,
                  lambda ins=ins, s0=s0: gdn_fla(*ins, initial_state=s0),
                  lambda ins=ins, s0=s0: gdn_chunked(*ins, initial_state=s0),
                  ("o", "final_state"))
    return rows


def cpu_rows(lengths):
    rows = []
    for length in lengths:
        for dtype in (torch.float32, torch.bfloat16):
            ins, h0 = ssd_inputs(length, (1, 2, 16, 16, 1), "cpu", dtype)
            check(rows, "ssd_chunked", length, dtype,
                  lambda ins=ins, h0=h0: ssd_chunked(*ins, initial_state=h0, chunk_size=32),
                  lambda ins=ins, h0=h0: ssd_recurrent(*ins, initial_state=h0),
                  ("y", "final_state"))
            check(rows, "ssd_chunked[w=24]", length, dtype,
                  lambda ins=ins: ssd_chunked(*ins, chunk_size=32, window=24)[:1],
                  lambda ins=ins: ssd_recurrent(*ins, window=24)[:1], ("y",))
            ins, s0 = gdn_inputs(length, (1, 2, 16, 16), "cpu", dtype)
            check(rows, "gdn_chunked", length, dtype,
                  lambda ins=ins, s0=s0: gdn_chunked(*ins, initial_state=s0, chunk_size=32),
                  lambda ins=ins, s0=s0: gdn_recurrent(*ins, initial_state=s0),
                  ("o", "final_state"))
            check(rows, "gdn_windowed[w=24]", length, dtype,
                  lambda ins=ins: (gdn_windowed(*ins, window=24, chunk_size=16),),
                  lambda ins=ins: gdn_recurrent(*ins, window=24)[:1], ("o",))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="torch paths only, on CPU, small sizes")
    parser.add_argument("--lengths", type=str, default=None,
                        help="comma-separated sequence lengths (default 64,1000,4096; CPU smoke 64,130)")
    args = parser.parse_args(argv)
    default = "64,130" if args.cpu_smoke else "64,1000,4096"
    lengths = [int(s) for s in (args.lengths or default).split(",")]
    if args.cpu_smoke:
        rows = cpu_rows(lengths)
        print(f"CPU smoke (torch fast paths vs step-by-step references), torch {torch.__version__}")
    elif not torch.cuda.is_available():
        print("no CUDA device: run with --cpu-smoke for the torch parts", file=sys.stderr)
        return 2
    else:
        rows = gpu_rows(lengths)
        import fla

        fla_version = getattr(fla, "__version__", "?")
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, fla {fla_version}")
    head = f"{'kernel':<20}{'L':>6} {'dtype':<5} {'output':<12}{'rel err':>10}{'tol':>9}"
    print(head + f"{'fast ms':>10}{'ref ms':>10}  verdict")
    for kernel, length, dt, name, err, ms_fast, ms_ref, verdict in rows:
        tol = TOL[torch.float32 if dt == "fp32" else torch.bfloat16]
        print(f"{kernel:<20}{length:>6} {dt:<5} {name:<12}{err:>10.2e}{tol:>9.0e}"
              f"{ms_fast:>10.2f}{ms_ref:>10.2f}  {verdict}")
    failed = sum(r[-1] == "FAIL" for r in rows)
    print(f"{len(rows) - failed} rows ok, {failed} FAIL")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
