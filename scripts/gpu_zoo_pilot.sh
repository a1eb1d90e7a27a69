#!/usr/bin/env bash
# Zoo v2 pilot (issue 12) in ONE device command of <= 9.5 minutes on one H200: one variant at two sizes,
# equal tokens, torch.compile; records PPL, passkey accuracy at 4K, the best full-attention retrieval
# score and the model's own LongPPL key tokens at 9 points, so the lead can choose the zoo's size.
#
#   bash scripts/gpu_zoo_pilot.sh            # on the device (run tool); carry .data/zoo only
#   bash scripts/gpu_zoo_pilot.sh --smoke    # CPU dry run of the same plumbing (tiny sizes, 2 steps)
#
# Needs nothing the device image lacks: the pilot imports neither pydantic nor duckdb nor platformdirs
# nor fla (tests/zoo/test_zoo_pilot.py runs it with those imports blocked), so no wheels travel.
# Carry: .data/zoo (15 MB, from `python -m zoo build-data --out .data/zoo`). The tracked tree is ~66 MB
# with precomputed/, over the 64 MiB a call takes: move precomputed/zoo and precomputed/store out of the
# checkout for the call and back afterwards (README "Notes"); the pilot reads neither.
#
# Corpus: CORPUS=site (default) first builds the site corpus (zoo/site_corpus.py: the carried $ZOO_DATA
# extended with the device's installed sources, same tokenizer and val/test) into $SITE_DATA (default
# out/zoo_site, reused when built; SITE_S=240 s cap) and trains on it; CORPUS=bundled trains on $ZOO_DATA.
# CORPUS_SHA256=<hex> refuses any other token stream. The site manifest travels in pilot_runs.tar.gz.
# Env (defaults): PILOT_VARIANT=full, PILOT_SIZES=5m,15m (smallest first), TOTAL_S=570 (this script's
# deadline), PILOT_STEPS (fixed steps instead of the plan), PILOT_ARGS (extra `python -m zoo pilot` flags,
# e.g. "--lr 1.5e-3 --synthetic-frac 0.3"), COMPILE=1.
# Time (planned by zoo.pilot.plan_steps from issue 12's measured compiled tok/s: 5m ~2.69M, 15m 1.99M):
# ~30 s setup (imports, corpus tokenised on the device's cores, eval set), per size ~75 s compile and
# 9 evaluations of ~6 s, then equal steps filling 0.9 x the rest (~3,400 steps = ~225M tokens per size
# at TOTAL_S=570); each size has a hard cap (1.3 x its plan, less what the next size needs), packaging
# ~10 s. Returns under $OUT (<= 8 files, <= 16 MiB each): pilot.json (plan, measured tok/s, compile and
# eval seconds, every record, first steps reaching passkey 0.9 / retrieval thresholds / 1,000 key
# tokens), pilot.log, pilot_runs.tar.gz (train logs, formation, summaries), qk_<k>.tar.gz (the Q/K
# weight series, zoo/qk.py format, as far as 48 MiB allow).
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true

SMOKE=0
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    *) echo "unknown argument: $arg (only --smoke)" >&2; exit 2 ;;
  esac
done
T0=$(date +%s)
DATA="${ZOO_DATA:-.data/zoo}"
VARIANT="${PILOT_VARIANT:-full}"
if [ "$SMOKE" -eq 1 ]; then
  OUT="${OUT:-$PWD/out/gpu_zoo_pilot_smoke}"
  WORK="${ZOO_WORK:-$PWD/out/zoo_pilot_smoke}"
  TOTAL_S=${TOTAL_S:-900}
  ARGS=(--sizes "${PILOT_SIZES:-smoke-5m,smoke-15m}" --steps "${PILOT_STEPS:-2}" --evals 2 --device cpu
        --max-docs 30 --workers 0 --batch-size 2 --warmup-steps 1 --log-every 1)
else
  OUT="${OUT:-$PWD/out/gpu_zoo_pilot}"
  WORK="${ZOO_WORK:-$PWD/out/zoo_pilot}"
  TOTAL_S=${TOTAL_S:-570}
  ARGS=(--sizes "${PILOT_SIZES:-5m,15m}")
  [ "${COMPILE:-1}" = "1" ] && ARGS+=(--compile)
fi
CORPUS="${CORPUS:-site}"
SITE_ARGS=()
if [ "$SMOKE" -eq 1 ]; then  # a few files per source: the plumbing only
  SITE_DATA="${SITE_DATA:-$PWD/out/zoo_site_smoke}"; SITE_ARGS=(--max-files "${SITE_MAX_FILES:-2}" --workers 2)
fi
SITE_DATA="${SITE_DATA:-$PWD/out/zoo_site}"
[ -n "${CORPUS_SHA256:-}" ] && ARGS+=(--corpus-sha256 "$CORPUS_SHA256")
mkdir -p "$OUT" "$WORK"
LOG="$OUT/pilot.log"
{
  echo "date: $(date -u +%FT%TZ)  smoke=$SMOKE  variant=$VARIANT  args=${ARGS[*]}"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null) $(git status --porcelain 2>/dev/null | wc -l) changed files"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__)" 2>&1
  echo "cpus: $(nproc)  data: $DATA ($(du -sh "$DATA" 2>/dev/null | cut -f1))"
} | tee "$LOG"
if [ ! -f "$DATA/tokenizer/tokenizer.json" ]; then
  echo "no corpus in $DATA: carry .data/zoo (python -m zoo build-data --out .data/zoo)" | tee -a "$LOG"
  exit 2
fi

if [ "$CORPUS" = "site" ]; then
  if [ ! -f "$SITE_DATA/manifest.json" ]; then
    echo "=== corpus: python3 -m zoo build-data --sources site --base $DATA --out $SITE_DATA ${SITE_ARGS[*]}" | tee -a "$LOG"
    timeout -k 10 "${SITE_S:-240}" python3 -m zoo build-data --sources site --base "$DATA" --out "$SITE_DATA" \
      "${SITE_ARGS[@]}" > "$WORK/site_build.json" 2>> "$LOG"
    echo "=== corpus: rc=$? after $(($(date +%s) - T0))s" | tee -a "$LOG"
  fi
  if [ ! -f "$SITE_DATA/manifest.json" ]; then
    echo "=== corpus: no site corpus in $SITE_DATA (build failed: see above); not training" | tee -a "$LOG"
    exit 2
  fi
  cp "$SITE_DATA/manifest.json" "$WORK/site_manifest.json"
  python3 -c "import json, sys; from zoo.site_corpus import site_summary
print(json.dumps(site_summary(json.load(open(sys.argv[1]))), indent=1))" "$SITE_DATA/manifest.json" | tee -a "$LOG"
  DATA="$SITE_DATA"
fi
if [ "$SMOKE" -eq 0 ]; then
  if [ -n "${PILOT_STEPS:-}" ]; then ARGS+=(--steps "$PILOT_STEPS")
  else ARGS+=(--total-budget-s $((T0 + TOTAL_S - 35 - $(date +%s)))); fi
fi
# shellcheck disable=SC2206
ARGS+=(${PILOT_ARGS:-})

# the pilot itself: everything but ~25 s for packaging (its own plan keeps inside --total-budget-s)
LIMIT=$((T0 + TOTAL_S - 25 - $(date +%s)))
timeout -k 10 "$LIMIT" python3 -m zoo pilot --variant "$VARIANT" --data "$DATA" --out "$WORK" "${ARGS[@]}" 2>&1 \
  | grep -v '^\[.*\] step=[0-9]* loss=' | tee -a "$LOG"
RC=${PIPESTATUS[0]}
{ [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; } && echo "=== pilot: TIMEOUT after ${LIMIT}s (pilot.json has the sizes done)" | tee -a "$LOG"
echo "=== pilot: rc=$RC in $(($(date +%s) - T0))s" | tee -a "$LOG"

[ -f "$WORK/pilot.json" ] && cp "$WORK/pilot.json" "$OUT/pilot.json"
timeout -k 5 20 python3 -c "
import json, sys
from zoo.pilot import pack_outputs
print(json.dumps(pack_outputs(sys.argv[1], sys.argv[2])))" "$WORK" "$OUT" 2>&1 | tee -a "$LOG"
echo "=== \$OUT: $(ls "$OUT" | wc -l) files, $(du -sh "$OUT" | cut -f1); total $(($(date +%s) - T0))s" | tee -a "$LOG"
exit 0
