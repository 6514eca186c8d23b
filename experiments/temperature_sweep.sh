#!/usr/bin/env bash
# Papernot et al. (2016), Figure 5 and Table 4 style: for each distillation temperature T, a
# teacher trained at T and a student distilled from it at T, then every attack of the sweep's list
# (FGSM, PGD and its margin and logits/T variants, APGD-CE/DLR/T, AutoAttack, noise, transfer from
# surrogate-T1, Carlini-Wagner, HopSkipJump, JSMA-F/Z) on each; then `defdistill report`.
# One spec, run by `defdistill sweep`: safe to re-run, finished runs and attacks are skipped.
# Usage: experiments/temperature_sweep.sh DATASET [-j N] [-n N] [--epochs E] [--runs-dir D] ...
# Environment: TEMPERATURES="1 100" (default 1 2 5 10 20 30 40 50 100), ATTACKS=fgsm,pgd.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="DATASET [-j N] [-n N] [--epochs E] [--runs-dir D] [--results-dir D] [--data-dir D] [--print-spec]"
parse_sweep_args "$USAGE" "$@"
[[ ${#POSITIONAL[@]} -eq 1 ]] || sweep_usage "$USAGE"
dataset="${POSITIONAL[0]}"
started=$SECONDS

add_spec "$dataset-temperature" "$RESULTS_DIR" < <(
    spec_header "$dataset-temperature" "$dataset"
    if [[ -n "${TEMPERATURES:-}" ]]; then echo "temperatures: $(yaml_list "$TEMPERATURES")"; fi
    attack_keys
)
run_specs
"$DEFDISTILL" report --results-dir "$RESULTS_DIR"
echo "== $dataset temperature sweep done in $((SECONDS - started)) s"
