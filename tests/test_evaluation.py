"""Attacks that see through distillation, and the gradient-masking diagnosis."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from defdistill.cli import app
from defdistill.data.registry import load_dataset
from defdistill.errors import DefdistillError
from defdistill.evaluate.attacks import AttackSettings, attack_model, run_attack
from defdistill.evaluate.diagnose import (
    MASKING_VERDICT,
    NO_MASKING_VERDICT,
    diagnose_model,
    gradient_measurements,
)
from defdistill.store.runs import load_run
from defdistill.store.tables import ROBUSTNESS_COLUMNS, read_records, record_rows

N = 120  # test inputs per diagnosis: enough for stable rates, a few seconds per model
EPS = (0.1, 0.2, 0.3)


@pytest.fixture(scope="module")
def diagnosed(trained_runs, tmp_path_factory):
    """Both diagnoses, once, into one results folder shared by the tests below (read-only)."""
    results = tmp_path_factory.mktemp("evaluation") / "results"
    kwargs = dict(eps=EPS, n=N, runs_dir=trained_runs.runs_dir, results_dir=results, device="cpu")
    teacher = diagnose_model(model="teacher-T1", **kwargs)
    student = diagnose_model(model="student-T100", **kwargs)
    return teacher, student, results


def _rate(rows, attack, eps):
    (row,) = [r for r in rows if r["attack"] == attack and r["eps"] == eps]
    return row["success_rate"]


def test_margin_pgd_breaks_the_distilled_student_where_cross_entropy_pgd_fails(diagnosed):
    teacher, student, _ = diagnosed
    pgd, margin = _rate(student.rows, "pgd", 0.2), _rate(student.rows, "pgd-margin", 0.2)
    assert pgd < 0.25, pgd  # cross-entropy gradients vanish: the defence looks robust
    assert margin > 0.8, margin  # the same budget and steps on the logits' margin
    teacher_pgd = _rate(teacher.rows, "pgd", 0.2)
    assert abs(margin - teacher_pgd) < 0.15, (margin, teacher_pgd)  # as breakable as the undefended net


def test_pgd_t_uses_the_attacked_models_training_temperature(trained_runs, tmp_path):
    kwargs = dict(
        attacks=["pgd", "pgd-t"],
        eps=[0.2],
        n=100,
        runs_dir=trained_runs.runs_dir,
        results_dir=tmp_path,
        device="cpu",
    )
    student = {r["attack"]: r["success_rate"] for r in attack_model(model="student-T100", **kwargs).rows}
    assert student["pgd-t"] > 0.8 > 0.3 > student["pgd"], student
    teacher = {r["attack"]: r["success_rate"] for r in attack_model(model="teacher-T1", **kwargs).rows}
    assert teacher["pgd-t"] == teacher["pgd"]  # at T=1 it is PGD itself, same seed, same examples


def test_transfer_records_its_surrogate_after_the_contract_columns(trained_runs, tmp_path):
    report = attack_model(
        model="student-T100",
        attacks=["transfer"],
        eps=[0.2],
        n=100,
        runs_dir=trained_runs.runs_dir,
        results_dir=tmp_path,
        device="cpu",
    )
    (row,) = report.rows
    assert row["surrogate"] == "teacher-T1" and row["success_rate"] > 0.6
    header = (tmp_path / "robustness.csv").read_text().splitlines()[0].split(",")
    assert header[: len(ROBUSTNESS_COLUMNS)] == list(ROBUSTNESS_COLUMNS)
    assert header[len(ROBUSTNESS_COLUMNS)] == "surrogate"


def test_transfer_examples_are_reused_across_targets_with_the_numbers_of_a_fresh_run(trained_runs, tmp_path):
    from defdistill.evaluate import attacks

    kwargs = dict(attacks=["transfer"], eps=[0.1, 0.3], n=80, runs_dir=trained_runs.runs_dir, device="cpu")
    attacks._TRANSFER_CACHE.clear()
    fresh = attack_model(model="student-T100", results_dir=tmp_path / "a", **kwargs).rows
    attacks._TRANSFER_CACHE.clear()
    attack_model(model="teacher-T100", results_dir=tmp_path / "b", **kwargs)
    crafted = len(attacks._TRANSFER_CACHE)
    reused = attack_model(model="student-T100", results_dir=tmp_path / "b", **kwargs).rows
    assert crafted == 2 and len(attacks._TRANSFER_CACHE) == crafted  # every batch was a hit
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(reused) == drop(fresh)
    attack_model(model="student-T100", results_dir=tmp_path / "c", seed=1, **kwargs)
    assert len(attacks._TRANSFER_CACHE) == 2 * crafted  # another seed, another random start: crafted anew


def test_transfer_without_a_surrogate_is_a_clear_error(trained_runs, tmp_path):
    net, _ = load_run(trained_runs.student_t100)
    x, y = load_dataset("digits", "test")
    with pytest.raises(DefdistillError, match="--surrogate"):
        run_attack(net, x[:10], y[:10], "transfer", [0.1], AttackSettings())
    with pytest.raises(DefdistillError, match="surrogate 'teacher-T7'"):
        attack_model(
            model="student-T100",
            attacks=["transfer"],
            surrogate="teacher-T7",
            runs_dir=trained_runs.runs_dir,
            results_dir=tmp_path,
            device="cpu",
        )


def test_diagnose_flags_the_distilled_student_as_gradient_masking(diagnosed):
    _, student, _ = diagnosed
    assert student.masking and student.verdict.startswith(MASKING_VERDICT)
    failed = {c.name for c in student.checks if not c.passed}
    assert {"gradient_zero", "softmax_saturated", "margin_vs_cross_entropy", "black_box_transfer"} <= failed
    assert "margin-loss pgd beats cross-entropy pgd" in student.verdict
    assert _rate(student.rows, "pgd-margin", 0.2) - _rate(student.rows, "pgd", 0.2) > 0.5


def test_diagnose_finds_no_masking_on_the_t1_teacher(diagnosed):
    teacher, _, _ = diagnosed
    assert not teacher.masking, teacher.verdict
    assert teacher.verdict.startswith(NO_MASKING_VERDICT)
    assert all(c.passed for c in teacher.checks)
    assert {c.name: c.value for c in teacher.checks}["gradient_zero"] == 0.0


def test_diagnostics_table_has_one_row_per_check_and_the_verdict(diagnosed):
    teacher, student, results = diagnosed
    table = pd.read_csv(results / "diagnostics.csv")
    assert list(table.columns) == ["dataset", "model", "check", "value", "passed", "detail"]
    for diagnosis in (teacher, student):
        rows = table[table["model"] == diagnosis.model_path.name]
        assert list(rows["check"])[-1] == "verdict"
        assert set(rows["check"]) == {c.name for c in diagnosis.checks} | {"verdict"}
        verdict = rows[rows["check"] == "verdict"].iloc[0]
        assert verdict["detail"] == diagnosis.verdict and bool(verdict["passed"]) == (not diagnosis.masking)


def test_decision_attack_runs_on_a_subset_and_reports_a_median_distance(diagnosed):
    _, student, _ = diagnosed
    (hsj,) = [r for r in student.rows if r["attack"] == "hsj"]
    assert hsj["n"] == AttackSettings().decision_n and hsj["eps"] is None and hsj["norm"] == "linf"
    assert hsj["success_rate"] > 0.9 and 0 < hsj["median_dist"] < 0.5  # label queries only


def test_diagnose_reuses_recorded_rows_and_cli_prints_the_verdict(trained_runs, diagnosed, tmp_path):
    _, student, results = diagnosed
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    pgd_record = next((copy / "records" / "robustness").glob("digits__student-T100__pgd__linf__0.2*.json"))
    marked = json.loads(pgd_record.read_text()) | {"seconds": -1.0}  # a reused row keeps its mark
    pgd_record.write_text(json.dumps(marked))
    result = CliRunner().invoke(
        app,
        [
            "diagnose",
            "--model",
            "student-T100",
            "--n",
            str(N),
            "--eps",
            "0.1,0.2,0.3",
            "--runs-dir",
            str(trained_runs.runs_dir),
            "--results-dir",
            str(copy),
            "--device",
            "cpu",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"student-T100: {MASKING_VERDICT}" in result.output
    frame = read_records(copy, "robustness")
    reused = frame[(frame["model"] == "student-T100") & (frame["attack"] == "pgd") & (frame["eps"] == 0.2)]
    assert reused["seconds"].tolist() == [-1.0]


class _Scaled(torch.nn.Module):
    """Logits = scale * x on 4-pixel inputs: the logit margin is scale times the input's."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x.flatten(1)


def test_gradient_measurements_count_exact_zeros_and_saturated_softmax():
    y = torch.arange(4).repeat(2)
    # one-hot inputs of height 1 (margin 200: exp(-200) underflows float32) and 0.01 (margin 2)
    x = torch.cat([torch.eye(4), 0.01 * torch.eye(4)]).reshape(8, 1, 2, 2)
    correct, zero, saturated = gradient_measurements(_Scaled(200.0), x, y)
    assert correct.all()
    assert zero.tolist() == [True] * 4 + [False] * 4
    assert saturated.tolist() == [True] * 4 + [False] * 4
    _, zero, saturated = gradient_measurements(_Scaled(1.0), x, y)
    assert not zero.any() and not saturated.any()


def _row(model: str, attack: str, eps: float | None, success: float) -> dict:
    return {
        "dataset": "digits",
        "model": model,
        "role": "student",
        "T": 100.0,
        "attack": attack,
        "norm": "l2" if eps is None else "linf",
        "eps": eps,
        "n": 100,
        "clean_acc": 1.0,
        "robust_acc": 1 - success,
        "success_rate": success,
        "median_dist": 0.1,
        "seconds": 0.1,
    }


def test_worst_case_table_names_the_strongest_attack_next_to_the_standard_ones(tmp_path: Path):
    rows = [
        _row("student-T100", "fgsm", 0.1, 0.01),
        _row("student-T100", "pgd", 0.1, 0.02),
        _row("student-T100", "pgd-margin", 0.1, 0.40),
        _row("student-T100", "transfer", 0.1, 0.30),
        _row("student-T100", "fgsm", 0.2, 0.50),
        _row("student-T100", "pgd", 0.2, 0.90),
        _row("student-T100", "pgd-margin", 0.2, 0.90),
        _row("student-T100", "cw", None, 1.0),
    ]
    record_rows(tmp_path, "robustness", rows)
    table = pd.read_csv(tmp_path / "worst_case.csv")
    assert list(table.columns) == [
        "dataset",
        "model",
        "role",
        "T",
        "eps",
        "fgsm",
        "pgd",
        "worst_success",
        "worst_attack",
        "gap",
    ]
    assert table["eps"].tolist() == [0.1, 0.2]  # cw has no eps: it compares at no budget
    low, high = table.iloc[0], table.iloc[1]
    assert (low["fgsm"], low["pgd"], low["worst_success"], low["worst_attack"]) == (
        0.01,
        0.02,
        0.4,
        "pgd-margin",
    )
    assert math.isclose(low["gap"], 0.38)
    assert high["worst_attack"] == "pgd" and high["gap"] == 0  # a tie names the standard attack
    assert "| pgd-margin |" in (tmp_path / "worst_case.md").read_text()
