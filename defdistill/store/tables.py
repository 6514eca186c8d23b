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
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock

from ..core.fileio import atomic_write_json, atomic_write_text, ensure_writable_dir
from ..errors import DefdistillError
from .runs import format_T, read_meta, run_dir

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


def record_slug(table: str, row: dict[str, Any]) -> str:
    """The file stem of `row`'s record in records/<table>/ (its key's values)."""
    return key_slug(row[k] for k in TABLES[table][1])


def read_record(results_dir: str | Path, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """The record of the configuration `key` (the table's key columns) in `table`, or None when
    there is none or it cannot be read (a damaged record counts as missing: measure it again)."""
    path = Path(results_dir) / RECORDS_DIR / table / f"{record_slug(table, key)}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _ensure_writable(results_dir: Path) -> None:
    ensure_writable_dir(results_dir, "--results-dir")


def record_rows(results_dir: str | Path, table: str, rows: Sequence[dict[str, Any]]) -> None:
    """Store rows of `table` (one record file per configuration) and rebuild the tables."""
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
    rebuild_tables(results_dir)


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
    if "norm" in record and record["norm"] not in RECORD_NORMS:
        return f"norm is {record['norm']!r}, not one of {', '.join(sorted(RECORD_NORMS))}"
    if table == "robustness" and not (isinstance(record.get("attack"), str) and NAME.match(record["attack"])):
        return f"attack is {record.get('attack')!r}, not an attack name"
    return None


def validate_record(table: str, path: Path) -> dict[str, Any]:
    """Read one record file of `table`; a damaged or invalid one is a one-line error naming it."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DefdistillError(
            f"record {path} cannot be read ({exc}): delete it and measure that configuration again"
        ) from None
    fault = _record_fault(table, record)
    if fault:
        raise DefdistillError(
            f"record {path} is invalid: {fault}; delete it and measure that configuration again"
        )
    return record


def read_records(results_dir: str | Path, table: str, *, per_input: bool = False) -> pd.DataFrame:
    """All records of `table` as a DataFrame with the contract's columns first.

    Each record is validated (`validate_record`): one that is not valid JSON or breaks the
    schema stops with one line naming its file and the fault, never silently dropped.
    `per_input=True` keeps each row's per-input results (a dict column) for the worst case.
    """
    columns, _ = TABLES[table]
    rows = []
    for path in sorted((Path(results_dir) / RECORDS_DIR / table).glob("*.json")):
        record = validate_record(table, path)
        if not per_input:
            record.pop(PER_INPUT, None)
        rows.append(record)
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
    frame = frame.copy()
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


def rebuild_tables(results_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Rebuild every table in results_dir from its records; return them."""
    results_dir = Path(results_dir)
    _ensure_writable(results_dir)
    frames = {}
    with FileLock(str(results_dir / LOCK_FILE)):
        for table in TABLES:
            frame = read_records(results_dir, table)
            if frame.empty and not (results_dir / RECORDS_DIR / table).is_dir():
                continue
            write_table(results_dir, table, frame, TITLES[table])
            frames[table] = frame
    return frames


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


def record_accuracy_gap(
    results_dir: str | Path,
    student_meta: dict[str, Any],
    student_name: str,
    baseline: tuple[str, float] | None = None,
) -> dict[str, Any]:
    """Record the accuracy-gap row of a freshly distilled student.

    `baseline`: (name, test accuracy) of the undefended network (`undefended_baseline`), or None.
    """
    row = {
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
    }
    record_rows(results_dir, "accuracy_gap", [row])
    return row


def refresh_accuracy_baselines(results_dir: str | Path, runs_dir: str | Path | None = None) -> int:
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
        except (OSError, ValueError):
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
    if changed:
        rebuild_tables(results_dir)
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
