"""``streamlit run app/main.py`` from the repository listens on 127.0.0.1 only (.streamlit/config.toml),
with no address given on the command line. Started on a free port and stopped by PID."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

from app.serve import ROOT, free_port, stop
from tests.netcheck import LOOPBACK_V4, listening


def test_dashboard_binds_loopback_by_default(tmp_path):
    port = free_port()
    env = {**os.environ, "HYBRIDSCOPE_PRECOMPUTED": str(tmp_path), "HYBRIDSCOPE_STORE": str(tmp_path / "s")}
    cmd = [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        assert listening(port) == [("tcp", LOOPBACK_V4)]
    finally:
        stop(proc)
