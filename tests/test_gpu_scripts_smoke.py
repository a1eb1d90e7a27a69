"""The GPU scripts of issue 10 in their CPU modes, with the packages the device image lacks made
unimportable: benchmarks/bench_hf_long.py --smoke end to end, gpu_check_attention's feature checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("pydantic", "duckdb", "platformdirs", "streamlit", "fastapi", "uvicorn", "altair", "fla")


def test_bench_hf_long_smoke_without_what_the_device_lacks(tmp_path):
    code = (
        "import runpy, sys\n"
        f"for m in {BLOCKED!r}: sys.modules[m] = None\n"
        f"sys.argv = ['bench_hf_long.py', '--smoke', '--out', {str(tmp_path / 'r.json')!r}]\n"
        f"runpy.run_path({str(ROOT / 'benchmarks' / 'bench_hf_long.py')!r}, run_name='__main__')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads((tmp_path / "r.json").read_text())
    rows = {(r["section"], r["name"]): r for r in data["rows"]}
    assert set(rows) == {("parity", "qwen3_routed_vs_hf"), ("forward", "native"), ("forward", "qwen3"),
                         ("forward", "qwen3_hf_dense"), ("rows", "native"), ("rows", "qwen3")}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    parity = rows[("parity", "qwen3_routed_vs_hf")]
    assert parity["attn_impl"] == "hybridscope_long@300(sdpa)"  # the routed path ran, not HF's own
    assert parity["rel_err"] <= 1e-4 and parity["argmax_agree"] == 1.0
    ratios = {r["name"]: r for r in data["ratios"]}
    assert ratios["parity_rel_err"]["verdict"] == "MET"


def test_gpu_check_attention_features_on_cpu():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check_attention as check
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    failures: list[str] = []
    check.check_features("cpu", 300, (torch.float32,), [("sdpa", check.attention_sdpa)], failures)
    assert failures == []
    bad = [("bad", lambda q, k, v, **kw: check.attention_sdpa(q, k, v, **{**kw, "softcap": None}))]
    check.check_features("cpu", 300, (torch.float32,), bad, failures)
    assert failures and all("cap=30.0" in f or "cap=20.0" in f for f in failures)  # the check can fail
