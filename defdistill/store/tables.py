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

# Derived from the robustness records, never recorded itself: per model and budget, the
# standard attacks' success next to the strongest attack's (the worst case to believe).
WORST_CASE_STANDARD = ("fgsm", "pgd")
WORST_CASE_COLUMNS = (
    "dataset", "model", "role", "T", "eps", *WORST_CASE_STANDARD, "worst_success", "worst_attack", "gap",
)  # fmt: skip

TEMPERATURE_COLUMNS = {"T", "teacher_T"}
ROLE_RANK = {"teacher": 0, "student": 1}

TABLES: dict[str, tuple[Sequence[str], Sequence[str]]] = {
    "robustness": (ROBUSTNESS_COLUMNS, ROBUSTNESS_KEY),
    "accuracy_gap": (ACCURACY_GAP_COLUMNS + ACCURACY_GAP_EXTRA, ACCURACY_GAP_KEY),
    "diagnostics": (DIAGNOSTICS_COLUMNS, DIAGNOSTICS_KEY),
    "compression": (COMPRESSION_COLUMNS, COMPRESSION_KEY),
    "privacy": (PRIVACY_COLUMNS, PRIVACY_KEY),
}
SORT_ORDER: dict[str, Sequence[str]] = {
    "robustness": ("dataset", "T", "role", "model", "attack", "norm", "eps"),
    "accuracy_gap": ("dataset", "T", "student"),
    "diagnostics": ("dataset", "model"),  # checks stay in record (alphabetical) order, the verdict last
    "compression": ("dataset", "role", "params", "model"),
    "privacy": ("dataset", "role", "T", "model", "attack"),
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


def read_records(results_dir: str | Path, table: str) -> pd.DataFrame:
    """All records of `table` as a DataFrame with the contract's columns first."""
    columns, _ = TABLES[table]
    rows = []
    for path in sorted((Path(results_dir) / RECORDS_DIR / table).glob("*.json")):
        try:
            rows.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue  # a damaged record drops out of the table; every other row stays
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


def _format_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1000 else f"{value:.4f}".rstrip("0").rstrip(".") or "0"
    return str(value)


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-readable pipe table."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(_format_value(v) for v in row) + " |" for row in frame.itertuples(index=False)]
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
    "worst_case": "Worst case: standard attacks' success next to the strongest attack's, per model and eps",
    "compression": "Compression: size, CPU latency per input and accuracy per model",
    "privacy": "Privacy: membership inference on the teacher's private members, per model and attack",
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
        if "robustness" in frames:
            frames["worst_case"] = worst_case_frame(frames["robustness"])
            write_table(results_dir, "worst_case", frames["worst_case"], TITLES["worst_case"])
    return frames


def worst_case_frame(robustness: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, model and L-inf budget: fgsm and pgd success, and the strongest attack's.

    Only fixed-budget L-inf rows compare at one eps (minimisation attacks such as cw have none).
    On a tie the standard attack is named: the worst case differs only where it is stronger.
    """
    rows = robustness[(robustness["norm"] == "linf") & robustness["eps"].notna()]
    if rows.empty:
        return pd.DataFrame(columns=list(WORST_CASE_COLUMNS))
    rank = {name: i for i, name in enumerate(WORST_CASE_STANDARD)}
    rows = rows.assign(rank=rows["attack"].map(rank).fillna(len(rank)))
    rows = rows.sort_values(["rank", "attack"], kind="stable")
    out = []
    for (dataset, model, eps), group in rows.groupby(["dataset", "model", "eps"], sort=False):
        success = group.set_index("attack")["success_rate"]
        standard = {name: success.get(name, math.nan) for name in WORST_CASE_STANDARD}
        worst = success.idxmax() if success.notna().any() else None
        best_standard = max((v for v in standard.values() if pd.notna(v)), default=math.nan)
        worst_success = success.get(worst, math.nan) if worst is not None else math.nan
        first = group.iloc[0]
        out.append(
            {"dataset": dataset, "model": model, "role": first["role"], "T": first["T"], "eps": eps,
             **standard, "worst_success": worst_success, "worst_attack": worst,
             "gap": worst_success - best_standard}
        )  # fmt: skip
    frame = pd.DataFrame(out, columns=list(WORST_CASE_COLUMNS))
    frame["role_rank"] = frame["role"].map(ROLE_RANK).fillna(len(ROLE_RANK))
    frame = frame.sort_values(["dataset", "T", "role_rank", "model", "eps"], kind="stable")
    return frame.drop(columns="role_rank").reset_index(drop=True)


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
