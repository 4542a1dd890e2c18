#!/usr/bin/env bash
# Honest pseudo-label CV: per fold k, teacher_k = the plain run on the other folds;
# teacher_k (and only it: it never saw fold k's validation rows) pseudo-labels the pool;
# student_k = the same config on fold k's training rows + the pool (leak guard on).
# Then: python scripts/compare_runs.py --a OUT/teacher_f* --b OUT/student_f*
#
#   bash scripts/pseudo_label_cv.sh DATA POOL OUT "0 1 2 3 4" [extra train_pref flags...]
#   bash scripts/pseudo_label_cv.sh ../shared/data/real_pairs_dev.csv pool1000.csv runs/plcv "0 1 2" \
#       --max-len 96 --prompt-budget 32 --epochs 1 --gradient-checkpointing false
set -euo pipefail
data=$1 pool=$2 out=$3 folds=$4
shift 4
mkdir -p "$out"
common=(--data "$data" --folds 5 --progress false "$@")
for k in $folds; do
  s=$(date +%s)
  python -m src.train_pref "${common[@]}" --fold "$k" --out "$out/teacher_f$k"
  t1=$(date +%s)
  python -m src.predict --run "$out/teacher_f$k" --data "$pool" --pseudo-label "$out/pool_pl_f$k.csv" --no-progress
  t2=$(date +%s)
  python -m src.train_pref "${common[@]}" --fold "$k" --extra-data "$out/pool_pl_f$k.csv:1.0" --out "$out/student_f$k"
  t3=$(date +%s)
  echo "fold $k teacher_s $((t1 - s)) pseudo_label_s $((t2 - t1)) student_s $((t3 - t2))" | tee -a "$out/times.txt"
done
