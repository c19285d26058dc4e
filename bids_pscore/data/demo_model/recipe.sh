#!/usr/bin/env bash
# How the demo model in this folder was made; rerun it from the repository root:
#   bash bids_pscore/data/demo_model/recipe.sh [build folder]
# It generates a synthetic cohort (48 subjects, 2 sessions each, half of them with
# regional atrophy), preprocesses and trains on it, and copies the bundle here.
# About 40 minutes on 2 CPUs (preprocessing the 96 T1w took 34 of them).
# --n-selected 10 rather than the default 35: on this cohort only a handful of cubes carry signal
# (validation balanced accuracy >= 0.8 for 4 of 150; the rest at 0.75 or less on 20 validation images),
# and 35 let the meta-classifier weight noise cubes with either sign, which made the whole-brain
# score and the region scores unstable between scan and re-scan.
set -euo pipefail
build=${1:-demo_build}
here=$(cd "$(dirname "$0")" && pwd)
bids_pscore-synth "$build/cohort" --n-subjects 48 --n-sessions 2 --seed 1000
bids_pscore-train "$build/cohort" "$build/model" \
  --label-column group --positive AD --negative CN \
  --n-selected 10 --val-fraction 0.2 --test-fraction 0.2 --epochs 30 --patience 6 --learning-rate 1e-3 --seed 0 \
  -w "$build/work" --name demo-synthetic \
  --description "Demo P-score ensemble trained on a synthetic cohort made by bids_pscore-synth (seed 1000)" \
  --warning "DEMO MODEL trained on synthetic data only: not for research or clinical use. Train your own with bids_pscore-train (see README)."
cp "$build/model/weights.safetensors" "$build/model/model.json" "$build/model/training.tsv" "$here/"
