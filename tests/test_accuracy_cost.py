"""The cost of distillation in accuracy against the undefended network teacher-T1 (Papernot et al.)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from defdistill.store.runs import read_meta
from defdistill.store.tables import (
    ACCURACY_GAP_COLUMNS,
    ACCURACY_GAP_EXTRA,
    read_records,
    record_accuracy_gap,
    refresh_accuracy_baselines,
)


def test_distilled_student_records_its_cost_against_teacher_t1_beside_its_gap_to_its_own_teacher(
    trained_runs,
):
    results = trained_runs.runs_dir.parent / "results"  # where the fixture's distill recorded its row
    (row,) = read_records(results, "accuracy_gap").to_dict("records")
    student, baseline = read_meta(trained_runs.student_t100), read_meta(trained_runs.teacher_t1)
    assert row["teacher"] == "teacher-T100" and row["baseline"] == "teacher-T1"
    assert row["baseline_acc"] == baseline["clean_acc"]
    assert row["cost_pp"] == pytest.approx((baseline["clean_acc"] - student["clean_acc"]) * 100)
    assert row["gap_pp"] == pytest.approx(
        (read_meta(trained_runs.teacher_t100)["clean_acc"] - student["clean_acc"]) * 100
    )
    table = pd.read_csv(results / "accuracy_gap.csv")
    assert list(table.columns) == [*ACCURACY_GAP_COLUMNS, *ACCURACY_GAP_EXTRA]
    assert list(table.columns[-3:]) == ["baseline", "baseline_acc", "cost_pp"]


def test_refresh_fills_the_cost_of_a_student_recorded_before_teacher_t1_existed(trained_runs, tmp_path):
    results = tmp_path / "results"
    meta = read_meta(trained_runs.student_t100)
    row = record_accuracy_gap(results, meta, "student-T100")  # teacher-T1 not trained yet: empty
    assert row["baseline"] is None and row["cost_pp"] is None
    assert refresh_accuracy_baselines(results, tmp_path / "no-runs-here") == 0  # nothing known: unchanged

    assert refresh_accuracy_baselines(results, trained_runs.runs_dir) == 1
    (filled,) = read_records(results, "accuracy_gap").to_dict("records")
    acc = read_meta(trained_runs.teacher_t1)["clean_acc"]
    assert filled["baseline_acc"] == acc and filled["cost_pp"] == pytest.approx(
        (acc - meta["clean_acc"]) * 100
    )
    assert pd.read_csv(results / "accuracy_gap.csv")["cost_pp"].notna().all()  # tables rebuilt
    assert refresh_accuracy_baselines(results, trained_runs.runs_dir) == 0  # idempotent


def gap_row(student: str, teacher: str, T: float, teacher_acc: float, student_acc: float) -> dict:
    return {
        "dataset": "digits", "T": T, "teacher": teacher, "teacher_T": T, "teacher_acc": teacher_acc,
        "student": student, "student_acc": student_acc, "clean_acc": student_acc, "method": "soft",
    }  # fmt: skip


def test_without_runs_the_baseline_comes_from_the_row_taught_by_teacher_t1(tmp_path: Path):
    for T, student_acc in ((1.0, 0.98), (100.0, 0.95)):
        meta = gap_row(f"student-T{T:g}", f"teacher-T{T:g}", T, 0.97 if T > 1 else 0.99, student_acc)
        record_accuracy_gap(tmp_path, meta, meta["student"])
    assert refresh_accuracy_baselines(tmp_path) == 2
    rows = read_records(tmp_path, "accuracy_gap").set_index("student")
    assert rows.loc["student-T100", "baseline_acc"] == 0.99
    assert rows.loc["student-T100", "cost_pp"] == pytest.approx(4.0)  # against 0.99, not its teacher's 0.97
    assert rows.loc["student-T100", "gap_pp"] == pytest.approx(2.0)
    # Two rows that disagree about teacher-T1's accuracy: no baseline is guessed.
    other = tmp_path / "other"
    for name, acc in (("student-T1", 0.99), ("student-T1-hinton", 0.98)):
        record_accuracy_gap(other, gap_row(name, "teacher-T1", 1.0, acc, 0.97), name)
    assert refresh_accuracy_baselines(other) == 0


def test_report_runs_dir_fills_the_costs_it_tabulates(trained_runs, tmp_path):
    from typer.testing import CliRunner

    from defdistill.cli import app

    results = tmp_path / "results"
    shutil.copytree(trained_runs.runs_dir.parent / "results", results)
    record = next((results / "records" / "accuracy_gap").glob("*.json"))
    stale = json.loads(record.read_text()) | {"baseline": None, "baseline_acc": None, "cost_pp": None}
    record.write_text(json.dumps(stale))
    result = CliRunner().invoke(
        app, ["report", "--results-dir", str(results), "--runs-dir", str(trained_runs.runs_dir)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(record.read_text())["cost_pp"] is not None
    section = (results / "REPORT.md").read_text().split("### Accuracy gap and cost")[1]
    header = next(line for line in section.splitlines() if line.startswith("| T |"))
    assert header.endswith("| gap_pp | baseline_acc | cost_pp |")
