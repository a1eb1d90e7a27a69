"""The dashboard never imports torch or transformers, directly or transitively.

Checked in a fresh interpreter: import every app module, then run every view of the app (AppTest)
against a synthetic store, then look at ``sys.modules``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.app.conftest import ROOT

SCRIPT = textwrap.dedent("""
    import os, sys, tempfile
    d = tempfile.mkdtemp()
    os.environ.update(HYBRIDSCOPE_STORE=os.path.join(d, "store"), HYBRIDSCOPE_PRECOMPUTED=d,
                      HYBRIDSCOPE_CLIENT="fake")
    import app.charts, app.data, app.fake_client, app.run_panel, app.state
    import app.views.overview, app.views.longppl, app.views.token_loss
    import app.views.retrieval_heads, app.views.niah, app.views.runs
    from app.fake_client import write_synthetic
    for probe in ("token_loss", "longppl", "niah", "retrieval_heads", "attention_rows", "sweep"):
        write_synthetic(os.environ["HYBRIDSCOPE_STORE"], "zoo/gdn", probe)
    from streamlit.testing.v1 import AppTest
    for view in ("overview", "longppl", "token_loss", "retrieval_heads", "niah", "runs"):
        at = AppTest.from_file(os.path.join({root!r}, "app", "main.py"), default_timeout=60)
        at.query_params.update(view=view, layer="3", head="0")
        at.run()
        assert not at.exception, (view, [e.value for e in at.exception])
        assert len(at.get("vega_lite_chart")) or view == "runs", view
    bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "triton", "fla"))
    print("HEAVY:", bad[:10])
""")


def test_app_never_imports_torch_or_transformers(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(root=str(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY: []" in proc.stdout, proc.stdout[-2000:]
