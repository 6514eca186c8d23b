#!/usr/bin/env bash
# The headline models again with other seeds, so that the small-budget comparison and the split
# between distillation (student-T1) and temperature (student-T100) rest on seeds: for each seed S
# in SEEDS (default "1 2"), teacher-T1, student-T1, teacher-T100 and student-T100 (and the transfer
# attack's surrogate-T1), each attacked at the budgets EPS with the full per-input attack list.
# Seed S lives in runs/seeds/seed-S and results/seeds/seed-S; seed 0 is the committed sweep itself
# (runs/ and results/), so SEEDS=0 fills that sweep's gaps (an attack missing at a budget) only.
# One spec per seed, run by `defdistill sweep`: safe to re-run, finished runs and attacks are skipped.
# Usage: [SEEDS="1 2"] [EPS=0.02,0.05,0.1] [ATTACKS=...] experiments/seeds.sh DATASET [-n N] [--epochs E] [--data-dir D]
# MNIST as committed: SEEDS="0 1 2" EPS=0.1,0.2 experiments/seeds.sh mnist -n 200 --epochs 5 --data-dir ../shared/datasets
# digits as committed: SEEDS="1 2" experiments/seeds.sh digits
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="DATASET [-n N] [--epochs E] [--data-dir D] [-j N] [--print-spec]"
parse_sweep_args "$USAGE" "$@"
[[ ${#POSITIONAL[@]} -eq 1 ]] || sweep_usage "$USAGE"
dataset="${POSITIONAL[0]}"
# The per-input worst case's list (every bounded attack of the temperature sweep; AutoAttack's
# cascade brings APGD-T, FAB-T and Square): the comparisons need it on both sides.
FULL_LIST="fgsm,pgd,pgd-margin,pgd-t,apgd-ce,apgd-dlr,autoattack,noise,transfer"
started=$SECONDS

for s in ${SEEDS:-1 2}; do
    if [[ "$s" == 0 ]]; then runs="$RUNS_DIR" results="$RESULTS_DIR"
    else runs="$RUNS_DIR/seeds/seed-$s" results="$RESULTS_DIR/seeds/seed-$s"; fi
    add_spec "$dataset-seed-$s" "$results" < <(
        spec_header "$dataset-seed-$s" "$dataset" "$runs" "$results"
        echo "seed: $s"
        echo "temperatures: [1, 100]"
        echo "students: true"
        echo "gradients: false"
        echo "eps: $(yaml_list "${EPS:-0.02,0.05,0.1}")"
        attack_keys "$FULL_LIST"
    )
done
run_specs
"$DEFDISTILL" report --results-dir "$RESULTS_DIR"
echo "== $dataset seeds done in $((SECONDS - started)) s"
