"""The dashboard never imports torch or transformers, directly or transitively, and ships no fake backend.

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
    os.environ.update(HYBRIDSCOPE_STORE=os.path.join(d, "store"), HYBRIDSCOPE_PRECOMPUTED=d)
    import app.charts, app.data, app.defaults, app.run_panel, app.serve, app.state
    import app.views.overview, app.views.longppl, app.views.token_loss
    import app.views.retrieval_heads, app.views.niah, app.views.runs
    from tests.app.fake_client import write_synthetic
    for probe in ("token_loss", "longppl", "niah", "retrieval_heads", "attention_rows", "sweep"):
        write_synthetic(os.environ["HYBRIDSCOPE_STORE"], "zoo/gdn", probe)
    from streamlit.testing.v1 import AppTest
    for view in ("overview", "longppl", "token_loss", "retrieval_heads", "niah", "runs"):
        at = AppTest.from_file(os.path.join({root!r}, "app", "main.py"), default_timeout=60)
        if view != "overview":
            at.switch_page(f"views/{{view}}.py")
        at.query_params.update(layer="3", head="0")
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


def test_the_app_ships_no_fake_backend():
    """The test double lives under tests/: no app module defines, imports or switches to a fake client."""
    app_dir = ROOT / "app"
    for path in sorted(app_dir.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for needle in ("FakeClient", "fake_client", "HYBRIDSCOPE_CLIENT", "write_synthetic", "tests."):
            assert needle not in text, f"{path.relative_to(ROOT)} mentions {needle!r}"
    assert not (app_dir / "fake_client.py").exists()
