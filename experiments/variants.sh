#!/usr/bin/env bash
# Which kind of distillation helps robustness, and at what size: every method of
# `defdistill distill --method` (soft, hinton, fitnets, at, rkd, sp), students smaller than the
# teacher, born-again generations and a data-free (noise) transfer set, all distilled from the
# teacher at T_DEFENCE (default 100). Every model is attacked the same way (`defdistill attack`
# with the same attacks and its default budgets), then the compression table, the tables and the
# report are rebuilt. Safe to re-run: finished runs and recorded attacks are skipped.
# Usage: experiments/variants.sh DATASET [-j N] [-n N] [--epochs E] [--runs-dir D] ...
# Environment: T_DEFENCE, ATTACKS (default: every registered attack), METHODS, STUDENT_ARCHS,
# GENERATIONS (default 2).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="DATASET [-j N] [-n N] [--epochs E] [--runs-dir D] [--results-dir D] [--data-dir D]"
parse_sweep_args "$USAGE" "$@"
[[ ${#POSITIONAL[@]} -eq 1 ]] || sweep_usage "$USAGE"
dataset="${POSITIONAL[0]}"
T="${T_DEFENCE:-100}"
attacks="${ATTACKS:-$(all_attacks)}"
methods="${METHODS:-hinton fitnets at rkd sp}"  # soft is student-T<T>, trained with the teacher
student_archs="${STUDENT_ARCHS:-digits-cnn-small digits-cnn-tiny digits-mlp}"
generations="${GENERATIONS:-2}"
started=$SECONDS

# distill_variant DATASET T NAME LAST [DISTILL ARGS...]: distil NAME unless LAST (its final run) is finished.
distill_variant() {
    local dataset="$1" T="$2" name="$3" last="$4"
    shift 4
    if [[ -f "$RUNS_DIR/$dataset/$last/meta.json" ]]; then
        echo "skip: $dataset $last is trained"
        return 0
    fi
    local extra=()
    mapfile -t extra < <(epochs_args)
    "$DEFDISTILL" distill --dataset "$dataset" --T "$T" --teacher "teacher-T$T" --name "$name" \
        --runs-dir "$RUNS_DIR" --results-dir "$RESULTS_DIR" --data-dir "$DATA_DIR" --quiet "${extra[@]}" "$@"
}
export -f distill_variant

echo "== $dataset: teachers at T=1 and T=$T, Papernot's student-T$T"
if [[ -f "$RUNS_DIR/$dataset/teacher-T1/meta.json" ]]; then
    echo "skip: $dataset teacher-T1 is trained"
else
    mapfile -t extra < <(epochs_args)
    "$DEFDISTILL" train-teacher --T 1 --dataset "$dataset" --runs-dir "$RUNS_DIR" --data-dir "$DATA_DIR" \
        --quiet "${extra[@]}"
fi
echo "$dataset $T" | run_parallel train_pair

models=(teacher-T1 "teacher-T$T" "student-T$T")
variants=()
for method in $methods; do
    variants+=("student-T$T-$method student-T$T-$method --method $method")
    models+=("student-T$T-$method")
done
for arch in $student_archs; do
    variants+=("student-T$T-$arch student-T$T-$arch --student-arch $arch")
    models+=("student-T$T-$arch")
done
variants+=("student-T$T-noise student-T$T-noise --transfer-set noise")
models+=("student-T$T-noise")
if [[ "$generations" -gt 1 ]]; then
    variants+=("student-T$T-ban student-T$T-ban-gen$generations --generations $generations")
    for ((g = 1; g <= generations; g++)); do models+=("student-T$T-ban-gen$g"); done
fi

echo "== $dataset: ${#variants[@]} distillation variants"
for variant in "${variants[@]}"; do
    echo "$dataset $T $variant"
done | run_parallel distill_variant

echo "== $dataset: attacks $attacks on ${#models[@]} models"
for model in "${models[@]}"; do
    echo "$dataset $model $attacks"
done | run_parallel attack_missing

# Latency is timed one model at a time, after training and attacks, so they do not disturb it.
"$DEFDISTILL" compression --dataset "$dataset" --models "$(IFS=,; echo "${models[*]}")" \
    --runs-dir "$RUNS_DIR" --results-dir "$RESULTS_DIR" --quiet
"$DEFDISTILL" tables --results-dir "$RESULTS_DIR" --quiet
"$DEFDISTILL" report --results-dir "$RESULTS_DIR"
echo "== $dataset variants done in $((SECONDS - started)) s"
