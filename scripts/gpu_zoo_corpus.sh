#!/usr/bin/env bash
# Build the zoo v2 site corpus on the device and report it (issue 12), optionally then a short training
# check on it, in ONE device command of <= 9 minutes. Carry only .data/zoo.
#
#   bash scripts/gpu_zoo_corpus.sh            # on the device
#   bash scripts/gpu_zoo_corpus.sh --smoke    # CPU dry run (2 files per source, 2 workers, tiny pilot)
#
# 1. python -m zoo build-data --sources site --base .data/zoo --out $SITE_DATA (default out/zoo_site):
#    $OUT/site_manifest.json (every source: version, licence, files, docs, tokens, exclusions; the stream's
#    token count and sha256; build seconds) and $OUT/corpus.txt (summary, wall time, peak memory).
# 2. RELAXED=1 (default): the same with --min-bytes 500 --max-bytes 1000000 into $SITE_DATA-relaxed, to
#    show what the size knobs add ($OUT/site_manifest_relaxed.json); RELAXED=0 skips it.
# 3. TRAIN_STEPS=N (default 300; 0 skips): scripts/gpu_zoo_pilot.sh on the corpus of step 1 with
#    PILOT_VARIANT=swa128 PILOT_SIZES=15m PILOT_STEPS=N (pilot.json, pilot.log, archives under $OUT).
set -u -o pipefail
cd "$(dirname "$0")/.."
SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
T0=$(date +%s)
TOTAL_S=${TOTAL_S:-540}
if [ "$SMOKE" -eq 1 ]; then
  OUT="${OUT:-$PWD/out/gpu_zoo_corpus_smoke}"; SITE_DATA="${SITE_DATA:-$PWD/out/zoo_site_smoke}"
  EXTRA=(--max-files 2 --workers 2)
else
  OUT="${OUT:-$PWD/out/gpu_zoo_corpus}"; SITE_DATA="${SITE_DATA:-$PWD/out/zoo_site}"
  EXTRA=()
fi
mkdir -p "$OUT"
REPORT="$OUT/corpus.txt"
{
  echo "date: $(date -u +%FT%TZ)  smoke=$SMOKE  cpus: $(nproc)  git: $(git rev-parse --short HEAD 2>/dev/null)"
  python3 -c "import sys, tokenizers; print('python', sys.version.split()[0], 'tokenizers', tokenizers.__version__)"
  df -h . | tail -1; free -g | head -2
} 2>&1 | tee "$REPORT"

build() {  # build NAME DIR ARGS...: one site build, timed, its manifest to $OUT/site_manifest<NAME>.json
  local name=$1 dir=$2
  shift 2
  local start=$(date +%s)
  rm -rf "$dir"
  echo "=== build$name: python3 -m zoo build-data --sources site --base .data/zoo --out $dir $*" | tee -a "$REPORT"
  local timer=()
  [ -x /usr/bin/time ] && timer=(/usr/bin/time -f "wall %e s, user %U s, sys %S s, peak RSS %M KB")
  "${timer[@]}" timeout -k 10 "${SITE_S:-240}" python3 -m zoo build-data --sources site --base .data/zoo --out "$dir" "$@" \
    > "$OUT/build$name.json" 2>> "$REPORT"
  echo "=== build$name: rc=$? in $(($(date +%s) - start)) s; $(du -sh "$dir" 2>/dev/null | cut -f1) on disk" | tee -a "$REPORT"
  [ -f "$dir/manifest.json" ] && cp "$dir/manifest.json" "$OUT/site_manifest$name.json"
  cat "$OUT/build$name.json" | tee -a "$REPORT"
}

build "" "$SITE_DATA" "${EXTRA[@]}"
[ "${RELAXED:-1}" = "1" ] && build "_relaxed" "$SITE_DATA-relaxed" --min-bytes 500 --max-bytes 1000000 "${EXTRA[@]}"
rm -rf "$SITE_DATA-relaxed"

STEPS=${TRAIN_STEPS:-300}
LEFT=$((T0 + TOTAL_S - $(date +%s)))
if [ "$STEPS" -gt 0 ] && [ -f "$SITE_DATA/manifest.json" ] && [ "$LEFT" -gt 150 ]; then
  echo "=== training check: swa128 at 15m, $STEPS steps on the site corpus (${LEFT} s left)" | tee -a "$REPORT"
  if [ "$SMOKE" -eq 1 ]; then
    OUT="$OUT" SITE_DATA="$SITE_DATA" PILOT_VARIANT=swa128 bash scripts/gpu_zoo_pilot.sh --smoke 2>&1 | tail -n 20
  else
    OUT="$OUT" SITE_DATA="$SITE_DATA" CORPUS=site PILOT_VARIANT=swa128 PILOT_SIZES=15m PILOT_STEPS="$STEPS" \
      TOTAL_S=$((LEFT - 10)) bash scripts/gpu_zoo_pilot.sh 2>&1 | grep -v '^\[.*\] step=' | tail -n 40
  fi
else
  echo "=== training check skipped (TRAIN_STEPS=$STEPS, ${LEFT} s left)" | tee -a "$REPORT"
fi
echo "=== total $(($(date +%s) - T0)) s; \$OUT: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$REPORT"
exit 0
