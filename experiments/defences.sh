#!/usr/bin/env bash
# Defences that work, beside defensive distillation (README, "Defences that work"): the standard
# network teacher-T1, teacher-T100 and student-T100 (Papernot et al. 2016), PGD-AT (Madry et al.
# 2018), TRADES (Zhang et al. 2019), and ARD (Goldblum et al. 2020) and RSLAD (Zi et al. 2021)
# distilled from the PGD-AT teacher; each attacked with the same attacks at every eps and diagnosed
# for gradient masking; then results/defences.{csv,md}. Finished runs with the same settings are
# reused, so the script can be stopped and started again. EPOCHS=2 N=60 took about two minutes on
# 2 shared CPU cores; the defaults (the recipe's epochs, every test input) take longer.
# Usage: experiments/defences.sh [DATASET] [-n N] [--epochs E] [--runs-dir D] [--results-dir D] [--data-dir D]
#    or: EPOCHS=2 N=60 [EPS=0.05,0.1,0.2,0.3] [ATTACKS=fgsm,pgd] experiments/defences.sh [DATASET]
set -euo pipefail
env_epochs="${EPOCHS:-}"
env_n="${N:-}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="[DATASET] [-n N] [--epochs E] [--runs-dir D] [--results-dir D] [--data-dir D]"
parse_sweep_args "$USAGE" "$@"
[[ ${#POSITIONAL[@]} -le 1 ]] || sweep_usage "$USAGE"
dataset="${POSITIONAL[0]:-digits}"
EPOCHS="${EPOCHS:-$env_epochs}"
N_INPUTS="${N_INPUTS:-$env_n}"
started=$SECONDS

args=(--dataset "$dataset" --eps "${EPS:-$DEFAULT_EPS}" --attacks "${ATTACKS:-fgsm,pgd}"
    --runs-dir "$RUNS_DIR" --results-dir "$RESULTS_DIR" --data-dir "$DATA_DIR")
if [[ -n "$EPOCHS" ]]; then args+=(--epochs "$EPOCHS"); fi
if [[ -n "$N_INPUTS" ]]; then args+=(--n "$N_INPUTS"); fi

DEFDISTILL="$(find_defdistill)"
echo "== $dataset: defences (epochs ${EPOCHS:-recipe}, n ${N_INPUTS:-all})"
"$DEFDISTILL" defences "${args[@]}"
echo "== $dataset defences done in $((SECONDS - started)) s: $RESULTS_DIR/defences.md"
