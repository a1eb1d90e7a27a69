#!/usr/bin/env bash
# The README's test command: the whole CPU suite (GPU-only tests skip cleanly).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
python3 -m pytest tests "$@"
