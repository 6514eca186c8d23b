# Shared by the sweep scripts. Each script turns its options into YAML sweep specs (one per
# dataset or seed; the format is defdistill/studies/sweep_spec.py), keeps each beside its results
# (RESULTS_DIR/sweeps/NAME/spec.yaml) and runs `defdistill sweep` on it. The sweep alone decides
# what is finished (a run made with the spec's seed and epochs; an attack recorded on the spec's
# inputs with its seed and settings), so a stopped script is resumed by running it again.
# --print-spec prints the specs (a YAML stream, one document each) and runs nothing.
# shellcheck shell=bash

# Work from the repository root: the specs' relative folders are taken from there.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBS=""
N_INPUTS=""
EPOCHS=""
RUNS_DIR="${RUNS_DIR:-runs}"
RESULTS_DIR="${RESULTS_DIR:-results}"
DATA_DIR="${DATA_DIR:-data}"
PRINT_SPEC=""
POSITIONAL=()
SPECS=()  # the spec files written, in order

sweep_usage() {
    cat >&2 <<USAGE
usage: $0 $1
  -j N             run N configurations at once (the spec's max_parallel; default 1)
  -n N             attack the first N test inputs (default: all)
  --epochs E       training epochs (default: the dataset's recipe)
  --runs-dir D     (default runs)   --results-dir D (default results)   --data-dir D (default data)
  --print-spec     print the sweep specs and run nothing
USAGE
    exit 2
}

positive_int() {  # positive_int OPTION VALUE
    [[ "$2" =~ ^[1-9][0-9]*$ ]] || { echo "error: $1 takes a positive integer, got $2" >&2; exit 2; }
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
            --print-spec) PRINT_SPEC=1; shift ;;
            -h|--help) sweep_usage "$usage" ;;
            -*) echo "error: unknown option $1" >&2; sweep_usage "$usage" ;;
            *) POSITIONAL+=("$1"); shift ;;
        esac
    done
    if [[ -n "$JOBS" ]]; then positive_int -j "$JOBS"; fi
    if [[ -n "$N_INPUTS" ]]; then positive_int -n "$N_INPUTS"; fi
    if [[ -n "$EPOCHS" ]]; then positive_int --epochs "$EPOCHS"; fi
    return 0
}

# The defdistill executable: $DEFDISTILL, else PATH, else the repository's .venv.
find_defdistill() {
    if [[ -n "${DEFDISTILL:-}" ]]; then
        echo "$DEFDISTILL"
    elif command -v defdistill >/dev/null 2>&1; then
        command -v defdistill
    elif [[ -x .venv/bin/defdistill ]]; then
        echo "$PWD/.venv/bin/defdistill"
    else
        echo "error: no defdistill on PATH and no .venv/bin/defdistill: run 'make install' first" >&2
        return 2
    fi
}

# The attacks of the registry that take an epsilon budget, comma-separated (read from the Python
# that runs defdistill, or $PYTHON): new attacks join the epsilon sweep by themselves.
bounded_attacks() {
    local python="${PYTHON:-}"
    if [[ -z "$python" ]]; then
        python="$(dirname "$(find_defdistill)")/python"
        [[ -x "$python" ]] || python="python3"
    fi
    GIT_PYTHON_REFRESH=quiet "$python" -c \
        'from defdistill.evaluate.attacks import ATTACKS; print(",".join(k for k, v in ATTACKS.items() if v.bounded))'
}

# yaml_list ITEM...: a YAML flow list from words and comma-separated lists ("1 2,5" -> [1, 2, 5]).
yaml_list() {
    local items=() out="" item
    IFS=$' \t\n,' read -r -a items <<<"$*"
    for item in "${items[@]}"; do out+="${out:+, }$item"; done
    printf '[%s]' "$out"
}

# yaml_str TEXT: a single-quoted YAML scalar (a path may hold spaces or colons).
yaml_str() {
    printf "'%s'" "${1//\'/\'\'}"
}

# spec_header NAME DATASET [RUNS RESULTS]: the keys every script's spec shares (the options above).
# The scripts write REPORT.md themselves, over every dataset, once their sweeps are done.
spec_header() {
    local name="$1" dataset="$2" runs="${3:-$RUNS_DIR}" results="${4:-$RESULTS_DIR}"
    echo "name: $name"
    echo "dataset: $dataset"
    if [[ -n "$EPOCHS" ]]; then echo "epochs: $EPOCHS"; fi
    if [[ -n "$JOBS" ]]; then echo "max_parallel: $JOBS"; fi
    echo "runs_dir: $(yaml_str "$runs")"
    echo "results_dir: $(yaml_str "$results")"
    echo "data_dir: $(yaml_str "$DATA_DIR")"
    echo "report: false"
}

# attack_keys [DEFAULT]: n, and the attacks (ATTACKS=..., else DEFAULT, else the sweep's default list).
attack_keys() {
    if [[ -n "$N_INPUTS" ]]; then echo "n: $N_INPUTS"; fi
    local attacks="${ATTACKS:-${1:-}}"
    if [[ -n "$attacks" ]]; then echo "attacks: $(yaml_list "$attacks")"; fi
    return 0
}

# add_spec NAME RESULTS < SPEC: print the spec (--print-spec), or write it to
# RESULTS/sweeps/NAME/spec.yaml and queue it for run_specs.
add_spec() {
    local name="$1" results="$2" text file
    text="$(cat)"
    if [[ -n "$PRINT_SPEC" ]]; then
        printf -- '---\n%s\n' "$text"
        return 0
    fi
    file="$results/sweeps/$name/spec.yaml"
    mkdir -p "$(dirname "$file")"
    printf '# written by %s\n%s\n' "$(basename "$0")" "$text" >"$file"
    SPECS+=("$file")
}

# run_specs: `defdistill sweep` on every queued spec, in order (it stops at the first that fails).
# With --print-spec the script ends here.
run_specs() {
    if [[ -n "$PRINT_SPEC" ]]; then exit 0; fi
    DEFDISTILL="$(find_defdistill)"
    local spec
    for spec in "${SPECS[@]}"; do
        echo "== defdistill sweep $spec"
        "$DEFDISTILL" sweep "$spec"
    done
}
