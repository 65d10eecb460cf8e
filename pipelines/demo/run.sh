#!/usr/bin/env bash
# The main job end to end on a generated dataset, from a fresh clone:
#   set-up -> synth (a raw Multiface-layout tree) -> ingest -> a summary of the store.
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

printf '\nraw tree:  %s\nstore:     %s  (arrays in arrays.zarr/, manifests in manifests/)\n' "$OUT/raw" "$OUT/store"
