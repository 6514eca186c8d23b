#!/usr/bin/env bash
# The headline models again with other seeds, for the small-budget comparison and the mean and sd
# over seeds in REPORT.md: for each seed S in SEEDS (default "1 2"), teacher-T1, teacher-T100 and
# student-T100 in runs/seeds/seed-S and results/seeds/seed-S, attacked at the small budgets with
# the attacks the per-input worst case needs there; then `defdistill report`. Seed 0 is the
# committed sweep itself (experiments/temperature_sweep.sh).
# Usage: [SEEDS="1 2"] [EPS=0.02,0.05,0.1] [DATA_DIR=data] [EPOCHS=E] [N=n] experiments/seeds.sh [DATASET]
# MNIST as committed: DATA_DIR=../shared/datasets EPOCHS=5 N=200 EPS=0.1,0.2 experiments/seeds.sh mnist
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
dataset="${1:-digits}"
DEFDISTILL="$(find_defdistill)"
attacks="${ATTACKS:-fgsm,pgd,pgd-margin,apgd-ce,apgd-dlr,apgd-t,noise}"
for s in ${SEEDS:-1 2}; do
    runs="runs/seeds/seed-$s"
    results="results/seeds/seed-$s"
    common=(--dataset "$dataset" --seed "$s" --runs-dir "$runs" --data-dir "${DATA_DIR:-data}" --quiet)
    epochs=(); if [[ -n "${EPOCHS:-}" ]]; then epochs=(--epochs "$EPOCHS"); fi
    inputs=(); if [[ -n "${N:-}" ]]; then inputs=(--n "$N"); fi
    "$DEFDISTILL" train-teacher --T 1 "${common[@]}" "${epochs[@]}"
    "$DEFDISTILL" train-teacher --T 100 "${common[@]}" "${epochs[@]}"
    "$DEFDISTILL" distill --T 100 "${common[@]}" "${epochs[@]}" --results-dir "$results"
    for model in teacher-T1 student-T100; do
        "$DEFDISTILL" attack --model "$model" "${common[@]}" "${inputs[@]}" --results-dir "$results" \
            --attacks "$attacks" --eps "${EPS:-0.02,0.05,0.1}"
    done
done
"$DEFDISTILL" report --runs-dir runs
