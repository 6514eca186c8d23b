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

from .errors import DefdistillError
from .runs import format_T
from .fileio import atomic_write_json, atomic_write_text

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

TEMPERATURE_COLUMNS = {"T", "teacher_T"}
ROLE_RANK = {"teacher": 0, "student": 1}

TABLES: dict[str, tuple[Sequence[str], Sequence[str]]] = {
    "robustness": (ROBUSTNESS_COLUMNS, ROBUSTNESS_KEY),
    "accuracy_gap": (ACCURACY_GAP_COLUMNS, ACCURACY_GAP_KEY),
}
SORT_ORDER: dict[str, Sequence[str]] = {
    "robustness": ("dataset", "T", "role", "model", "attack", "norm", "eps"),
    "accuracy_gap": ("dataset", "T", "student"),
}


def _slug(values: Iterable[Any]) -> str:
    text = "__".join("none" if v is None else str(v) for v in values)
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text)


def _ensure_writable(results_dir: Path) -> None:
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DefdistillError(f"cannot create results folder {results_dir} ({exc.strerror}): pass --results-dir") from None
    if not results_dir.is_dir() or not _is_writable(results_dir):
        raise DefdistillError(f"results folder {results_dir} is not writable: pass a writable --results-dir")


def _is_writable(directory: Path) -> bool:
    import os

    return os.access(directory, os.W_OK | os.X_OK)


def record_rows(results_dir: str | Path, table: str, rows: Sequence[dict[str, Any]]) -> None:
    """Store rows of `table` (one record file per configuration) and rebuild the tables."""
    results_dir = Path(results_dir)
    _ensure_writable(results_dir)
    columns, key = TABLES[table]
    for row in rows:
        missing = [c for c in columns if c not in row]
        if missing:
            raise ValueError(f"row for {table} lacks {missing}")
        path = results_dir / RECORDS_DIR / table / f"{_slug(row[k] for k in key)}.json"
        atomic_write_json(path, {c: row[c] for c in columns} | {k: v for k, v in row.items() if k not in columns})
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


def record_accuracy_gap(results_dir: str | Path, student_meta: dict[str, Any], student_name: str) -> dict[str, Any]:
    """Record the accuracy-gap row of a freshly distilled student."""
    row = {
        "dataset": student_meta["dataset"],
        "T": float(student_meta["T"]),
        "teacher": student_meta["teacher"],
        "teacher_T": float(student_meta["teacher_T"]),
        "teacher_acc": student_meta["teacher_acc"],
        "student": student_name,
        "student_acc": student_meta["clean_acc"],
        "gap_pp": (student_meta["teacher_acc"] - student_meta["clean_acc"]) * 100.0,
    }
    record_rows(results_dir, "accuracy_gap", [row])
    return row
