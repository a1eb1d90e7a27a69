"""Test-only dashboard entry (browser tests, benchmarks): ``streamlit run tests/app/fake_app.py``.

Runs the real app/main.py in a server where ``app.run_panel.CLIENT_FACTORY`` is the fake backend
client (tests/app/fake_client.py), so a Compute button writes synthetic traces instead of running a
model. The app itself ships no fake: this file and the double live under tests/.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `streamlit run` puts this file's folder, not the repo root, on sys.path
    sys.path.insert(0, str(ROOT))

from app import data, run_panel  # noqa: E402
from tests.app.fake_client import FakeClient  # noqa: E402

run_panel.CLIENT_FACTORY = lambda: FakeClient(data.store_dir())
runpy.run_path(str(ROOT / "app" / "main.py"), run_name="__main__")
