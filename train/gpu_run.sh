#!/usr/bin/env bash
# The full training run on one GPU, from scratch, in under 15 minutes of wall time; then the export.
#
#   train/gpu_run.sh [OUT]                  # OUT defaults to runs/gpu; the model lands in OUT/tang-lstm
#   DEVICE=cpu BUDGET=20 LIMIT=600 train/gpu_run.sh runs/smoke   # a tiny smoke run on a CPU
#   DROPOUT=0.3 EXPORT=0 train/gpu_run.sh runs/gpu-d0.3            # another dropout; export elsewhere
#
# It needs only the repository and the raw corpus (../shared/data/chinese-poetry): data/tang.npz is
# built when missing. Run it again after an interruption and it resumes from OUT/last, losing at most
# one checkpoint interval (CHECKPOINT_S seconds of training). The recipe is the shipped model's
# (train/README: Train), on the de-duplicated split, with titles; BUDGET is seconds of training steps,
# and the cosine schedule follows it, so a faster GPU trains more epochs, never longer.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-720}          # 12 min of steps + evaluation and start-up stay under 15 min
CHECKPOINT_S=${CHECKPOINT_S:-60}
LIMIT=${LIMIT:-0}
DATA=${DATA:-data/tang.npz}
DROPOUT=${DROPOUT:-0.1}
EXPORT=${EXPORT:-1}            # 0: stop after training (export and evaluate later, e.g. on a CPU)

if [ ! -f "$DATA" ]; then
    python -m train.prepare --source ../shared/data/chinese-poetry/tang --out "$DATA"
fi
RESUME=()
if [ -f "$OUT/last/trainer_state.json" ] || [ -f "$OUT/last.old/trainer_state.json" ]; then
    RESUME=(--resume)
fi
python -m train.train --data "$DATA" --out "$OUT" --device "$DEVICE" "${RESUME[@]}" \
    --embedding-dim 256 --hidden-dim 384 --softmax-cutoffs 2000,5000 --dropout "$DROPOUT" \
    --titles --title-dropout 0.5 --split dedup \
    --lr 3e-3 --schedule cosine_time --warmup-steps 300 --batch-size 128 --epochs 1000 \
    --time-budget "$BUDGET" --checkpoint-seconds "$CHECKPOINT_S" --limit-poems "$LIMIT" --precision auto
[ "$EXPORT" = 1 ] || exit 0
python -m train.export --model "$OUT/best" --data "$DATA" --out "$OUT/tang-lstm"
python -m train.evaluate --model "$OUT/tang-lstm" --data "$DATA" --lm-only --limit-poems "$LIMIT" \
    --out "$OUT/eval" --device "$DEVICE"
