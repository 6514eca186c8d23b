#!/usr/bin/env bash
# The headline comparison on several datasets: teacher and student at T=1 and at T_DEFENCE
# (default 100), every registered attack on each. MNIST-like data and CIFAR-10 are read from
# --data-dir (see the README for the files); digits ships with scikit-learn. Safe to re-run.
# Usage: experiments/dataset_sweep.sh DATASET [DATASET ...] [-j N] [-n N] [--epochs E] ...
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="DATASET [DATASET ...] [-j N] [-n N] [--epochs E] [--runs-dir D] [--results-dir D] [--data-dir D]"
parse_sweep_args "$USAGE" "$@"
[[ ${#POSITIONAL[@]} -ge 1 ]] || sweep_usage "$USAGE"
T_defence="${T_DEFENCE:-100}"
attacks="${ATTACKS:-$(all_attacks)}"
started=$SECONDS

for dataset in "${POSITIONAL[@]}"; do
    printf '%s\n' "$dataset 1" "$dataset $T_defence"
done | sort -u | run_parallel train_pair
echo "== attacks $attacks"
for dataset in "${POSITIONAL[@]}"; do
    for model in teacher-T1 student-T1 "teacher-T$T_defence" "student-T$T_defence"; do
        echo "$dataset $model $attacks"
    done
done | sort -u | run_parallel attack_missing

"$DEFDISTILL" tables --results-dir "$RESULTS_DIR" --quiet
"$DEFDISTILL" report --results-dir "$RESULTS_DIR"
echo "== dataset sweep (${POSITIONAL[*]}) done in $((SECONDS - started)) s"
