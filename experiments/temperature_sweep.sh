#!/usr/bin/env bash
# Papernot et al. (2016), Figure 5 and Table 4 style: for each distillation temperature T, a
# teacher trained at T and a student distilled from it at T, then every registered attack
# (FGSM, PGD, Carlini-Wagner, and whatever else the registry holds) on each of them; then the
# tables and `defdistill report`. Safe to re-run: finished runs and attacks are skipped.
# Usage: experiments/temperature_sweep.sh DATASET [-j N] [-n N] [--epochs E] [--runs-dir D] ...
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="DATASET [-j N] [-n N] [--epochs E] [--runs-dir D] [--results-dir D] [--data-dir D]"
parse_sweep_args "$USAGE" "$@"
[[ ${#POSITIONAL[@]} -eq 1 ]] || sweep_usage "$USAGE"
dataset="${POSITIONAL[0]}"
temperatures=(${TEMPERATURES:-1 2 5 10 20 30 40 50 100})
attacks="${ATTACKS:-$(all_attacks)}"
started=$SECONDS

echo "== $dataset: teachers and students at T = ${temperatures[*]} ($JOBS at a time)"
for T in "${temperatures[@]}"; do echo "$dataset $T"; done | run_parallel train_pair

# The transfer attack crafts on teacher-T1, so the attacks start once every model is trained.
echo "== $dataset: attacks $attacks"
for T in "${temperatures[@]}"; do
    echo "$dataset teacher-T$T $attacks"
    echo "$dataset student-T$T $attacks"
done | run_parallel attack_missing

"$DEFDISTILL" tables --results-dir "$RESULTS_DIR" --quiet
"$DEFDISTILL" report --results-dir "$RESULTS_DIR"
echo "== $dataset temperature sweep done in $((SECONDS - started)) s"
