#!/usr/bin/env bash
# All GPU checks and benchmarks of issues 2 and 3 in one command; logs and JSON go to $OUT.
#
#   bash benchmarks/run_gpu.sh                  # on the device (carry .whl: it is git-ignored)
#   bash benchmarks/run_gpu.sh mixers probes    # only some steps: attention recurrent mixers probes train
#   bash benchmarks/run_gpu.sh train            # issue 5: zoo variant vs HF Llama training tokens/s
#                                               # (opt-in: not in the default list; about 1-2 min)
#   bash benchmarks/run_gpu.sh runs             # issue 11: Runner.run (retrieval_heads 4K/32K/128K, LongPPL,
#                                               # token_loss) vs forwards (opt-in; needs pydantic: .whl/zoo/)
#   bash benchmarks/run_gpu.sh mechanisms       # issue 13: gradient influence 4K/32K, checkpointing, attributions
#                                               # 4K/8K through Runner.run (opt-in; pydantic, and captum +
#                                               # matplotlib for the attribution rows, as wheels in .whl/zoo/)
#   bash benchmarks/run_gpu.sh --smoke          # CPU dry run of the same plumbing (no pip, tiny sizes)
#
# Never stops early: every step runs under its own hard timeout (and the benches under a soft
# budget that skips their remaining rows), its exit code is recorded, and the summary is printed
# at the end (also $OUT/summary.txt). Whole run: about 5 min on an H100; hard cap 570 s.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out/gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

SMOKE=0
STEPS=()
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    attention|recurrent|mixers|probes|train|runs|mechanisms) STEPS+=("$arg") ;;
    *) echo "unknown argument: $arg (steps: attention recurrent mixers probes train runs mechanisms; or --smoke)" >&2; exit 2 ;;
  esac
done
[ ${#STEPS[@]} -eq 0 ] && STEPS=(attention recurrent mixers probes)

T0=$(date +%s)
DEADLINE=$((T0 + ${TOTAL_S:-570}))
SUMMARY=()

step() {  # step NAME CAP_SECONDS CMD... : run under min(CAP, time left), tee to $OUT/NAME.log
  local name=$1 cap=$2
  shift 2
  local left=$((DEADLINE - $(date +%s)))
  local limit=$((cap < left ? cap : left))
  if [ "$left" -lt 20 ]; then
    echo "=== $name: SKIPPED (only ${left}s left of the overall budget)" | tee "$OUT/$name.log"
    SUMMARY+=("$name: SKIPPED (overall budget)")
    return
  fi
  echo "=== $name (limit ${limit}s): $*" | tee "$OUT/$name.log"
  local start=$(date +%s)
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  local dur=$(($(date +%s) - start))
  local what="rc=$rc"
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && what="rc=$rc (TIMEOUT after ${limit}s)"
  echo "=== $name: $what in ${dur}s" | tee -a "$OUT/$name.log"
  SUMMARY+=("$name: $what, ${dur}s")
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null) $(git status --porcelain 2>/dev/null | wc -l) changed files"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__)" 2>&1
  python3 -c "import triton; print('triton', triton.__version__)" 2>/dev/null || echo "triton: not importable"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [ "$SMOKE" -eq 1 ]; then
  echo "smoke mode: CPU, tiny sizes, no pip install"
  A=(--cpu-smoke); B=(--smoke)
else
  A=(); B=()
  if ls .whl/*.whl >/dev/null 2>&1; then
    if python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl \
        $(ls .whl/zoo/*.whl 2>/dev/null) > "$OUT/pip.log" 2>&1; then
      export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
      SUMMARY+=("pip fla wheels: ok")
    else
      SUMMARY+=("pip fla wheels: FAILED (see pip.log); fla rows will SKIP/FAIL")
    fi
  else
    echo "no .whl/*.whl here (it is git-ignored: pass carry=['.whl']); fla rows will SKIP" | tee "$OUT/pip.log"
    SUMMARY+=("pip fla wheels: no .whl directory")
  fi
  python3 -c "import fla; print('fla', fla.__version__)" >> "$OUT/env.txt" 2>&1 || echo "fla: import failed" >> "$OUT/env.txt"
  tail -1 "$OUT/env.txt"
fi

for s in "${STEPS[@]}"; do
  case "$s" in
    attention) step gpu_check_attention 150 python3 benchmarks/gpu_check_attention.py "${A[@]}" ;;
    recurrent) step gpu_check_recurrent 100 python3 benchmarks/gpu_check_recurrent.py "${A[@]}" ;;
    mixers) step bench_mixers 180 python3 benchmarks/bench_mixers.py "${B[@]}" --budget-s 150 \
              --out "$OUT/bench_mixers.json" ;;
    probes) step bench_probes 150 python3 benchmarks/bench_probes.py "${B[@]}" --budget-s 120 \
              --out "$OUT/bench_probes.json" ;;
    train) step bench_train 300 python3 benchmarks/bench_train.py "${B[@]}" --budget-s 240 \
              --out "$OUT/bench_train.json" ;;
    runs) step bench_runs_gpu 540 python3 benchmarks/bench_runs_gpu.py "${B[@]}" --budget-s 480 \
              --out "$OUT/bench_runs_gpu.json" ;;
    mechanisms) step bench_mechanisms 480 python3 benchmarks/bench_mechanisms.py "${B[@]}" --budget-s 420 \
              --out "$OUT/bench_mechanisms.json" ;;
  esac
done

{
  echo "==== summary ($(($(date +%s) - T0))s total)"
  for line in "${SUMMARY[@]}"; do echo "  $line"; done
} | tee "$OUT/summary.txt"
exit 0
