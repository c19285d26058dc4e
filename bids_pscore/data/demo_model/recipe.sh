#!/usr/bin/env bash
# How the demo model in this folder was made; rerun it from the repository root:
#   bash bids_pscore/data/demo_model/recipe.sh [build folder] [base dataset]
# The base is the 145 real healthy IXI heads (2 mm, CC BY-SA 3.0; ../shared/data/ixi_hh in the
# project's workspace). Three of every four subjects (in label order) get simulated AD-like
# atrophy or none (docs/disease_model.md) and train the model; the fourth are kept out: the first
# half of them (18, IXI015 to IXI282) for benchmarks/validate_synthetic.py --base, and of the other
# half the first two aged 60 or more (IXI313, IXI438) are the quick start's demo heads
# (bids_pscore/data/demo_heads/recipe.py, bids_pscore.synth.demo). The normative reference is made of
# the 125 heads that are neither validation nor demo heads, unaltered. The trained weights and the
# reference derive from IXI and carry its licence, CC BY-SA 3.0. About 2 hours on 2 idle CPUs
# (measured for the shipped weights, 2026-12-07): 15 minutes generating the cohort (105 subjects with
# an age, 2 sessions each; less when the prepared base heads are already in $build/bases), 46
# preprocessing its 210 T1w, 16 training (60 epochs of 16 s on idle cores; anything else running on
# them, even niced, makes an epoch several times longer), 26 the reference (125 T1w).
# Each finished step is kept: a rerun after an interruption starts at the first unfinished one.
set -euo pipefail
build=${1:-demo_build}
base=${2:-../shared/data/ixi_hh}
here=$(cd "$(dirname "$0")" && pwd)
train_labels=$(awk -F'\t' 'NR > 1 {print $1}' "$base/participants.tsv" | sort | awk 'NR % 4 != 0' | sed 's/^sub-//')
# A finished cohort (its last file marks it) is not made again: that would take minutes and change no file.
# shellcheck disable=SC2086  # one word per label
[ -f "$build/cohort/derivatives/groundtruth/atrophy_order.tsv" ] ||
  bids_pscore-synth "$build/cohort" --base "$base" --participant-label $train_labels --n-sessions 2 --seed 1000 \
    -w "$build/bases" --n-procs 2
[ -f "$build/model/model.json" ] ||
  bids_pscore-train "$build/cohort" "$build/model" \
    --label-column group --positive AD --negative CN \
    --n-selected 35 --val-fraction 0.2 --test-fraction 0.2 --epochs 60 --patience 10 --learning-rate 1e-3 --seed 0 \
    -w "$build/work" --name demo-ixi \
    --description "Demo P-score ensemble trained on simulated AD-like atrophy (docs/disease_model.md) applied to real healthy IXI heads (bids_pscore-synth --base, seed 1000)" \
    --warning "DEMO MODEL trained on simulated atrophy applied to real healthy IXI heads (IXI dataset, brain-development.org, CC BY-SA 3.0; the weights carry that licence): not for research or clinical use. Train your own with bids_pscore-train (see README)."
# The normative reference (SPEC 10): real heads as the scanner gave them, never the generator's
# renderings (those flagged 9 regions per unaltered real head): every IXI subject that neither the
# validation benchmark nor the demo uses, unaltered, preprocessed with the model's parameters; the 4
# without an age in participants.tsv are left out by bids_pscore-normative (121 heads).
ref_labels=$(python -c 'import sys; from bids_pscore.synth.demo import reference_labels; print(*reference_labels(sys.argv[1]))' "$base")
# shellcheck disable=SC2086  # one word per label
[ -f "$build/model_normative/model.json" ] ||
  bids_pscore-normative "$build/model" "$base" "$build/model_normative" --participant-label $ref_labels \
    -w "$build/reference_work" --skip-bids-validation --class-domain
# --class-domain: these real heads of the training scanner also become the class domain (domain.safetensors), against which
# a scan's distance says whether its class is reliable. The domain training writes, its training images' controls (distance
# threshold 1.10), marked 8 of 27 atrophied validation sessions of the training scanner as unlike it; these (1.39), none.
cp "$build/model_normative/weights.safetensors" "$build/model_normative/model.json" "$build/model_normative/normative.safetensors" \
  "$build/model_normative/domain.safetensors" "$build/model/training.tsv" "$here/"
