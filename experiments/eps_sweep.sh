#!/usr/bin/env bash
# Robust accuracy against the L-inf budget: the undefended teacher (T=1), the teacher at
# T_DEFENCE and the student distilled at T_DEFENCE (default 100), each attacked with every
# registered attack that takes a budget, on a finer epsilon grid. One spec, run by
# `defdistill sweep`: safe to re-run, finished runs and attacks are skipped.
# Usage: experiments/eps_sweep.sh DATASET [-j N] [-n N] [--epochs E] [--runs-dir D] ...
# Environment: EPS=0.01,0.02,... (default 0.01 ... 0.5), T_DEFENCE, ATTACKS.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="DATASET [-j N] [-n N] [--epochs E] [--runs-dir D] [--results-dir D] [--data-dir D] [--print-spec]"
parse_sweep_args "$USAGE" "$@"
[[ ${#POSITIONAL[@]} -eq 1 ]] || sweep_usage "$USAGE"
dataset="${POSITIONAL[0]}"
T_defence="${T_DEFENCE:-100}"
eps="${EPS:-0.01,0.02,0.05,0.1,0.15,0.2,0.25,0.3,0.4,0.5}"
started=$SECONDS

add_spec "$dataset-eps" "$RESULTS_DIR" < <(
    spec_header "$dataset-eps" "$dataset"
    echo "temperatures: $(yaml_list 1 "$T_defence")"
    echo "students: $(yaml_list "$T_defence")"  # no student-T1: the undefended model is teacher-T1
    echo "eps: $(yaml_list "$eps")"
    attack_keys "$(bounded_attacks)"
)
run_specs
"$DEFDISTILL" report --results-dir "$RESULTS_DIR"
echo "== $dataset epsilon sweep done in $((SECONDS - started)) s"
