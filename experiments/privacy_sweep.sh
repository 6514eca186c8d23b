#!/usr/bin/env bash
# Membership-inference sweep for one dataset: a teacher trained on the private half, students
# distilled at T = 1, 10, 100 on the public half and on uniform noise, each attacked with the
# loss, confidence and entropy thresholds and offline LiRA, for three seeds (the AUC of one
# digits run has a null spread of about 0.02, so one seed cannot separate close figures).
# Usage: experiments/privacy_sweep.sh DATASET [SHADOWS] [-j N] [--epochs E] [--runs-dir D] ...
# (RUNS_DIR=... and RESULTS_DIR=... in the environment work as well.) Environment: SEEDS
# (default "0 1 2"), TEMPERATURES (default "1 10 100").
# Seed 0 writes runs/ and results/ (privacy.{csv,md}, privacy_roc_<dataset>.png and the ROC
# curves under records/privacy_roc/, which `defdistill report` redraws); seeds 1 and 2 write
# runs/privacy-seed<S>/ and results/privacy-seeds/seed<S>/. One spec per seed (a configuration
# per transfer set), run by `defdistill sweep`: a finished seed is skipped.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="DATASET [SHADOWS] [-j N] [--epochs E] [--runs-dir D] [--results-dir D] [--data-dir D] [--print-spec]"
parse_sweep_args "$USAGE" "$@"
[[ ${#POSITIONAL[@]} -ge 1 && ${#POSITIONAL[@]} -le 2 ]] || sweep_usage "$USAGE"
if [[ -n "$N_INPUTS" ]]; then
    echo "error: -n does not apply to the privacy sweep (every member and non-member is attacked)" >&2
    exit 2
fi
dataset="${POSITIONAL[0]}"
shadows="${POSITIONAL[1]:-4}"
[[ "$shadows" =~ ^[0-9]+$ ]] || { echo "error: SHADOWS takes an integer, got $shadows" >&2; exit 2; }
started=$SECONDS

for seed in ${SEEDS:-0 1 2}; do
    runs="$RUNS_DIR"
    results="$RESULTS_DIR"
    if [[ "$seed" != 0 ]]; then
        runs="$RUNS_DIR/privacy-seed${seed}"
        results="$RESULTS_DIR/privacy-seeds/seed${seed}"
    fi
    add_spec "$dataset-privacy-seed$seed" "$results" < <(
        spec_header "$dataset-privacy-seed$seed" "$dataset" "$runs" "$results"
        echo "study: privacy"
        echo "seed: $seed"
        echo "temperatures: $(yaml_list "${TEMPERATURES:-1 10 100}")"
        echo "shadows: $shadows"
        echo "transfer_sets: [public, noise]"
    )
done
run_specs
"$DEFDISTILL" report --results-dir "$RESULTS_DIR"
echo "== $dataset privacy sweep done in $((SECONDS - started)) s"
