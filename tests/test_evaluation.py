"""Attacks that see through distillation, and the gradient-masking diagnosis."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import assert_one_line_error, invoke

from defdistill.data.registry import load_dataset
from defdistill.errors import DefdistillError
from defdistill.evaluate.attacks import AttackSettings, attack_model, run_attack
from defdistill.evaluate.diagnose import (
    MASKING_VERDICT,
    NO_MASKING_VERDICT,
    diagnose_model,
    gradient_measurements,
)
from defdistill.evaluate.worst_case import record_worst_case
from defdistill.store.runs import load_run
from defdistill.store.tables import ROBUSTNESS_COLUMNS, WORST_CASE_COLUMNS, read_records, record_rows

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
    assert "surrogate" in header[len(ROBUSTNESS_COLUMNS) :] and "surrogate_seed" in header


def test_transfer_examples_are_reused_across_targets_with_the_numbers_of_a_fresh_run(trained_runs, tmp_path):
    from defdistill.evaluate import gradient

    kwargs = dict(attacks=["transfer"], eps=[0.1, 0.3], n=80, runs_dir=trained_runs.runs_dir, device="cpu")
    gradient._TRANSFER_CACHE.clear()
    fresh = attack_model(model="student-T100", results_dir=tmp_path / "a", **kwargs).rows
    gradient._TRANSFER_CACHE.clear()
    attack_model(model="teacher-T100", results_dir=tmp_path / "b", **kwargs)
    crafted = len(gradient._TRANSFER_CACHE)
    reused = attack_model(model="student-T100", results_dir=tmp_path / "b", **kwargs).rows
    assert crafted == 2 and len(gradient._TRANSFER_CACHE) == crafted  # every batch was a hit
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(reused) == drop(fresh)
    attack_model(model="student-T100", results_dir=tmp_path / "c", seed=1, **kwargs)
    assert len(gradient._TRANSFER_CACHE) == 2 * crafted  # another seed, another random start: crafted anew


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
    result = invoke(
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


def _flags(broken: set[int], n: int = 10) -> str:
    return "".join("1" if i in broken else "0" for i in range(n))


def _outcome_row(attack: str, eps: float | None, broken: set[int], dist: float = 0.05) -> dict:
    """A robustness record of 10 inputs, 9 classified correctly (input 9 is not)."""
    row = _row("student-T100", attack, eps, len(broken) / 9) | {"n": 10, "clean_acc": 0.9}
    row["per_input"] = {
        "clean": _flags(set(range(9))),
        "broken": _flags(broken),
        "dist": [dist if i in broken else None for i in range(10)],
    }
    return row


def test_worst_case_is_the_per_input_union_not_the_best_single_attack(tmp_path: Path):
    rows = [
        _outcome_row("fgsm", 0.1, {0}),
        _outcome_row("pgd", 0.1, {0, 1}),
        _outcome_row("pgd-margin", 0.1, {2, 3, 4}),  # the strongest alone: 3 of 9
        _outcome_row("transfer", 0.1, {1, 5}),  # adds input 5 that no other attack broke
        _outcome_row("fgsm", 0.2, {0, 1, 2}),
        _outcome_row("pgd", 0.2, {0, 1, 2, 3}),
        _outcome_row("cw", None, {0, 1, 2, 3, 4, 5, 6, 7, 8}, dist=0.5),  # L2: never mixed into L-inf
    ]
    record_rows(tmp_path, "robustness", rows)
    (low, high) = record_worst_case(tmp_path, "digits", "student-T100")
    assert (low["eps"], low["fgsm"], low["pgd"]) == (0.1, 1 / 9, 2 / 9)
    assert (low["worst_attack"], low["worst_success"]) == ("pgd-margin", 3 / 9)
    assert low["ensemble_success"] == 6 / 9 and low["ensemble_robust_acc"] == 3 / 10  # inputs 6, 7, 8
    assert low["ensemble_attacks"] == "pgd-margin+pgd+transfer"  # greedy cover order
    assert math.isclose(low["gap"], 6 / 9 - 2 / 9)
    assert low["ensemble_robust_lo"] < 0.3 < low["ensemble_robust_hi"]  # a Wilson interval around it
    assert high["ensemble_success"] == 4 / 9 and high["ensemble_attacks"] == "pgd"
    table = pd.read_csv(tmp_path / "worst_case.csv")
    assert list(table.columns) == list(WORST_CASE_COLUMNS)
    assert table["eps"].tolist() == [0.1, 0.2]  # cw has no eps and another norm


def test_a_minimal_perturbation_attack_counts_within_eps_in_its_own_norm(tmp_path: Path):
    rows = [
        _outcome_row("pgd", 0.1, {0}) | {"norm": "l2"},
        _outcome_row("cw", None, {1, 2}, dist=0.08),  # within 0.1
        _outcome_row("fgsm", 0.05, {0}) | {"norm": "l2"},
    ]
    record_rows(tmp_path, "robustness", rows)
    by_eps = {row["eps"]: row for row in record_worst_case(tmp_path, "digits", "student-T100")}
    assert by_eps[0.1]["ensemble_success"] == 3 / 9  # pgd's input 0 and cw's 1 and 2
    assert by_eps[0.05]["ensemble_success"] == 1 / 9  # cw's distances 0.08 exceed 0.05


@pytest.mark.parametrize("model", ["teacher-T1", "student-T100"])
def test_pgd_is_at_least_as_strong_as_fgsm_at_every_eps(trained_runs, model, tmp_path):
    report = attack_model(
        model=model,
        attacks=["fgsm", "pgd"],
        eps=[0.02, 0.05, 0.1, 0.2, 0.3],
        runs_dir=trained_runs.runs_dir,
        results_dir=tmp_path,
        device="cpu",
    )
    success = {(r["attack"], r["eps"]): r["success_rate"] for r in report.rows}
    for eps in (0.02, 0.05, 0.1, 0.2, 0.3):
        assert success["pgd", eps] >= success["fgsm", eps], (eps, success)


def test_restarts_only_add_broken_inputs(trained_runs):
    net, _ = load_run(trained_runs.teacher_t1)
    x, y = load_dataset("digits", "test")
    x, y = x[:120], y[:120]
    once = run_attack(net, x, y, "pgd", [0.1], AttackSettings(pgd_steps=5), "cpu")[0]
    thrice = run_attack(net, x, y, "pgd", [0.1], AttackSettings(pgd_steps=5, pgd_restarts=3), "cpu")[0]
    first = once["per_input"]["broken"]
    more = thrice["per_input"]["broken"]
    assert all(b == "1" for a, b in zip(first, more, strict=True) if a == "1")  # the first start is kept
    assert thrice["success_rate"] >= once["success_rate"] and thrice["settings"] != once["settings"]


def test_every_new_attack_runs_through_the_registry_and_keeps_per_input_results(trained_runs):
    net, _ = load_run(trained_runs.student_t100)
    x, y = load_dataset("digits", "test")
    x, y = x[:40], y[:40]
    settings = AttackSettings(apgd_steps=10, square_queries=50, noise_draws=5)
    for attack in ("apgd-ce", "apgd-dlr", "apgd-t", "square", "autoattack", "noise", "jsma", "jsma-z"):
        rows = run_attack(net, x, y, attack, [0.1], settings, "cpu")
        for row in rows:
            per_input = row["per_input"]
            assert len(per_input["clean"]) == len(per_input["broken"]) == len(per_input["dist"]) == 40
            broken = sum(c == "1" for c in per_input["broken"])
            assert row["robust_acc"] == pytest.approx(
                (sum(c == "1" for c in per_input["clean"]) - broken) / 40
            )
            assert row["robust_acc_lo"] <= row["robust_acc"] <= row["robust_acc_hi"]
    dlr = run_attack(net, x, y, "apgd-dlr", [0.1], settings, "cpu")[0]
    ce = run_attack(net, x, y, "apgd-ce", [0.1], settings, "cpu")[0]
    assert dlr["success_rate"] > ce["success_rate"]  # the scale-invariant loss sees past the saturation


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--attacks", "square", "--queries", "0"], "--queries must be a positive integer"),
        (["--attacks", "pgd-margin", "--norm", "l2"], "attack 'pgd-margin' supports linf, not l2"),
        (["--attacks", "pgd", "--norm", "l2", "--eps", "9"], "an L2 epsilon must lie in [0, 8]"),
        (["--attacks", "pgd", "--eps", "1.5"], "epsilon must lie in [0, 1]"),
        (["--attacks", "pgd", "--norm", "l3"], "unknown norm 'l3'"),
        (["--attacks", "pgd", "--restarts", "0"], "--restarts must be a positive integer"),
    ],
)
def test_bad_attack_options_are_one_line_before_any_model_is_loaded(args, fragment, tmp_path):
    result = invoke("attack", *args, "--runs-dir", tmp_path / "no-runs")
    assert result.exit_code == 2, result.output
    assert_one_line_error(result, fragment)
