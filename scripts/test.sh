#!/usr/bin/env bash
# The README's test command: the whole CPU suite (GPU-only tests skip cleanly).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# duckdb's nanobind bindings print reference-leak noise at interpreter exit, after pytest's summary;
# drop those lines so the summary stays the last thing the run prints.
python3 -m pytest tests "$@" 2> >(grep -v -E "^nanobind: |^ - leaked |^ - \.\.\. skipped remainder|refleaks.html" >&2)
