#!/usr/bin/env bash
# Robust accuracy against the L-inf budget: the undefended teacher (T=1), the teacher at
# T_DEFENCE and the student distilled at T_DEFENCE (default 100), each attacked with every
# registered attack that takes a budget, on a finer epsilon grid. Safe to re-run.
# Usage: experiments/eps_sweep.sh DATASET [-j N] [-n N] [--epochs E] [--runs-dir D] ...
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="DATASET [-j N] [-n N] [--epochs E] [--runs-dir D] [--results-dir D] [--data-dir D]"
parse_sweep_args "$USAGE" "$@"
[[ ${#POSITIONAL[@]} -eq 1 ]] || sweep_usage "$USAGE"
dataset="${POSITIONAL[0]}"
T_defence="${T_DEFENCE:-100}"
eps="${EPS:-0.01,0.02,0.05,0.1,0.15,0.2,0.25,0.3,0.4,0.5}"
attacks="${ATTACKS:-$(bounded_attacks)}"
started=$SECONDS

printf '%s\n' "$dataset 1" "$dataset $T_defence" | sort -u | run_parallel train_pair
echo "== $dataset: attacks $attacks at eps $eps"
for model in teacher-T1 "teacher-T$T_defence" "student-T$T_defence"; do
    echo "$dataset $model $attacks $eps"
done | run_parallel attack_missing

"$DEFDISTILL" tables --results-dir "$RESULTS_DIR" --quiet
"$DEFDISTILL" report --results-dir "$RESULTS_DIR"
echo "== $dataset epsilon sweep done in $((SECONDS - started)) s"
