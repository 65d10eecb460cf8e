#!/usr/bin/env bash
# The main job end to end on a generated dataset, from a fresh clone:
#   set-up -> synth (a raw Multiface-layout tree) -> ingest -> a summary of the store
#   -> face-region masks -> named splits -> statistics and a report -> verify.
# Usage: bash pipelines/demo/run.sh [OUT_DIR]      (default: out/demo)
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/bootstrap.sh
OUT=${1:-out/demo}
FACEDATA=.venv/bin/facedata
mkdir -p "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. generate a raw tree in the Multiface layout ($OUT/raw)"
[ -d "$OUT/raw" ] || $FACEDATA synth "$OUT/raw" --identities 3 --sentences 12 --seconds 3 --seed 0 --obj-every 30

step "2. ingest it into a store ($OUT/store)"
$FACEDATA ingest "$OUT/raw" --store "$OUT/store" --workers 2

step "3. what the store holds"
$FACEDATA info --store "$OUT/store"

step "4. face-region masks from the mean template (previews in $OUT/store/previews/masks)"
$FACEDATA build-masks --store "$OUT/store"

step "5. named splits (sentence, identity, facediffuser)"
$FACEDATA split --store "$OUT/store"

step "6. statistics, the training vertex mean and std, and the report ($OUT/report)"
$FACEDATA stats --store "$OUT/store" --report "$OUT/report"

step "7. verify every array against the manifests"
$FACEDATA verify --store "$OUT/store"

printf '\nraw tree:  %s\nstore:     %s  (arrays in arrays.zarr/, manifests in manifests/)\n' "$OUT/raw" "$OUT/store"
printf 'masks:     %s  (previews in %s)\n' "$OUT/store/arrays.zarr/masks" "$OUT/store/previews/masks"
printf 'report:    %s  (open it in a browser; every number in report.json)\n' "$OUT/report/report.html"
