# Shared by the sweep scripts: option parsing, the defdistill executable, and idempotent steps.
# Each step skips what is already finished (a run with meta.json; an attack with its records in
# results/records/robustness/), so a sweep can be stopped and started again at any point.
# shellcheck shell=bash

# Work from the repository root, so runs/ and results/ land where the README says.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -n "${DEFDISTILL:-}" ]]; then
    :
elif command -v defdistill >/dev/null 2>&1; then
    DEFDISTILL="$(command -v defdistill)"
elif [[ -x .venv/bin/defdistill ]]; then
    DEFDISTILL="$PWD/.venv/bin/defdistill"
else
    echo "error: no defdistill on PATH and no .venv/bin/defdistill: run 'make install' first" >&2
    exit 2
fi
# The Python that runs defdistill, to read its attack registry.
PYTHON="$(dirname "$DEFDISTILL")/python"
[[ -x "$PYTHON" ]] || PYTHON="python3"

JOBS=1
DEFAULT_EPS="0.05,0.1,0.2,0.3"  # defdistill attack's default budgets
N_INPUTS=""
EPOCHS=""
RUNS_DIR="runs"
RESULTS_DIR="results"
DATA_DIR="data"
POSITIONAL=()

sweep_usage() {
    cat >&2 <<USAGE
usage: $0 $1
  -j N             run N configurations at once (default 1)
  -n N             attack the first N test inputs (default: all)
  --epochs E       training epochs (default: the dataset's recipe)
  --runs-dir D     (default runs)   --results-dir D (default results)   --data-dir D (default data)
USAGE
    exit 2
}

# parse_sweep_args USAGE "$@": options into the globals above, the rest into POSITIONAL.
parse_sweep_args() {
    local usage="$1"
    shift
    while [[ $# -gt 0 ]]; do
        case "$1" in
            -j) JOBS="${2:?-j needs a number}"; shift 2 ;;
            -j*) JOBS="${1#-j}"; shift ;;
            -n) N_INPUTS="${2:?-n needs a number}"; shift 2 ;;
            --epochs) EPOCHS="${2:?--epochs needs a number}"; shift 2 ;;
            --runs-dir) RUNS_DIR="${2:?}"; shift 2 ;;
            --results-dir) RESULTS_DIR="${2:?}"; shift 2 ;;
            --data-dir) DATA_DIR="${2:?}"; shift 2 ;;
            -h|--help) sweep_usage "$usage" ;;
            -*) echo "error: unknown option $1" >&2; sweep_usage "$usage" ;;
            *) POSITIONAL+=("$1"); shift ;;
        esac
    done
    [[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || { echo "error: -j takes a positive integer, got $JOBS" >&2; exit 2; }
    BOUNDED_ATTACKS="$(bounded_attacks)"
    export DEFDISTILL RUNS_DIR RESULTS_DIR DATA_DIR N_INPUTS EPOCHS BOUNDED_ATTACKS DEFAULT_EPS
}

# Every attack in the library's registry, comma-separated: new attacks join the sweeps by themselves.
all_attacks() {
    GIT_PYTHON_REFRESH=quiet "$PYTHON" -c 'from defdistill.evaluate.attacks import ATTACKS; print(",".join(ATTACKS))'
}

# The attacks of the registry that take an epsilon budget.
bounded_attacks() {
    GIT_PYTHON_REFRESH=quiet "$PYTHON" -c \
        'from defdistill.evaluate.attacks import ATTACKS; print(",".join(k for k, v in ATTACKS.items() if v.bounded))'
}

epochs_args() {
    if [[ -n "$EPOCHS" ]]; then printf -- '--epochs\n%s\n' "$EPOCHS"; fi
}

# train_pair DATASET T: teacher-T<T>, then student-T<T> distilled from it (Papernot's defence).
train_pair() {
    local dataset="$1" T="$2"
    local common=(--dataset "$dataset" --runs-dir "$RUNS_DIR" --data-dir "$DATA_DIR" --quiet)
    local extra=()
    mapfile -t extra < <(epochs_args)
    if [[ -f "$RUNS_DIR/$dataset/teacher-T$T/meta.json" ]]; then
        echo "skip: $dataset teacher-T$T is trained"
    else
        "$DEFDISTILL" train-teacher --T "$T" "${common[@]}" "${extra[@]}"
    fi
    if [[ -f "$RUNS_DIR/$dataset/student-T$T/meta.json" ]]; then
        echo "skip: $dataset student-T$T is trained"
    else
        "$DEFDISTILL" distill --T "$T" --teacher "teacher-T$T" --results-dir "$RESULTS_DIR" "${common[@]}" "${extra[@]}"
    fi
}

# has_records DATASET MODEL ATTACK EPS...: the attack's row for every EPS is recorded
# ("none" for an unbounded attack, as the record files name it).
has_records() {
    local dataset="$1" model="$2" attack="$3" eps
    shift 3
    for eps in "$@"; do
        compgen -G "$RESULTS_DIR/records/robustness/${dataset}__${model}__${attack}__*__${eps}.json" >/dev/null ||
            return 1
    done
}

# attack_missing DATASET MODEL ATTACKS [EPS]: run the attacks (comma-separated) that lack a
# record for a budget of EPS (comma-separated, default DEFAULT_EPS).
attack_missing() {
    local dataset="$1" model="$2" attacks="$3" eps="${4:-$DEFAULT_EPS}"
    local todo=() attack eps_list=() all=()
    IFS=, read -r -a eps_list <<<"$eps"
    IFS=, read -r -a all <<<"$attacks"
    for attack in "${all[@]}"; do
        if [[ ",$BOUNDED_ATTACKS," == *",$attack,"* ]]; then
            has_records "$dataset" "$model" "$attack" "${eps_list[@]}" || todo+=("$attack")
        else
            has_records "$dataset" "$model" "$attack" none || todo+=("$attack")
        fi
    done
    if [[ ${#todo[@]} -eq 0 ]]; then
        echo "skip: $dataset $model is attacked"
        return 0
    fi
    local args=(--model "$model" --attacks "$(IFS=,; echo "${todo[*]}")" --dataset "$dataset"
        --eps "$eps" --runs-dir "$RUNS_DIR" --results-dir "$RESULTS_DIR" --data-dir "$DATA_DIR" --quiet)
    if [[ -n "$N_INPUTS" ]]; then args+=(--n "$N_INPUTS"); fi
    "$DEFDISTILL" attack "${args[@]}"
}

export -f train_pair has_records attack_missing epochs_args

# run_parallel FUNCTION ARGS-PER-LINE...: one call of FUNCTION per line of standard input,
# JOBS at a time; fails if any call failed.
run_parallel() {
    local fn="$1"
    xargs -P "$JOBS" -L 1 bash -c "set -euo pipefail; $fn \"\$@\"" _
}
