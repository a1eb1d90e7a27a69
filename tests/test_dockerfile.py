"""The Docker image's contract (a Hugging Face Docker Space), checked without a Docker engine: the
Dockerfile's user, port, entry point and baked-in files, what .dockerignore keeps out of the context, and
the entry-point command itself run outside Docker (on 127.0.0.1 and a free port, health-checked, stopped
by PID). ``.ci/run`` builds and starts the real image when a Docker engine is available."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from app import serve
from backend import paths

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
BAKED = ("pyproject.toml", "kernels", "models", "backend", "app", ".streamlit", "precomputed")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(ln for ln in DOCKERFILE.splitlines() if not ln.lstrip().startswith("#")))
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1].strip()) for ln in text.splitlines() if ln.strip()]


def env() -> dict[str, str]:
    out: dict[str, str] = {}
    for kind, args in instructions():
        if kind == "ENV":
            out.update(dict(item.split("=", 1) for item in shlex.split(args)))
    return out


def cmd() -> list[str]:
    return json.loads(next(args for kind, args in instructions() if kind == "CMD"))


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker's context excludes ``path`` (the subset of .dockerignore syntax this file uses)."""
    parts = path.split("/")
    for pat in patterns:
        if pat.startswith("**/"):
            if any(fnmatch.fnmatch(p, pat[3:]) for p in parts):
                return True
        elif any(fnmatch.fnmatch("/".join(parts[: i + 1]), pat) for i in range(len(parts))):
            return True
    return False


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def test_non_root_user_port_and_entry_point():
    ins = instructions()
    assert ("RUN", "useradd --create-home --uid 1000 user") in ins
    users = [args for kind, args in ins if kind == "USER"]
    assert users == ["user"]
    assert [args for kind, args in ins if kind == "EXPOSE"] == ["7860"]
    c = cmd()
    assert c[:3] == ["streamlit", "run", "app/main.py"]
    assert c[c.index("--server.port") + 1] == "7860" and c[c.index("--server.address") + 1] == "0.0.0.0"
    assert env()["HYBRIDSCOPE_HOSTED"] == "1" and "HYBRIDSCOPE_STORE" not in env()  # /data when present
    # the README's front matter (the Space configuration) names the same port
    assert "\napp_port: 7860\n" in (ROOT / "README.md").read_text().split("---")[1]


def test_files_baked_in_and_kept_in_the_context():
    copies = [shlex.split(args) for kind, args in instructions() if kind == "COPY"]
    sources = {c[-2] for c in copies}
    assert set(BAKED) <= sources and "requirements.txt" in sources
    for c in copies:
        assert "--chown=user" in c  # the non-root user owns its files
    pats = dockerignore()
    for src in [*BAKED, "requirements.txt", "app/main.py", "precomputed/store/READ_ONLY", "precomputed/zoo/full"]:
        assert not ignored(src, pats), src
    for junk in [".git/config", ".venv/bin/python", ".whl/x.whl", "out/test-artifacts/a.png", ".data/zoo/x",
                 "tests/app/test_jobs.py", "app/__pycache__/main.cpython-311.pyc", "backend/x.pyc",
                 ".hypothesis/examples", "zoo/train.py", "benchmarks/RESULTS.md"]:
        assert ignored(junk, pats), junk


def test_streamlit_config_hides_the_deploy_button_and_binds_loopback():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["client"]["toolbarMode"] == "viewer"  # viewer options only: no Deploy button
    assert cfg["server"]["address"] == "127.0.0.1"


def test_hosted_store_goes_to_persistent_storage_when_writable(monkeypatch, tmp_path):
    monkeypatch.delenv("HYBRIDSCOPE_STORE", raising=False)
    monkeypatch.setenv("HYBRIDSCOPE_PERSISTENT_DIR", str(tmp_path))
    monkeypatch.setenv("HYBRIDSCOPE_HOSTED", "1")
    assert paths.store_root() == tmp_path / "hybridscope" / "store"
    monkeypatch.setenv("HYBRIDSCOPE_PERSISTENT_DIR", str(tmp_path / "absent"))
    assert paths.persistent_dir() is None and paths.store_root().name == "store"
    assert paths.store_root() != tmp_path / "absent" / "hybridscope" / "store"
    monkeypatch.setenv("HYBRIDSCOPE_PERSISTENT_DIR", str(tmp_path))
    monkeypatch.delenv("HYBRIDSCOPE_HOSTED")
    assert paths.persistent_dir() is None  # only a hosted backend uses it
    monkeypatch.setenv("HYBRIDSCOPE_STORE", str(tmp_path / "mine"))
    monkeypatch.setenv("HYBRIDSCOPE_HOSTED", "1")
    assert paths.store_root() == tmp_path / "mine"  # an explicit store wins


@pytest.mark.browser
def test_the_entry_point_command_serves_the_dashboard(tmp_path):
    """The image's CMD, as the image would run it (its ENV, /data as persistent storage), but on
    127.0.0.1 and a free port; health-checked like the HEALTHCHECK, then stopped by PID."""
    port = serve.free_port()
    c = cmd()
    c[c.index("--server.port") + 1] = str(port)
    c[c.index("--server.address") + 1] = "127.0.0.1"
    image_env = {k: v for k, v in env().items() if k.startswith(("HYBRIDSCOPE_", "OMP_", "HF_", "TRANSFORMERS_"))}
    image_env.pop("HYBRIDSCOPE_PRECOMPUTED")  # /home/user/app/precomputed in the image: here the checkout's
    data = tmp_path / "data"
    data.mkdir()
    run_env = {**os.environ, **image_env, "HYBRIDSCOPE_PERSISTENT_DIR": str(data)}
    run_env.pop("HYBRIDSCOPE_STORE", None)
    exe = [sys.executable, "-m", *c] if c[0] == "streamlit" else c
    proc = subprocess.Popen(exe, cwd=ROOT, env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline and status is None:
            assert proc.poll() is None, "the entry point exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=4) as r:
                    status = (r.status, r.read().decode())
            except OSError:
                time.sleep(0.5)
        assert status == (200, "ok")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200 and "<title>" in r.read().decode().lower()
    finally:
        serve.stop(proc)
    assert proc.returncode is not None
