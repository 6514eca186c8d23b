#!/usr/bin/env bash
# Which kind of distillation helps robustness, and at what size: every method of
# `defdistill distill --method` (soft, hinton, fitnets, at, rkd, sp), students smaller than the
# teacher, born-again generations and a data-free (noise) transfer set, all distilled from the
# teacher at T_DEFENCE (default 100), beside the undefended teacher-T1. Every model is attacked
# the same way (the sweep's attack list at the dataset's epsilon grid); then the compression
# table and the report. One spec (its `variants`), run by `defdistill sweep`: safe to re-run.
# Usage: experiments/variants.sh DATASET [-j N] [-n N] [--epochs E] [--runs-dir D] ...
# Environment: T_DEFENCE, ATTACKS (default: the sweep's list), METHODS, STUDENT_ARCHS,
# GENERATIONS (default 2).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="DATASET [-j N] [-n N] [--epochs E] [--runs-dir D] [--results-dir D] [--data-dir D] [--print-spec]"
parse_sweep_args "$USAGE" "$@"
[[ ${#POSITIONAL[@]} -eq 1 ]] || sweep_usage "$USAGE"
dataset="${POSITIONAL[0]}"
T="${T_DEFENCE:-100}"
methods="${METHODS:-hinton fitnets at rkd sp}"  # soft is student-T<T>, Papernot's student
student_archs="${STUDENT_ARCHS:-digits-cnn-small digits-cnn-tiny digits-mlp}"
generations="${GENERATIONS:-2}"
positive_int GENERATIONS "$generations"
started=$SECONDS

# variants: one `- {name: ..., ...}` line each; models: every run the sweep attacks.
variants=()
models=(teacher-T1 "teacher-T$T" "student-T$T")
for method in $methods; do
    variants+=("{name: $method, method: $method}")
    models+=("student-T$T-$method")
done
for arch in $student_archs; do
    variants+=("{name: $arch, student_arch: $arch}")
    models+=("student-T$T-$arch")
done
variants+=("{name: noise, transfer_set: noise}")
models+=("student-T$T-noise")
if [[ "$generations" -gt 1 ]]; then
    variants+=("{name: ban, generations: $generations}")
    for ((g = 1; g <= generations; g++)); do models+=("student-T$T-ban-gen$g"); done
fi

add_spec "$dataset-variants" "$RESULTS_DIR" < <(
    spec_header "$dataset-variants" "$dataset"
    echo "temperatures: $(yaml_list 1 "$T")"
    echo "students: $(yaml_list "$T")"  # teacher-T1 alone at T=1: the undefended baseline
    echo "variants:"
    printf '  - %s\n' "${variants[@]}"
    attack_keys
)
run_specs
# Latency is timed one model at a time, after training and attacks, so they do not disturb it.
"$DEFDISTILL" compression --dataset "$dataset" --models "$(IFS=,; echo "${models[*]}")" \
    --runs-dir "$RUNS_DIR" --results-dir "$RESULTS_DIR" --quiet
"$DEFDISTILL" report --results-dir "$RESULTS_DIR"
echo "== $dataset variants done in $((SECONDS - started)) s"
