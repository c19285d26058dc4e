#!/usr/bin/env bash
# How the demo model in this folder was made; rerun it from the repository root:
#   bash bids_pscore/data/demo_model/recipe.sh [build folder] [base dataset]
# The base is the 145 real healthy IXI heads (2 mm, CC BY-SA 3.0; ../shared/data/ixi_hh in the
# project's workspace). Three of every four subjects (in label order) get simulated AD-like
# atrophy or none (docs/disease_model.md) and train the model; the fourth are kept out for
# benchmarks/validate_synthetic.py --base. The trained weights derive from IXI and carry its
# licence, CC BY-SA 3.0. About 100-135 minutes on 2 CPUs: 32-46 generating the cohort (105 subjects with an
# age, 2 sessions each; 4 when the prepared base heads are already in $build/bases), 61-73
# preprocessing its 210 T1w, 13 training.
set -euo pipefail
build=${1:-demo_build}
base=${2:-../shared/data/ixi_hh}
here=$(cd "$(dirname "$0")" && pwd)
train_labels=$(awk -F'\t' 'NR > 1 {print $1}' "$base/participants.tsv" | sort | awk 'NR % 4 != 0' | sed 's/^sub-//')
# shellcheck disable=SC2086  # one word per label
bids_pscore-synth "$build/cohort" --base "$base" --participant-label $train_labels --n-sessions 2 --seed 1000 \
  -w "$build/bases" --n-procs 2
bids_pscore-train "$build/cohort" "$build/model" \
  --label-column group --positive AD --negative CN \
  --n-selected 35 --val-fraction 0.2 --test-fraction 0.2 --epochs 60 --patience 10 --learning-rate 1e-3 --seed 0 \
  -w "$build/work" --name demo-ixi \
  --description "Demo P-score ensemble trained on simulated AD-like atrophy (docs/disease_model.md) applied to real healthy IXI heads (bids_pscore-synth --base, seed 1000)" \
  --warning "DEMO MODEL trained on simulated atrophy applied to real healthy IXI heads (IXI dataset, brain-development.org, CC BY-SA 3.0; the weights carry that licence): not for research or clinical use. Train your own with bids_pscore-train (see README)."
cp "$build/model/weights.safetensors" "$build/model/model.json" "$build/model/training.tsv" "$here/"
