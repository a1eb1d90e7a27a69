#!/usr/bin/env bash
# One-time setup on a fresh CPU machine: Python deps (torch CPU build first) + Debian chromium for browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -r requirements-dev.txt
if ! command -v chromium >/dev/null 2>&1 && [ "${HYBRIDSCOPE_SKIP_CHROMIUM:-0}" != 1 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install Debian chromium; browser tests will skip" >&2
fi
