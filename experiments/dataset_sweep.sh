#!/usr/bin/env bash
# The headline comparison on several datasets: teacher and student at T=1 and at T_DEFENCE
# (default 100), every attack of the sweep's list on each, at each dataset's epsilon grid.
# MNIST-like data and CIFAR-10 are read from --data-dir (see the README for the files); digits
# ships with scikit-learn. One spec per dataset, run by `defdistill sweep`: safe to re-run.
# Usage: experiments/dataset_sweep.sh DATASET [DATASET ...] [-j N] [-n N] [--epochs E] ...
# Environment: T_DEFENCE, ATTACKS.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="DATASET [DATASET ...] [-j N] [-n N] [--epochs E] [--runs-dir D] [--results-dir D] [--data-dir D] [--print-spec]"
parse_sweep_args "$USAGE" "$@"
[[ ${#POSITIONAL[@]} -ge 1 ]] || sweep_usage "$USAGE"
T_defence="${T_DEFENCE:-100}"
started=$SECONDS

for dataset in $(printf '%s\n' "${POSITIONAL[@]}" | awk '!seen[$0]++'); do
    add_spec "$dataset-headline" "$RESULTS_DIR" < <(
        spec_header "$dataset-headline" "$dataset"
        echo "temperatures: $(yaml_list 1 "$T_defence")"
        attack_keys
    )
done
run_specs
"$DEFDISTILL" report --results-dir "$RESULTS_DIR"
echo "== dataset sweep (${POSITIONAL[*]}) done in $((SECONDS - started)) s"
