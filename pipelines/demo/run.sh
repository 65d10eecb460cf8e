#!/usr/bin/env bash
# The main job end to end on a generated dataset, from a fresh clone:
#   set-up -> synth (a raw Multiface-layout tree) -> ingest -> a summary of the store
#   -> face-region masks -> named splits -> statistics and a report -> verify
#   -> train stage 1 and stage 2 (a small config, a few minutes) -> evaluate on the test sentences
#   -> animate a held-out sentence from its WAV to MP4, and its evaluation view.
# Usage: bash pipelines/demo/run.sh [OUT_DIR]      (default: out/demo). Re-running resumes every step.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/bootstrap.sh
OUT=${1:-out/demo}
FACEDATA=.venv/bin/facedata
MESHTALK=.venv/bin/meshtalk
mkdir -p "$OUT"

SECONDS=0
step() { printf '\n\033[1m== [%dm%02ds] %s\033[0m\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

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

# Training: the `expressive` recipe (docs/training.md, "Recipe": the audio and expression encoders pre-trained on
# the mouth and the upper face and frozen, an information bonus, lr 1e-3, the upper face's crossing term in units of
# its motion) on a small model for short runs, so that the whole demo takes minutes on 2 CPU cores;
# the reference recipe collapses at this size and length. One torch thread: on 2 cores shared with a loader
# worker, two threads made a training step slower.
SMALL=(--set model.heads=4 --set model.classes=16 --set 'model.decoder_hidden=[128,64,32]'
       --set model.context_channels_per_head=16)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# train RUN ARGS...: continue RUN from its last.pt, or start it with ARGS.
train() {
    local run=$1
    shift
    if [ -f "$run/last.pt" ]; then $MESHTALK train --out "$run" --resume; else $MESHTALK train --out "$run" "$@"; fi
}

step "8. train stage 1: audio and expression pre-training, then stage 1, small config, 600 steps ($OUT/stage1)"
train "$OUT/stage1" --store "$OUT/store" --stage 1 --recipe expressive --set recipe.audio_pretrain_steps=100 \
    --steps 600 --batch-size 8 --frames 16 --workers 1 "${SMALL[@]}"

step "9. train stage 2: the context model on the frozen stage-1 codes, 300 steps ($OUT/stage2)"
train "$OUT/stage2" --store "$OUT/store" --stage 2 --recipe expressive --init-from "$OUT/stage1/last.pt" \
    --steps 300 --batch-size 8 --frames 32 --workers 1

step "10. evaluate on the test sentences of the sentence split (never seen in training)"
RESULT=$OUT/stage2/last.eval-sentence-test.json
$MESHTALK evaluate --store "$OUT/store" --checkpoint "$OUT/stage2/last.pt" --split test --smoothing --out "$RESULT"

step "11. animate a held-out sentence from its WAV ($OUT/animation), and its evaluation view"
# The first test sentence of the sentence split: its identity and sequence names.
read -r IDENTITY SEQUENCE < <(.venv/bin/python pipelines/test_sentence.py "$OUT/store" sentence)
WAV=$OUT/raw/$IDENTITY/audio/$SEQUENCE.wav
$MESHTALK animate --checkpoint "$OUT/stage2/last.pt" --audio "$WAV" --store "$OUT/store" --identity "$IDENTITY" \
    --out "$OUT/animation" --verbose
$MESHTALK render --compare --store "$OUT/store" --identity "$IDENTITY" --sequence "$SEQUENCE" \
    --checkpoint "$OUT/stage2/last.pt" --out "$OUT/evaluation-view.mp4"

printf '\nraw tree:    %s\nstore:       %s  (arrays in arrays.zarr/, manifests in manifests/)\n' "$OUT/raw" "$OUT/store"
printf 'masks:       %s  (previews in %s)\n' "$OUT/store/arrays.zarr/masks" "$OUT/store/previews/masks"
printf 'report:      %s  (open it in a browser; every number in report.json)\n' "$OUT/report/report.html"
printf 'stage 1:     %s  (log.jsonl and config.json beside it)\n' "$OUT/stage1/last.pt"
printf 'stage 2:     %s\n' "$OUT/stage2/last.pt"
printf 'metrics:     %s\n' "$RESULT"
printf 'animation:   %s  (%s, from %s)\n' "$OUT/animation/animation.mp4" "$SEQUENCE" "$WAV"
printf '             %s  (vertices, labels, faces)\n' "$OUT/animation/animation.npz"
printf 'evaluation:  %s  (ground truth | prediction | error)\n' "$OUT/evaluation-view.mp4"
# What the short training reached, from the evaluation's JSON (the template held still is 1.00x).
.venv/bin/python - "$RESULT" <<'EOF'
import json
import sys

result = json.load(open(sys.argv[1]))
ratios = result["relative_to_template"]
print(f"\nlip error (lve_max) on {len(result['sequences'])} held-out sentences, relative to the template held still:")
for path in ("reconstruction", "audio_argmax", "audio_sampled"):
    print(f"  {path:<15} {ratios[path]['lve_max']:.2f}x")
print("A short run on a small model: docs/training.md (\"Recipe\") shows what an hour of training reaches, and")
print("pipelines/learn/run.sh reproduces it.")
EOF
printf '\nall steps after set-up: %dm%02ds\n' $((SECONDS / 60)) $((SECONDS % 60))
