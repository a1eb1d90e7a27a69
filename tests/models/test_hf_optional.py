"""A process that runs a model through the backend never imports scipy or scikit-learn through
transformers' optional integrations (models/hf_optional.py; ~1.3 s of a fresh CPU process, issue 11),
and both stay importable for the code that uses them itself. (pandas is not checked: pyarrow imports it
on its first ``pa.array`` call whenever it is installed.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("scipy", "sklearn")

CHILD = f"""
HEAVY = {HEAVY!r}
import json, sys, tempfile
from backend.runner import Runner
from backend.spec import RunSpec
with tempfile.TemporaryDirectory() as store:
    res = Runner(store, read_only_roots=[]).run(
        RunSpec.build(model="tiny/SF", probe="token_loss", data="stdlib", params={{"n_docs": 1, "max_tokens": 64}}))
import transformers.generation.utils, transformers.modeling_utils  # what a checkpoint load imports
import transformers.utils as tu
loaded = sorted(m for m in HEAVY if m in sys.modules)
import sklearn.metrics, scipy.optimize  # still importable by code that asks for them
print(json.dumps({{"rows": res.manifest["rows"], "loaded": loaded,
                  "checks": [tu.is_scipy_available(), tu.is_sklearn_available()],
                  "torch": "torch" in sys.modules}}))
"""


def test_a_backend_run_imports_no_scipy_or_sklearn():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HYBRIDSCOPE_STORE", None)
    p = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["rows"]["token_loss"] == 63 and out["torch"]
    assert out["loaded"] == [], f"imported through transformers: {out['loaded']}"
    assert out["checks"] == [False, False]
