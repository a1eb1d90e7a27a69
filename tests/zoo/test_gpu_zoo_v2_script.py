"""scripts/gpu_zoo_v2.sh --smoke: a training round's plumbing on CPU (site corpus with its long held-out
split, two variants side by side, longeval with the evaluator's key tokens, xz'd export parts, records)."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_zoo_v2_smoke_round(tmp_path, data_dir) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "ZOO_DATA": str(data_dir), "OUT": str(out), "ZOO_WORK": str(work),
           "SITE_DATA": str(tmp_path / "site"), "ROUND": "T", "TRAIN": "full,swa128", "RETURN": "full"}
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_zoo_v2.sh"), "--smoke"], capture_output=True,
                         text=True, timeout=900, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "--- full: rc=0" in res.stdout and "--- swa128: rc=0" in res.stdout, res.stdout[-3000:]
    parts = sorted(out.glob("ckpt_full.tar.xz.part-*"))
    assert parts and not list(out.glob("ckpt_swa128*"))  # only what RETURN names
    (tmp_path / "x.tar.xz").write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(tmp_path / "x.tar.xz", "r:xz") as tf:
        tf.extractall(tmp_path / "x", filter="data")
    model = tmp_path / "x" / "zoo" / "full"
    assert (model / "config.json").is_file()
    assert json.loads((model / "qk" / "index.json").read_text())["layers"] == [3, 7]  # cut from all 8
    le = json.loads((work / "longeval_T.json").read_text())
    assert set(le["variants"]) == {"full", "swa128"} and le["trunc_len"] == 64 and le["windows"] == 4
    steps = [r["step"] for r in le["variants"]["swa128"]]
    assert steps == sorted(steps) and len(steps) == 2  # the evaluation checkpoint and the final export
    with tarfile.open(out / "records_T.tar.gz") as tf:
        names = set(tf.getnames())
    assert {"keys.npz", "longeval_T.json", "full/runs/full/formation.json", "swa128/plan.json"} <= names
    with tarfile.open(out / "site_T.tar.gz") as tf:
        assert {"manifest.json", "longeval_tokens.npy", "longeval_docs.json"} <= set(tf.getnames())
