#!/usr/bin/env bash
# The zoo in one device command: train the seven variants, precompute their traces, package them.
#
#   bash scripts/gpu_zoo.sh            # on the device; carry .whl and .data/zoo (both git-ignored;
#                                      # .whl/zoo/ holds pydantic wheels for cp312: the image lacks it)
#   bash scripts/gpu_zoo.sh --smoke    # CPU dry run of the same plumbing: 2 tiny variants, 4 steps each
#   bash scripts/gpu_zoo.sh precompute report package   # only some phases (train precompute report package)
#   INIT_FROM=out/stage1 SYNTHETIC_FRAC=0.25 bash scripts/gpu_zoo.sh   # a second stage on an earlier zoo root
#   COMPILE=1 bash scripts/gpu_zoo.sh                                  # torch.compile the models
#   SIZE=5m VARIANTS=full,swa128 STEPS=6000 COMPILE=1 bash scripts/gpu_zoo.sh   # a zoo v2 round
#   SIZE=smoke-5m VARIANTS=swa128,mamba2 bash scripts/gpu_zoo.sh --smoke        # its CPU dry run
#
# Zoo v2 (issue 12; benchmarks/RESULTS.md "Zoo v2: the plan"): SIZE=5m|10m|15m picks the v2 variants
# (precompute then runs with --generation v2: LongPPL at trunc_len 1024 on chunked held-out documents),
# VARIANTS the round's subset, STEPS the equal step count of every round (instead of the time-budget
# plan; the same seed gives every variant the same tokens in the same order, whichever round trains
# it), SYNTHETIC_FRAC / SYNTHETIC_LONG_FRAC / SYNTHETIC_PARTS (v2: 0.25 / 0.5 / 16), WARMUP, SCHEDULE_TOTAL
# (with INIT_FROM: one LR schedule over stages). EVALUATOR=zoo/<name> names the LongPPL evaluator;
# EVALUATOR_DIR=<carried export> is copied to $ZOO_WORK/zoo/<its name> first (a round that does not
# train the evaluator carries it: 10.8 MB at 5m). Precompute needs pydantic: carry .whl (README Notes).
#
# Corpus: CORPUS=site (the default for v2 sizes) first builds the site corpus (zoo/site_corpus.py: the
# carried $ZOO_DATA, default .data/zoo, extended with every allowed installed source of the device; same
# tokenizer and val/test) into $SITE_DATA (default out/zoo_site; reused when its manifest is there) and
# trains on it; CORPUS=bundled (the v1 default) trains on $ZOO_DATA itself. CORPUS_SHA256=<hex> makes
# training refuse any other token stream (name round 1's hash, from its plan.json, in every later round).
#
# Work dir $ZOO_WORK (default out/zoo_work; git-ignored, kept on a warm machine, so a rerun resumes:
# finished variants are skipped, unfinished ones continue from their last checkpoint).
# $OUT receives at most 8 files (zoo/package.py): zoo_<variant>.tar.gz (final bf16 checkpoint
# + tokenizer + README.md card; two variants per archive if needed) and zoo_traces.tar.gz (store/,
# data/, formation.json, plans, summaries, training logs and this script's logs; split by run if over
# 16 MiB). Extract them all into precomputed/.
# Never stops early: each phase runs under its own hard timeout inside an overall deadline
# (TOTAL_S, default 575 s), its exit code is recorded, and a summary is printed at the end.
# Budgets (seconds, env): TRAIN_S=390 (train-all plans equal steps for all variants to end within
# it, compile and calibration included; MAX_TOKENS=120e6 caps the tokens per variant, ~8 epochs of
# the 15M-token corpus; LINEAR_BACKEND=chunked picks the recurrent kernels), PRE_S=110 (precompute
# skips what is left after it), TOTAL_S=575 (the device allows
# 600 s per command).
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

SMOKE=0
PHASES=()
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    train|precompute|report|package) PHASES+=("$arg") ;;
    *) echo "unknown argument: $arg (phases: train precompute report package; or --smoke)" >&2; exit 2 ;;
  esac
done
[ ${#PHASES[@]} -eq 0 ] && PHASES=(train precompute report package)

if [ "$SMOKE" -eq 1 ]; then
  OUT="${OUT:-$PWD/out/gpu_zoo_smoke}"
  WORK="${ZOO_WORK:-$PWD/out/zoo_work_smoke}"
  DATA="${ZOO_DATA:-.data/zoo}"
  TOTAL_S=${TOTAL_S:-900}; TRAIN_S=${TRAIN_S:-400}; PRE_S=${PRE_S:-300}
  VARIANTS="${VARIANTS:-swa64,mamba2}"
  TRAIN_ARGS=(--size "${SIZE:-smoke}" --steps "${STEPS:-4}" --max-docs 30 --evals 2 --device cpu)
  PRE_ARGS=(--smoke)
else
  OUT="${OUT:-$PWD/out/gpu_zoo}"
  WORK="${ZOO_WORK:-$PWD/out/zoo_work}"
  DATA="${ZOO_DATA:-.data/zoo}"
  TOTAL_S=${TOTAL_S:-575}; TRAIN_S=${TRAIN_S:-390}; PRE_S=${PRE_S:-110}
  # LINEAR_BACKEND=chunked (default): the torch chunked Mamba-2 / GDN paths train at 77 / 114 ms per step
  # (benchmarks/RESULTS.md); fla 0.6.0's backward refuses or fails to compile with triton 3.6 on Hopper,
  # and each failed attempt costs its compile time. "auto" tries fla first (then falls back).
  TRAIN_ARGS=(--size "${SIZE:-zoo}" --linear-backend "${LINEAR_BACKEND:-chunked}")
  if [ -n "${STEPS:-}" ]; then
    TRAIN_ARGS+=(--steps "$STEPS")
  else
    TRAIN_ARGS+=(--total-budget-s "$TRAIN_S" --max-tokens "${MAX_TOKENS:-120e6}")
  fi
  PRE_ARGS=()
fi
case "${SIZE:-zoo}" in zoo|smoke) CORPUS="${CORPUS:-bundled}" ;; *) PRE_ARGS+=(--generation v2); CORPUS="${CORPUS:-site}" ;; esac
SITE_ARGS=()
if [ "$SMOKE" -eq 1 ]; then  # a few files per source: the plumbing only
  SITE_DATA="${SITE_DATA:-$PWD/out/zoo_site_smoke}"; SITE_ARGS=(--max-files "${SITE_MAX_FILES:-2}" --workers 2)
fi
SITE_DATA="${SITE_DATA:-$PWD/out/zoo_site}"
[ -n "${CORPUS_SHA256:-}" ] && TRAIN_ARGS+=(--corpus-sha256 "$CORPUS_SHA256")
if [ -n "${VARIANTS:-}" ]; then TRAIN_ARGS+=(--variants "$VARIANTS"); PRE_ARGS+=(--variants "$VARIANTS"); fi
[ -n "${EVALUATOR:-}" ] && PRE_ARGS+=(--evaluator "$EVALUATOR")
[ -n "${SYNTHETIC_LONG_FRAC:-}" ] && TRAIN_ARGS+=(--synthetic-long-frac "$SYNTHETIC_LONG_FRAC")
[ -n "${SYNTHETIC_PARTS:-}" ] && TRAIN_ARGS+=(--synthetic-parts "$SYNTHETIC_PARTS")
[ -n "${WARMUP:-}" ] && TRAIN_ARGS+=(--warmup-steps "$WARMUP")
[ -n "${SCHEDULE_TOTAL:-}" ] && TRAIN_ARGS+=(--schedule-total "$SCHEDULE_TOTAL")
# INIT_FROM=<zoo root>: continue training from that root's exports (its train_summary.json and
# formation.json come along); SYNTHETIC_FRAC / LR override the trainer's defaults (0.08 / 2e-3)
[ -n "${INIT_FROM:-}" ] && TRAIN_ARGS+=(--init-from "$INIT_FROM")
[ -n "${SYNTHETIC_FRAC:-}" ] && TRAIN_ARGS+=(--synthetic-frac "$SYNTHETIC_FRAC")
[ -n "${LR:-}" ] && TRAIN_ARGS+=(--lr "$LR")
# COMPILE=1: torch.compile every variant (2.9x faster steps for an attention variant on an H100, ~50 s
# to compile each; GDN's chunked path took over 60 s: benchmarks/RESULTS.md); off by default
[ "${COMPILE:-0}" = "1" ] && TRAIN_ARGS+=(--compile)
mkdir -p "$OUT" "$WORK/logs"
LOGS="$WORK/logs"
T0=$(date +%s)
DEADLINE=$((T0 + TOTAL_S))
SUMMARY=()

step() {  # step NAME CAP_SECONDS CMD... : run under min(CAP, time left - 15), log to $LOGS/NAME.log
  local name=$1 cap=$2
  shift 2
  local left=$((DEADLINE - $(date +%s) - 15))
  local limit=$((cap < left ? cap : left))
  if [ "$limit" -lt 10 ]; then
    echo "=== $name: SKIPPED (only ${left}s left of the overall budget)" | tee -a "$LOGS/$name.log"
    SUMMARY+=("$name: SKIPPED (overall budget)")
    return
  fi
  echo "=== $name (limit ${limit}s): $*" | tee -a "$LOGS/$name.log"
  local start=$(date +%s)
  timeout -k 10 "$limit" "$@" >> "$LOGS/$name.log" 2>&1
  local rc=$?
  local dur=$(($(date +%s) - start))
  local what="rc=$rc"
  { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && what="rc=$rc (TIMEOUT after ${limit}s)"
  grep -E '^\[(train-all|calibrate|precompute)\]|Error|error:|Traceback' "$LOGS/$name.log" | tail -n 12
  echo "=== $name: $what in ${dur}s" | tee -a "$LOGS/$name.log"
  SUMMARY+=("$name: $what, ${dur}s")
}

{
  echo "date: $(date -u +%FT%TZ)  smoke=$SMOKE  phases=${PHASES[*]}"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null) $(git status --porcelain 2>/dev/null | wc -l) changed files"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__)" 2>&1
  echo "data: $DATA ($(ls "$DATA" 2>/dev/null | tr '\n' ' '))"
} > "$LOGS/env.txt" 2>&1
cat "$LOGS/env.txt"

if [ "$SMOKE" -eq 0 ]; then
  # .whl/*.whl: fla (+ einops); .whl/zoo/*.whl: pydantic for the runner (absent from the device image)
  if ls .whl/*.whl >/dev/null 2>&1; then
    if python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl \
        $(ls .whl/zoo/*.whl 2>/dev/null) > "$LOGS/pip.log" 2>&1; then
      export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
      SUMMARY+=("pip wheels: ok")
    else
      SUMMARY+=("pip wheels: FAILED (see logs/pip.log); recurrent mixers use the torch chunked path")
    fi
  else
    SUMMARY+=("pip wheels: no .whl directory (carry it); torch chunked recurrences, no precompute")
  fi
  python3 -c "import fla; print('fla', fla.__version__)" >> "$LOGS/env.txt" 2>&1 || echo "fla: import failed" >> "$LOGS/env.txt"
  python3 -c "import pydantic; print('pydantic', pydantic.VERSION)" >> "$LOGS/env.txt" 2>&1 \
    || { echo "pydantic: import failed" >> "$LOGS/env.txt"; SUMMARY+=("pydantic missing: precompute will fail"); }
  tail -2 "$LOGS/env.txt"
fi

variants_done() {  # how many variants have a final export
  ls -d "$WORK"/zoo/*/config.json 2>/dev/null | wc -l
}

if [ "$CORPUS" = "site" ] && [[ " ${PHASES[*]} " == *" train "* ]]; then
  if [ ! -f "$SITE_DATA/manifest.json" ]; then
    step corpus "${SITE_S:-240}" python3 -m zoo build-data --sources site --base "$DATA" --out "$SITE_DATA" "${SITE_ARGS[@]}"
  fi
  if [ -f "$SITE_DATA/manifest.json" ]; then
    cp "$SITE_DATA/manifest.json" "$LOGS/site_manifest.json"
    SUMMARY+=("corpus: site $(python3 -c "import json,sys; t=json.load(open(sys.argv[1])); print(t['train_tokens']['tokens'], 'tokens, sha256', t['train_tokens']['sha256'], 'built in', t['seconds']['total'], 's')" "$SITE_DATA/manifest.json")")
    DATA="$SITE_DATA"
  else
    SUMMARY+=("corpus: site build FAILED (logs/corpus.log); not training")
    PHASES=("${PHASES[@]/train}")
  fi
fi

for p in "${PHASES[@]}"; do
  case "$p" in
    train)
      step train $((TRAIN_S + 45)) python3 -m zoo train-all --data "$DATA" --out "$WORK" "${TRAIN_ARGS[@]}"
      want=7; [ -n "${VARIANTS:-}" ] && want=$(echo "$VARIANTS" | tr ',' '\n' | grep -c .)
      if [ "$(variants_done)" -lt "$want" ]; then  # a crash (not a planned stop): resume the rest once
        left=$((DEADLINE - $(date +%s) - PRE_S - 40))
        if [ "$left" -gt 60 ]; then
          step train_retry "$left" python3 -m zoo train-all --data "$DATA" --out "$WORK" "${TRAIN_ARGS[@]}"
        fi
      fi
      SUMMARY+=("variants exported: $(variants_done)")
      ;;
    precompute)  # its own budget shrinks to what the deadline leaves (minus time for the last run)
      if [ -n "${EVALUATOR_DIR:-}" ] && [ ! -e "$WORK/zoo/$(basename "$EVALUATOR_DIR")" ]; then
        mkdir -p "$WORK/zoo" && cp -r "$EVALUATOR_DIR" "$WORK/zoo/"
      fi
      left=$((DEADLINE - $(date +%s) - 60))
      pre=$((PRE_S < left ? PRE_S : left))
      step precompute $((pre + 40)) python3 -m zoo precompute --root "$WORK" --data "$DATA" \
        --budget-s "$((pre > 10 ? pre : 10))" "${PRE_ARGS[@]}"
      ;;
    package)
      {
        echo "==== summary so far ($(($(date +%s) - T0))s)"
        for line in "${SUMMARY[@]}"; do echo "  $line"; done
      } > "$LOGS/summary.txt"
      if ! timeout -k 5 120 python3 -m zoo package --root "$WORK" --dest "$OUT" > "$LOGS/package.log" 2>&1; then
        echo "python packager failed (see logs/package.log); falling back to plain tar" | tee -a "$LOGS/package.log"
        rm -f "$OUT"/zoo_*.tar.gz
        for d in "$WORK"/zoo/*/; do
          [ -f "$d/config.json" ] && tar -czf "$OUT/zoo_$(basename "$d").tar.gz" -C "$WORK" "zoo/$(basename "$d")"
        done
        tar -czf "$OUT/zoo_traces.tar.gz" --exclude=locks -C "$WORK" store data formation.json logs 2>/dev/null
      fi
      while read -r line; do SUMMARY+=("$line"); done < <(grep -E 'MiB|WARNING' "$LOGS/package.log")
      SUMMARY+=("\$OUT: $(ls "$OUT" | wc -l) files, $(du -sh "$OUT" | cut -f1) total")
      ;;
    report)
      python3 -m zoo report --root "$WORK" 2>&1 | grep -v '^{\|^}\|^  "' | tee "$LOGS/report.txt"
      ;;
  esac
done

{
  echo "==== summary ($(($(date +%s) - T0))s total)"
  for line in "${SUMMARY[@]}"; do echo "  $line"; done
} | tee "$LOGS/summary.txt"
exit 0
