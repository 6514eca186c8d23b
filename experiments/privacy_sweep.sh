#!/usr/bin/env bash
# Membership-inference sweep for one dataset: a teacher trained on the private half, students
# distilled at T = 1, 10, 100 on the public half and on uniform noise, each attacked with the
# loss, confidence and entropy thresholds and offline LiRA, for three seeds (the AUC of one
# digits run has a null spread of about 0.02, so one seed cannot separate close figures); with
# the public run, the control (the same network trained on the public half with its true labels,
# which never sees a private example). `defdistill report` compares the models seed by seed.
# Usage: [RUNS_DIR=runs] [RESULTS_DIR=results] experiments/privacy_sweep.sh DATASET [SHADOWS]
# Seed 0 writes runs/ and results/ (privacy.{csv,md}, privacy_roc_<dataset>.png and the ROC
# curves under records/privacy_roc/, which `defdistill report` redraws); seeds 1 and 2 write
# runs/privacy-seed<S>/ and results/privacy-seeds/seed<S>/.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 DATASET [SHADOWS]" >&2
    exit 2
fi
dataset="$1"
shadows="${2:-4}"
defdistill="${DEFDISTILL:-defdistill}"

runs_root="${RUNS_DIR:-runs}"
results_root="${RESULTS_DIR:-results}"

for seed in 0 1 2; do
    runs="$runs_root"
    results="$results_root"
    if [[ "$seed" != 0 ]]; then
        runs="$runs_root/privacy-seed${seed}"
        results="$results_root/privacy-seeds/seed${seed}"
    fi
    for transfer in public noise; do
        control=()
        [[ "$transfer" == public ]] && control=(--control)
        "$defdistill" privacy --dataset "$dataset" --T 1,10,100 --shadow "$shadows" ${control[@]+"${control[@]}"} \
            --transfer-set "$transfer" --seed "$seed" --runs-dir "$runs" --results-dir "$results" --quiet
    done
done
"$defdistill" report --results-dir "$results_root"
