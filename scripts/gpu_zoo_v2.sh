#!/usr/bin/env bash
# Zoo v2 (issue 12): one device command of a training round. Trains the variants of $TRAIN at once (one
# process each: an H200 runs 2-3 of the 15m models side by side at ~1.2x the aggregate tokens/s of one),
# each the same $STEPS steps of the same data in the same order (seed 0, corpus hash $CORPUS_SHA256),
# then scores every evaluation checkpoint on the long held-out split with one evaluator's key tokens
# (zoo/longeval.py), and packages the checkpoints named in $RETURN plus every small record.
#
#   TRAIN=full,swa128,swa128_nope RETURN=full,swa128 bash scripts/gpu_zoo_v2.sh        # round A
#   RETURN=swa128_nope TRAIN=swa512,swa2048,mamba2 RETURN2=swa512 bash scripts/gpu_zoo_v2.sh
#   bash scripts/gpu_zoo_v2.sh --smoke                                                 # CPU dry run
#
# The work dir ($ZOO_WORK, default out/zoo_v2, git-ignored) survives between calls on a warm machine,
# so a call may return checkpoints that an earlier call trained (RETURN names any trained variant;
# the 64 MiB a call returns hold two xz'd 15m exports). Carry .whl (pydantic, README Notes) and .data/zoo.
# Key tokens: the first round computes them with zoo/$EVALUATOR (default full) and writes
# $ZOO_WORK/keys.npz (also returned); later rounds reuse it (on a cold machine carry it: KEYS=<path>).
# Returns under $OUT: ckpt_<v>.tar.xz.part-aa.. (cat the parts, `tar -xJf - -C precomputed`), and
# records_<round>.tar.gz: formation/train logs/summaries of every trained variant, plan.json files,
# longeval.json, keys.npz, the site manifest, the long held-out split's tokens and document list, logs.
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true

SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
T0=$(date +%s)
DATA="${ZOO_DATA:-.data/zoo}"
ROUND="${ROUND:-$(date +%H%M%S)}"
EVALUATOR="${EVALUATOR:-full}"
if [ "$SMOKE" -eq 1 ]; then
  OUT="${OUT:-$PWD/out/gpu_zoo_v2_smoke}"; WORK="${ZOO_WORK:-$PWD/out/zoo_v2_smoke}"
  SITE="${SITE_DATA:-$PWD/out/zoo_site_v2_smoke}"
  TRAIN="${TRAIN:-full,swa128}"; RETURN="${RETURN:-full}"
  TRAIN_ARGS=(--size smoke-15m --steps "${STEPS:-3}" --evals 2 --device cpu --max-docs 30 --workers 0
              --batch-size 2 --warmup-steps 1)
  SITE_ARGS=(--max-files 3 --workers 2 --longeval-min-tokens 300 --longeval-every 2)
  LE_ARGS=(--seq-len 256 --trunc-len 64 --stride 16 --device cpu --max-windows 4)
  TOTAL_S=${TOTAL_S:-900}
else
  OUT="${OUT:-$PWD/out/gpu_zoo_v2}"; WORK="${ZOO_WORK:-$PWD/out/zoo_v2}"; SITE="${SITE_DATA:-$PWD/out/zoo_site}"
  TRAIN="${TRAIN:-}"; RETURN="${RETURN:-}"
  # what rounds A-C trained every variant with (zoo_v2_exports/README.md): pinned, so that no trainer default
  # change gives a later variant other data (the synthetic mix is part of the token stream)
  TRAIN_ARGS=(--size 15m --steps "${STEPS:-2800}" --evals "${EVALS:-7}" --compile --linear-backend chunked
              --lr 2e-3 --warmup-steps 30 --synthetic-frac 0.08 --synthetic-long-frac 0 --synthetic-parts 1 --seed 0)
  CORPUS_SHA256="${CORPUS_SHA256:-a66651d5d0a64b99e4cb2ee2ea652c593a11682a355994d3542df4110150f5a5}"
  SITE_ARGS=()
  LE_ARGS=()
  TOTAL_S=${TOTAL_S:-580}
fi
TRAIN_ARGS+=(--keep-checkpoints 16)
[ -n "${CORPUS_SHA256:-}" ] && TRAIN_ARGS+=(--corpus-sha256 "$CORPUS_SHA256")
DEADLINE=$((T0 + TOTAL_S))
LOGS="$WORK/logs"
mkdir -p "$OUT" "$LOGS"
left() { echo $((DEADLINE - $(date +%s))); }
{
  echo "round $ROUND date $(date -u +%FT%TZ) smoke=$SMOKE train=$TRAIN return=$RETURN steps=${STEPS:-default}"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null) $(git status --porcelain 2>/dev/null | wc -l) changed files"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__)" 2>&1
} | tee -a "$LOGS/env_$ROUND.txt"

if [ "$SMOKE" -eq 0 ] && ls .whl/*.whl >/dev/null 2>&1 && [ ! -d /tmp/site/pydantic ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$LOGS/pip.log" 2>&1 || echo "pip wheels: FAILED (logs/pip.log)"
fi
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}

if [ ! -f "$SITE/manifest.json" ] || [ ! -f "$SITE/longeval_tokens.npy" ]; then
  echo "=== corpus ($(left)s left)"
  timeout -k 5 240 python3 -m zoo build-data --sources site --base "$DATA" --out "$SITE" "${SITE_ARGS[@]}" \
    > "$LOGS/corpus.log" 2>&1 || { echo "corpus build FAILED"; tail -20 "$LOGS/corpus.log"; }
fi
python3 -c "import json,sys; m=json.load(open(sys.argv[1])); t=m['train_tokens']; l=m['longeval']; print('corpus:', t['tokens'], 'tokens sha256', t['sha256'], '| longeval', l['docs'], 'docs', l['tokens'], 'tokens')" "$SITE/manifest.json"

TRAINED=()
if [ -n "$TRAIN" ]; then
  cap=$(( $(left) - ${RESERVE_S:-75} ))
  echo "=== train $TRAIN concurrently (cap ${cap}s)"
  pids=()
  for v in ${TRAIN//,/ }; do
    timeout -k 10 "$cap" python3 -m zoo train-all --data "$SITE" --out "$WORK/$v" --variants "$v" "${TRAIN_ARGS[@]}" \
      > "$LOGS/train_$v.log" 2>&1 &
    pids+=($!)
    TRAINED+=("$v")
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}"; rc=$?
    v=${TRAINED[$i]}
    echo "--- $v: rc=$rc $(grep -E '^\[train\]' "$LOGS/train_$v.log" | tail -1)"
    grep -E 'Traceback|Error' "$LOGS/train_$v.log" | tail -3
  done
  echo "=== trained at $(( $(date +%s) - T0 ))s"
fi

ROOTS=()
for v in "${TRAINED[@]}"; do [ -f "$WORK/$v/zoo/$v/config.json" ] && ROOTS+=("$WORK/$v"); done
if [ ${#ROOTS[@]} -gt 0 ]; then
  KEYS="${KEYS:-$WORK/keys.npz}"
  if [ -f "$KEYS" ]; then KARGS=(--keys "$KEYS"); else KARGS=(--evaluator "$WORK/$EVALUATOR/zoo/$EVALUATOR" --keys-out "$KEYS"); fi
  echo "=== longeval ${ROOTS[*]} (${KARGS[*]}; $(left)s left)"
  timeout -k 5 $(( $(left) - 25 )) python3 -m zoo longeval --data "$SITE" --roots "${ROOTS[@]}" \
    --out "$WORK/longeval_$ROUND.json" "${KARGS[@]}" "${LE_ARGS[@]}" > "$LOGS/longeval_$ROUND.log" 2>&1
  echo "longeval rc=$?"; grep -E '^\[longeval\]|Error' "$LOGS/longeval_$ROUND.log" | tail -30
fi

for v in ${RETURN//,/ }; do
  d="$WORK/$v/zoo/$v"
  [ -f "$d/config.json" ] || { echo "RETURN $v: no export at $d"; continue; }
  if [ "$v" = "full" ] && [ -d "$d/qk" ]; then  # the hybrids' full-attention positions only (4x smaller)
    python3 -c "import sys; from zoo.qk import keep_layers; from pathlib import Path; print('qk points kept:', keep_layers(Path(sys.argv[1]), [3, 7]))" "$d/qk"
  fi
  tar -cf - -C "$WORK/$v" "zoo/$v" | xz -T0 -6 | split -b 15m - "$OUT/ckpt_$v.tar.xz.part-"
done
# records: small files of every variant in the work dir (not only this round's)
(cd "$WORK" && tar -czf "$OUT/records_$ROUND.tar.gz" --exclude='checkpoints' --exclude='cache' \
   $(ls -d */runs/*/formation.json */runs/*/train_log.jsonl */runs/*/summary.json */plan.json \
     */train_summary.json longeval_*.json keys.npz logs 2>/dev/null))
tar -czf "$OUT/site_$ROUND.tar.gz" -C "$SITE" manifest.json longeval_tokens.npy longeval_doc_ends.npy longeval_docs.json
ls -la "$OUT"; echo "=== done in $(( $(date +%s) - T0 ))s"
