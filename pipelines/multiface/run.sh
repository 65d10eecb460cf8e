#!/usr/bin/env bash
# The recipe for the real Multiface corpus, from its raw tree to an animated test sentence:
#   set-up -> ingest (worker processes) -> face-region masks -> named splits -> statistics and report -> verify
#   -> train stage 1 and stage 2 (the released config, the FaceDiffuser split) -> evaluate on its test subset
#   -> animate one test sentence from its WAV, and its evaluation view.
# Usage: bash pipelines/multiface/run.sh RAW_PATH [OUT_DIR]        (default OUT_DIR: out/multiface)
# Every step resumes: after an interruption, run the same command again. Steps, sizes and times: docs/tutorial.md.
# Environment: WORKERS (ingest processes; default the CPU count), STEPS1 and STEPS2 (optimiser steps; default the
# reference's 50000 and 15000), DEVICE (auto, cpu, cuda), TRAIN_WORKERS (data loader processes, 2).
set -euo pipefail
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: bash pipelines/multiface/run.sh RAW_PATH [OUT_DIR]  (RAW_PATH: the folder of m--...--GHS identities)" >&2
    exit 2
fi
RAW=$(cd "$1" && pwd)
mkdir -p "${2:-out/multiface}"
OUT=$(cd "${2:-out/multiface}" && pwd)
cd "$(dirname "$0")/../.."
bash scripts/bootstrap.sh
FACEDATA=.venv/bin/facedata
MESHTALK=.venv/bin/meshtalk
STORE=$OUT/store
WORKERS=${WORKERS:-$(nproc)}
TRAIN=(--split facediffuser --preset meshtalk --device "${DEVICE:-auto}" --workers "${TRAIN_WORKERS:-2}")

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# train RUN STEPS ARGS...: continue RUN from its last.pt (with STEPS if set), or start it with ARGS.
train() {
    local run=$1 steps=$2
    shift 2
    local more=()
    [ -n "$steps" ] && more=(--steps "$steps")
    if [ -f "$run/last.pt" ]; then
        $MESHTALK train --out "$run" --resume "${more[@]}"
    else
        $MESHTALK train --out "$run" "$@" "${more[@]}"
    fi
}

step "1. ingest $RAW into $STORE ($WORKERS workers; complete sequences are skipped on a re-run)"
$FACEDATA ingest "$RAW" --store "$STORE" --workers "$WORKERS"
$FACEDATA info --store "$STORE"

step "2. face-region masks (previews in $STORE/previews/masks)"
if [ -f "$STORE/arrays.zarr/masks/zarr.json" ]; then echo "masks present: kept"; else
    $FACEDATA build-masks --store "$STORE"; fi

step "3. named splits (sentence, identity, facediffuser)"
if [ -f "$STORE/manifests/splits.json" ]; then echo "splits present: kept"; else
    $FACEDATA split --store "$STORE"; fi

step "4. statistics, the training vertex mean and std, and the report ($OUT/report)"
if [ -f "$OUT/report/report.json" ]; then echo "report present: kept"; else
    $FACEDATA stats --store "$STORE" --report "$OUT/report"; fi

step "5. verify every array against the manifests"
$FACEDATA verify --store "$STORE"

step "6. train stage 1: encoder and decoder, released config, FaceDiffuser training sentences ($OUT/stage1)"
train "$OUT/stage1" "${STEPS1:-}" --store "$STORE" --stage 1 "${TRAIN[@]}"

step "7. train stage 2: the context model on the frozen stage-1 codes ($OUT/stage2)"
train "$OUT/stage2" "${STEPS2:-}" --store "$STORE" --stage 2 --init-from "$OUT/stage1/last.pt" "${TRAIN[@]}"

step "8. evaluate on the FaceDiffuser test subset (held-out identities, sentences 46-50)"
RESULT=$OUT/stage2/last.eval-facediffuser-test.json
if [ -f "$RESULT" ] && [ "$RESULT" -nt "$OUT/stage2/last.pt" ]; then echo "result present: $RESULT"; else
    $MESHTALK evaluate --store "$STORE" --checkpoint "$OUT/stage2/last.pt" --split facediffuser/test --smoothing \
        --device "${DEVICE:-auto}" --out "$RESULT"; fi

step "9. animate a test sentence from its WAV, and its evaluation view"
# The first test sentence of the FaceDiffuser split: identity and sequence names.
read -r IDENTITY SEQUENCE < <(.venv/bin/python pipelines/test_sentence.py "$STORE" facediffuser)
WAV=$RAW/$IDENTITY/audio/$SEQUENCE.wav
if [ -f "$OUT/animation/animation.mp4" ]; then echo "animation present: kept"; else
    $MESHTALK animate --checkpoint "$OUT/stage2/last.pt" --audio "$WAV" --store "$STORE" --identity "$IDENTITY" \
        --out "$OUT/animation" --verbose; fi
if [ -f "$OUT/evaluation-view.mp4" ]; then echo "evaluation view present: kept"; else
    $MESHTALK render --compare --store "$STORE" --identity "$IDENTITY" --sequence "$SEQUENCE" \
        --checkpoint "$OUT/stage2/last.pt" --out "$OUT/evaluation-view.mp4"; fi

printf '\nstore:      %s  (arrays in arrays.zarr/, manifests in manifests/, mask previews in previews/masks/)\n' "$STORE"
printf 'report:     %s  (every number in report.json)\n' "$OUT/report/report.html"
printf 'stage 1:    %s  (log.jsonl, config.json, checkpoints/)\n' "$OUT/stage1/last.pt"
printf 'stage 2:    %s\n' "$OUT/stage2/last.pt"
printf 'metrics:    %s\n' "$RESULT"
printf 'animation:  %s  (%s from %s)\n' "$OUT/animation/animation.mp4" "$SEQUENCE" "$WAV"
printf '            %s  (vertices, labels, faces; read with meshtalk.animate.read_animation)\n' \
    "$OUT/animation/animation.npz"
printf 'evaluation: %s  (ground truth | prediction | error)\n' "$OUT/evaluation-view.mp4"
