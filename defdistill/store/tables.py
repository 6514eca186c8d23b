"""Result tables in results/: one JSON record per configuration, merged into .csv and .md.

Each command writes the records of the configurations it measured (atomically, one file
each), then rebuilds the tables from all records under a file lock. Re-running a
configuration overwrites its record, so a table never holds the same row twice, and two
commands writing at once never lose each other's rows.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock

from ..core.fileio import atomic_write_json, atomic_write_text, ensure_writable_dir
from ..errors import DefdistillError
from .runs import META_FILE, current_weights, format_T, read_meta, run_dir

RECORDS_DIR = "records"
# A record's per-input results (clean correctness, broken or not, perturbation norm per input):
# kept in the record for the per-input worst case, never a column of the tables.
PER_INPUT = "per_input"
LOCK_FILE = ".tables.lock"

ROBUSTNESS_COLUMNS = (
    "dataset", "model", "role", "T", "attack", "norm", "eps", "n",
    "clean_acc", "robust_acc", "success_rate", "median_dist", "seconds",
)  # fmt: skip
ROBUSTNESS_KEY = ("dataset", "model", "attack", "norm", "eps")

ACCURACY_GAP_COLUMNS = (
    "dataset", "T", "teacher", "teacher_T", "teacher_acc", "student", "student_acc", "gap_pp",
)  # fmt: skip
ACCURACY_GAP_KEY = ("dataset", "student")
# Trailing columns beyond the contract's: which distillation method and how large each network is;
# then the cost against the undefended network (Papernot et al. 2016 compare the distilled network
# with the one trained without distillation): `baseline` (teacher-T1 of the same dataset),
# its accuracy, and (baseline_acc - student_acc) x 100. Empty when that run does not exist.
ACCURACY_GAP_EXTRA = (
    "method", "student_arch", "student_params", "teacher_params", "baseline", "baseline_acc", "cost_pp",
)  # fmt: skip
BASELINE_RUN = "teacher-T1"
# Columns a row may leave out (recorded empty): filled later, or by writers that predate them.
OPTIONAL_COLUMNS = {"accuracy_gap": ("baseline", "baseline_acc", "cost_pp")}

COMPRESSION_COLUMNS = (
    "dataset", "model", "role", "arch", "method", "params", "size_bytes",
    "us_per_input_b1", "us_per_input_b256", "clean_acc",
)  # fmt: skip
COMPRESSION_KEY = ("dataset", "model")

PRIVACY_COLUMNS = (
    "dataset", "model", "role", "T", "attack", "n_members", "n_nonmembers",
    "auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "advantage", "test_acc",
)  # fmt: skip
# The transfer set is part of the key, so the runs on the public half and on noise never overwrite
# each other's rows. Models trained on no transfer set (the teacher, the control) carry
# NO_TRANSFER_SET: the teacher of a seed is the same network in both runs (same private half,
# seed and recipe), so each run rewrites the one teacher row with the same numbers.
PRIVACY_KEY = ("dataset", "model", "transfer_set", "attack")
NO_TRANSFER_SET = "-"

DIAGNOSTICS_COLUMNS = ("dataset", "model", "check", "value", "passed", "detail")
DIAGNOSTICS_KEY = ("dataset", "model", "check")

# Recorded by the evaluation layer per model and budget: the per-input worst case over every
# attack run on the same inputs (an input is robust only if no attack broke it), beside the
# standard attacks' view of it; `attacks` is the list the union was taken over (sorted, joined by
# '+'), so two worst cases are compared only over the same attacks.
WORST_CASE_STANDARD = ("fgsm", "pgd")
WORST_CASE_COLUMNS = (
    "dataset", "model", "role", "T", "norm", "eps", "n", *WORST_CASE_STANDARD,
    "worst_success", "worst_attack", "ensemble_success", "ensemble_robust_acc", "ensemble_attacks", "gap",
    "attacks",
    "ensemble_robust_lo", "ensemble_robust_hi", "ensemble_success_lo", "ensemble_success_hi",
)  # fmt: skip
WORST_CASE_KEY = ("dataset", "model", "norm", "eps", "n")

# Papernot et al.'s adversarial-gradient amplitude per model (evaluate/sensitivity.py): the mean
# over inputs of the softmax Jacobian's L1 norm in float32 (as an attack sees it), the share of
# inputs where it is exactly zero, its exact log10 (mean and median), and the logits' beside it.
GRADIENTS_COLUMNS = (
    "dataset", "model", "role", "T", "n", "softmax_l1", "softmax_zero", "softmax_log10",
    "softmax_log10_median", "logits_l1", "seconds",
)  # fmt: skip
GRADIENTS_KEY = ("dataset", "model")

TEMPERATURE_COLUMNS = {"T", "teacher_T"}
ROLE_RANK = {"teacher": 0, "student": 1}

TABLES: dict[str, tuple[Sequence[str], Sequence[str]]] = {
    "robustness": (ROBUSTNESS_COLUMNS, ROBUSTNESS_KEY),
    "accuracy_gap": (ACCURACY_GAP_COLUMNS + ACCURACY_GAP_EXTRA, ACCURACY_GAP_KEY),
    "diagnostics": (DIAGNOSTICS_COLUMNS, DIAGNOSTICS_KEY),
    "worst_case": (WORST_CASE_COLUMNS, WORST_CASE_KEY),
    "compression": (COMPRESSION_COLUMNS, COMPRESSION_KEY),
    "privacy": (PRIVACY_COLUMNS, PRIVACY_KEY),
    "gradients": (GRADIENTS_COLUMNS, GRADIENTS_KEY),
}
SORT_ORDER: dict[str, Sequence[str]] = {
    "robustness": ("dataset", "T", "role", "model", "attack", "norm", "eps"),
    "accuracy_gap": ("dataset", "T", "student"),
    "worst_case": ("dataset", "T", "role", "model", "norm", "eps", "n"),
    "diagnostics": ("dataset", "model"),  # checks stay in record (alphabetical) order, the verdict last
    "compression": ("dataset", "role", "params", "model"),
    "privacy": ("dataset", "role", "T", "model", "attack"),
    "gradients": ("dataset", "T", "role", "model"),
}


def key_slug(values: Iterable[Any]) -> str:
    """A record's file stem from its key's values."""
    text = "__".join("none" if v is None else str(v) for v in values)
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text)


# Every record of a run carries the SHA-256 of the weights it measured: a run's identity is its
# dataset, name and weights, so a retrained run, or another folder of the same name, never
# replaces the rows of the network they were measured on. Records made before the hash was kept
# ("legacy") hold none: their weights are unknown, they are kept and never called stale.
WEIGHTS = "weights_sha256"
WEIGHTS_IN_STEM = 12  # hex digits of the hash in a record's file name
MODEL_COLUMN = {"accuracy_gap": "student"}  # the column naming the run a row measured


def record_slug(table: str, row: dict[str, Any]) -> str:
    """The file stem of `row`'s record in records/<table>/: its key's values, then the first hex
    digits of the weights it measured (none for a legacy row)."""
    slug = key_slug(row[k] for k in TABLES[table][1])
    digest = row.get(WEIGHTS)
    return f"{slug}__w{digest[:WEIGHTS_IN_STEM]}" if isinstance(digest, str) and digest else slug


def read_record(results_dir: str | Path, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """The record of the configuration `key` (the table's key columns, and the weights' SHA-256
    when the caller knows them) in `table`, or None when there is none or it cannot be read (a
    damaged record counts as missing: measure it again). With the weights given, a legacy record
    (made before the hash was kept) of the same key counts; one of other weights does not."""
    folder = Path(results_dir) / RECORDS_DIR / table
    stems = [record_slug(table, key)]
    if key.get(WEIGHTS):
        stems.append(key_slug(key[k] for k in TABLES[table][1]))
    for stem in stems:
        try:
            record = json.loads((folder / f"{stem}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(record, dict) and record.get(WEIGHTS) in (None, key.get(WEIGHTS)):
            return record
    return None


def _ensure_writable(results_dir: Path) -> None:
    ensure_writable_dir(results_dir, "--results-dir")


def write_records(results_dir: str | Path, table: str, rows: Sequence[dict[str, Any]]) -> None:
    """Store rows of `table`, one record file per configuration and weights, atomically."""
    results_dir = Path(results_dir)
    _ensure_writable(results_dir)
    columns = TABLES[table][0]
    for row in rows:
        row = {c: None for c in OPTIONAL_COLUMNS.get(table, ())} | dict(row)
        missing = [c for c in columns if c not in row]
        if missing:
            raise ValueError(f"row for {table} lacks {missing}")
        path = results_dir / RECORDS_DIR / table / f"{record_slug(table, row)}.json"
        atomic_write_json(
            path, {c: row[c] for c in columns} | {k: v for k, v in row.items() if k not in columns}
        )


def record_rows(
    results_dir: str | Path,
    table: str,
    rows: Sequence[dict[str, Any]],
    runs_dir: str | Path | None = None,
) -> None:
    """Store rows of `table` (`write_records`) and rebuild the tables (`runs_dir`: where the
    runs' current weights are read, see `read_records`)."""
    write_records(results_dir, table, rows)
    rebuild_tables(results_dir, runs_dir)


def same_row(found: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a stored record holds `wanted`'s values (floats to 1e-12, NaN equal to NaN and None)."""
    for key, value in wanted.items():
        have = found.get(key)
        if isinstance(value, float) and isinstance(have, (int, float)) and not isinstance(have, bool):
            if math.isnan(value) or math.isnan(have):
                if not (math.isnan(value) and math.isnan(have)):
                    return False
            elif not math.isclose(value, have, rel_tol=1e-12, abs_tol=1e-15):
                return False
        elif isinstance(value, float) and math.isnan(value) and have is None:
            continue
        elif have != value:
            return False
    return True


# What a record may hold: fractions in [0, 1], counts >= 1, known norms, plain names.
RATE_FIELDS = frozenset({
    "clean_acc", "robust_acc", "success_rate", "teacher_acc", "student_acc", "baseline_acc", "auc",
    "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "advantage", "test_acc", "ensemble_success",
    "ensemble_robust_acc", "robust_acc_lo", "robust_acc_hi", "success_lo", "success_hi",
    "ensemble_robust_lo", "ensemble_robust_hi", "ensemble_success_lo", "ensemble_success_hi",
    "softmax_zero",
})  # fmt: skip
COUNT_FIELDS = frozenset({"n", "n_members", "n_nonmembers"})
RECORD_NORMS = frozenset({"linf", "l2", "l0"})
NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def _record_fault(table: str, record: Any) -> str | None:
    """What is wrong with a record of `table`, or None."""
    if not isinstance(record, dict):
        return "it is not a JSON object"
    missing = [k for k in TABLES[table][1] if k not in record]
    if missing:
        return f"it lacks {', '.join(missing)}"
    for key, value in record.items():
        if key in RATE_FIELDS and value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"{key} is {value!r}, not a number"
            if not math.isnan(value) and not 0 <= value <= 1:
                return f"{key} is {value}, outside [0, 1]"
        bad_count = isinstance(value, bool) or not isinstance(value, int) or value < 1
        if key in COUNT_FIELDS and value is not None and bad_count:
            return f"{key} is {value!r}, not an integer >= 1"
    digest = record.get(WEIGHTS)
    if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        return f"{WEIGHTS} is {digest!r}, not a SHA-256 hex digest"
    if "norm" in record and record["norm"] not in RECORD_NORMS:
        return f"norm is {record['norm']!r}, not one of {', '.join(sorted(RECORD_NORMS))}"
    if table == "robustness" and not (isinstance(record.get("attack"), str) and NAME.match(record["attack"])):
        return f"attack is {record.get('attack')!r}, not an attack name"
    return None


def validate_record(table: str, path: Path) -> dict[str, Any]:
    """Read one record file of `table`; a damaged or invalid one is a one-line error naming it."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise DefdistillError(
            f"record {path} cannot be read ({why}): delete it and measure that configuration again"
        ) from None
    fault = _record_fault(table, record)
    if fault:
        raise DefdistillError(
            f"record {path} is invalid: {fault}; delete it and measure that configuration again"
        )
    return record


def check_records(results_dir: str | Path, tables: Sequence[str]) -> None:
    """Validate every record of `tables` (`validate_record`): a command that will rebuild them
    finds a damaged one in its preflight, not after its work."""
    for table in tables:
        for path in sorted((Path(results_dir) / RECORDS_DIR / table).glob("*.json")):
            validate_record(table, path)


@dataclass(frozen=True)
class StaleGroup:
    """Records of one run that measured other weights than the run's current ones."""

    table: str
    dataset: str
    model: str
    measured: str  # the SHA-256 the records carry
    current: str  # the run's (its meta.json's, else the newest record's)
    records: int


def describe_stale(groups: Sequence[StaleGroup]) -> list[str]:
    """One line per run and stale weights: how many records of which tables, and what to do."""
    merged: dict[tuple[str, str, str, str], list[StaleGroup]] = {}
    for group in groups:
        merged.setdefault((group.dataset, group.model, group.measured, group.current), []).append(group)
    lines = []
    for (dataset, model, measured, current), parts in merged.items():
        counts = " and ".join(f"{g.records} {g.table}" for g in parts)
        lines.append(
            f"stale: {counts} record(s) of {dataset}/{model} measured weights {measured[:WEIGHTS_IN_STEM]}, "
            f"not the run's current {current[:WEIGHTS_IN_STEM]}: left out of the tables; attack that run "
            "again (a sweep rerun does) or delete them"
        )
    return lines


def select_current(
    table: str,
    entries: Sequence[tuple[Path, dict[str, Any]]],
    runs_dir: str | Path | None = None,
    stale: list[StaleGroup] | None = None,
) -> list[dict[str, Any]]:
    """The records of `table` that describe the runs as they are: per configuration, the one of
    the run's current weights, else a legacy one (no hash: weights unknown); records of other
    weights are stale, left out and counted in `stale`.

    A run's current weights are its meta.json's in `runs_dir`; where that run is not at hand, the
    weights of its most recently written record of this table.
    """
    model_column = MODEL_COLUMN.get(table, "model")
    newest: dict[tuple[Any, Any], tuple[int, str]] = {}
    for path, record in entries:
        digest = record.get(WEIGHTS)
        if isinstance(digest, str):
            run = (record.get("dataset"), record.get(model_column))
            written = path.stat().st_mtime_ns if path.exists() else 0
            if run not in newest or written >= newest[run][0]:
                newest[run] = (written, digest)
    current: dict[tuple[Any, Any], str | None] = {}
    chosen: dict[str, dict[str, dict[str, Any]]] = {}
    counts: dict[tuple[Any, Any, Any], int] = {}
    for _, record in entries:
        digest = record.get(WEIGHTS)
        run = (record.get("dataset"), record.get(model_column))
        if isinstance(digest, str) and run not in current:
            found = current_weights(runs_dir, str(run[0]), str(run[1])) if runs_dir is not None else None
            current[run] = found or newest[run][1]
        slot = "legacy" if not isinstance(digest, str) else "fresh" if digest == current[run] else None
        if slot is None:
            group = (run[0], run[1], digest)
            counts[group] = counts.get(group, 0) + 1
            continue
        key = key_slug(record.get(k) for k in TABLES[table][1])
        chosen.setdefault(key, {})[slot] = record
    if stale is not None:
        stale.extend(
            StaleGroup(table, str(d), str(m), h, str(current[(d, m)]), n) for (d, m, h), n in counts.items()
        )
    return [slots.get("fresh") or slots["legacy"] for slots in chosen.values()]


def read_records(
    results_dir: str | Path,
    table: str,
    *,
    per_input: bool = False,
    runs_dir: str | Path | None = None,
    stale: list[StaleGroup] | None = None,
) -> pd.DataFrame:
    """The current records of `table` (`select_current`) as a DataFrame, contract columns first.

    Each record is validated (`validate_record`): one that is not valid JSON or breaks the
    schema stops with one line naming its file and the fault, never silently dropped.
    `per_input=True` keeps each row's per-input results (a dict column) for the worst case.
    Records of other weights than a run's current ones are left out and counted in `stale`.
    """
    columns, _ = TABLES[table]
    entries = []
    for path in sorted((Path(results_dir) / RECORDS_DIR / table).glob("*.json")):
        record = validate_record(table, path)
        if not per_input:
            record.pop(PER_INPUT, None)
        entries.append((path, record))
    rows = select_current(table, entries, runs_dir, stale)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(columns))
    extra = [c for c in frame.columns if c not in columns]
    frame = frame.reindex(columns=[*columns, *extra])
    order = [c for c in SORT_ORDER[table] if c in frame.columns]
    if "role" in frame.columns:  # teachers before students, whatever the alphabet says
        frame["role_rank"] = frame["role"].map(ROLE_RANK).fillna(len(ROLE_RANK))
        order = ["role_rank" if c == "role" else c for c in order]
    frame = frame.sort_values(order, na_position="first", kind="stable")
    return frame.drop(columns=["role_rank"], errors="ignore").reset_index(drop=True)


def format_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-4:  # a gradient amplitude of 1e-30 is not 0
            return f"{value:.3g}"
        return f"{value:.4g}" if abs(value) >= 1000 else f"{value:.4f}".rstrip("0").rstrip(".") or "0"
    return str(value)


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-readable pipe table."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(format_value(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def write_table(results_dir: str | Path, name: str, frame: pd.DataFrame, title: str | None = None) -> None:
    """Write `name`.csv and `name`.md in results_dir, atomically."""
    results_dir = Path(results_dir)
    frame = frame.drop(columns=[WEIGHTS], errors="ignore")  # the records carry it; tables keep their columns
    for column in TEMPERATURE_COLUMNS & set(frame.columns):
        frame[column] = [format_T(v) if pd.notna(v) else "" for v in frame[column]]
    atomic_write_text(results_dir / f"{name}.csv", frame.to_csv(index=False, float_format="%.6g"))
    heading = f"# {title}\n\n" if title else ""
    atomic_write_text(results_dir / f"{name}.md", heading + to_markdown(frame))


TITLES = {
    "robustness": "Robustness: attack success per model, attack and budget",
    "accuracy_gap": "Accuracy gap: teacher versus distilled student (test split)",
    "diagnostics": "Diagnostics: gradient-masking checks per model (Carlini et al. 2019)",
    "worst_case": "Worst case per input: an input counts as robust only if no attack broke it, "
    "next to the standard attacks' view (95% Wilson intervals)",
    "compression": "Compression: size, CPU latency per input and accuracy per model",
    "privacy": "Privacy: membership inference on the teacher's private members, per model and attack",
    "gradients": "Gradient amplitude: mean L1 norm of the input Jacobian of the softmax (float32; "
    "exact log10) and of the logits, per model (Papernot et al. 2016, Section V.B)",
}


@dataclass
class TablesBuild:
    """What `build_tables` wrote: the tables, and the stale record groups it left out."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    stale: list[StaleGroup] = field(default_factory=list)


def build_tables(results_dir: str | Path, runs_dir: str | Path | None = None) -> TablesBuild:
    """Rebuild every table in results_dir from its current records (`read_records`, with the runs'
    weights read from `runs_dir` when given); report the stale groups left out."""
    results_dir = Path(results_dir)
    _ensure_writable(results_dir)
    build = TablesBuild()
    with FileLock(str(results_dir / LOCK_FILE)):
        for table in TABLES:
            frame = read_records(results_dir, table, runs_dir=runs_dir, stale=build.stale)
            if frame.empty and not (results_dir / RECORDS_DIR / table).is_dir():
                continue
            frame = frame.drop(columns=[WEIGHTS], errors="ignore")  # in the records, not the tables
            write_table(results_dir, table, frame, TITLES[table])
            build.frames[table] = frame
    return build


def rebuild_tables(results_dir: str | Path, runs_dir: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """Rebuild every table in results_dir from its records; return them (see `build_tables`)."""
    return build_tables(results_dir, runs_dir).frames


def undefended_baseline(runs_dir: str | Path, dataset: str) -> tuple[str, float] | None:
    """(name, test accuracy) of the undefended network of `dataset`: teacher-T1's meta.json.

    None when the run does not exist or its meta.json cannot be read (the row stays empty; a
    later `refresh_accuracy_baselines` fills it).
    """
    path = run_dir(runs_dir, dataset, BASELINE_RUN)
    if not (path / "meta.json").is_file():
        return None
    try:
        meta = read_meta(path)
    except DefdistillError:
        return None
    acc = meta.get("clean_acc")
    if meta.get("study") or meta["role"] != "teacher" or float(meta["T"]) != 1.0 or acc is None:
        return None
    return BASELINE_RUN, float(acc)


def _baseline_columns(student_acc: float, baseline: tuple[str, float] | None) -> dict[str, Any]:
    if baseline is None:
        return {"baseline": None, "baseline_acc": None, "cost_pp": None}
    name, acc = baseline
    return {"baseline": name, "baseline_acc": acc, "cost_pp": (acc - student_acc) * 100.0}


def accuracy_gap_row(
    student_meta: dict[str, Any], student_name: str, baseline: tuple[str, float] | None = None
) -> dict[str, Any]:
    """The accuracy-gap row of a student, from its (validated) meta.json alone."""
    return {
        "dataset": student_meta["dataset"],
        "T": float(student_meta["T"]),
        "teacher": student_meta["teacher"],
        "teacher_T": float(student_meta["teacher_T"]),
        "teacher_acc": student_meta["teacher_acc"],
        "student": student_name,
        "student_acc": student_meta["clean_acc"],
        "gap_pp": (student_meta["teacher_acc"] - student_meta["clean_acc"]) * 100.0,
        "method": student_meta.get("method"),
        "student_arch": student_meta.get("arch"),
        "student_params": student_meta.get("params"),
        "teacher_params": student_meta.get("teacher_params"),
        **_baseline_columns(student_meta["clean_acc"], baseline),
        WEIGHTS: student_meta.get(WEIGHTS),
    }


def record_accuracy_gap(
    results_dir: str | Path,
    student_meta: dict[str, Any],
    student_name: str,
    baseline: tuple[str, float] | None = None,
) -> dict[str, Any]:
    """Record the accuracy-gap row of a freshly distilled student.

    `baseline`: (name, test accuracy) of the undefended network (`undefended_baseline`), or None.
    """
    row = accuracy_gap_row(student_meta, student_name, baseline)
    record_rows(results_dir, "accuracy_gap", [row])
    return row


def _has_gap_fields(meta: dict[str, Any]) -> bool:
    return (
        meta["role"] == "student"
        and not meta.get("study")
        and all(meta.get(k) is not None for k in ("teacher", "teacher_T", "teacher_acc", "clean_acc"))
    )


def derive_accuracy_gaps(results_dir: str | Path, runs_dir: str | Path | None) -> int:
    """Write the accuracy-gap record of every distilled student in `runs_dir` whose record is
    missing or does not say what its meta.json says (an interrupt between `save_run` and the
    record, a retrained student); the number written. Every run's meta.json is validated first
    (`read_meta`): a bad field stops here with one line and is never copied into a record."""
    if runs_dir is None or not Path(runs_dir).is_dir():
        return 0
    metas = []
    for meta_path in sorted(Path(runs_dir).glob(f"*/*/{META_FILE}")):
        meta = read_meta(meta_path.parent)
        if meta["dataset"] == meta_path.parent.parent.name:
            metas.append((meta_path.parent.name, meta))
    rows = []
    for name, meta in metas:
        if not _has_gap_fields(meta):
            continue
        row = accuracy_gap_row(meta, name, undefended_baseline(runs_dir, meta["dataset"]))
        found = read_record(results_dir, "accuracy_gap", row)
        if found is None or not same_row(found, {k: v for k, v in row.items() if k != WEIGHTS}):
            rows.append(row)
    if rows:
        write_records(results_dir, "accuracy_gap", rows)
    return len(rows)


def refresh_accuracy_baselines(
    results_dir: str | Path, runs_dir: str | Path | None = None, *, rebuild: bool = True
) -> int:
    """Fill or update the baseline columns of every accuracy_gap record; the number of records changed.

    The baseline comes from teacher-T1's meta.json in `runs_dir` (a sweep distils student-T100
    while teacher-T1 may still be training, so the row is filled afterwards). Where the runs are
    not at hand (`runs_dir` None or without the run), from the records themselves: a row whose
    teacher is teacher-T1 holds that run's accuracy, copied from the same meta.json when its
    student was distilled (used only when all such rows agree). A dataset with neither keeps
    its rows as they are. Tables are rebuilt when a record changed.
    """
    results_dir = Path(results_dir)
    folder = results_dir / RECORDS_DIR / "accuracy_gap"
    records = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(record, dict) and {"dataset", "student_acc"} <= set(record):
            records.append((path, record))
    baselines: dict[str, tuple[str, float] | None] = {}
    for dataset in {r["dataset"] for _, r in records}:
        found = undefended_baseline(runs_dir, dataset) if runs_dir is not None else None
        if found is None:
            accs = {
                r["teacher_acc"]
                for _, r in records
                if r["dataset"] == dataset
                and r.get("teacher") == BASELINE_RUN
                and r.get("teacher_acc") is not None
            }
            found = (BASELINE_RUN, float(accs.pop())) if len(accs) == 1 else None
        baselines[dataset] = found
    changed = 0
    for path, record in records:
        baseline = baselines[record["dataset"]]
        if baseline is None:
            continue
        columns = _baseline_columns(record["student_acc"], baseline)
        if all(record.get(k) == v for k, v in columns.items()):
            continue
        atomic_write_json(path, record | columns)
        changed += 1
    if changed and rebuild:
        rebuild_tables(results_dir, runs_dir)
    return changed


LEGACY_PRIVACY_KEY = ("dataset", "model", "attack")
PRIVACY_ROC_RECORDS = "privacy_roc"  # the stored ROC of each privacy row, under the row's file name
UNTRANSFERRED_ROLES = ("teacher", "control")  # trained on no transfer set


def migrate_privacy_records(results_dir: str | Path) -> int:
    """Move privacy records keyed without the transfer set (dataset, model, attack) to the current
    key, giving the teacher (and a control) the transfer set NO_TRANSFER_SET; their stored ROCs
    move with them. Numbers are untouched. Returns the number of records moved; tables are rebuilt
    when any moved."""
    results_dir = Path(results_dir)
    folder = results_dir / RECORDS_DIR / "privacy"
    moved = 0
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or not set(LEGACY_PRIVACY_KEY) <= set(record):
            continue
        if path.stem != key_slug(record[k] for k in LEGACY_PRIVACY_KEY):
            continue  # already under the current key
        if record.get("role") in UNTRANSFERRED_ROLES or "transfer_set" not in record:
            record["transfer_set"] = (
                NO_TRANSFER_SET if record.get("role") in UNTRANSFERRED_ROLES else "public"
            )
        stem = record_slug("privacy", record)
        atomic_write_json(folder / f"{stem}.json", record)
        roc = results_dir / RECORDS_DIR / PRIVACY_ROC_RECORDS / path.name
        if roc.is_file():
            curve = json.loads(roc.read_text(encoding="utf-8"))
            curve["transfer_set"] = record["transfer_set"]
            atomic_write_text(roc.with_name(f"{stem}.json"), json.dumps(curve, separators=(",", ":")) + "\n")
            roc.unlink()
        path.unlink()
        moved += 1
    if moved:
        rebuild_tables(results_dir)
    return moved
