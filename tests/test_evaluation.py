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
    Figures,
    Thresholds,
    check_black_box_decision,
    check_black_box_transfer,
    check_full_budget_reaches_100,
    check_gradient_zero,
    check_iterative_vs_single_step,
    check_long_vs_default_pgd,
    check_margin_vs_cross_entropy,
    check_noise_vs_white_box,
    check_softmax_saturated,
    check_success_grows_with_eps,
    check_success_varies_with_eps,
    check_unbounded_reaches_100,
    diagnose_model,
    gradient_measurements,
    masking_checks,
    success_among,
    verdict_of,
)
from defdistill.evaluate.metrics import AttackOutcome
from defdistill.evaluate.worst_case import record_worst_case
from defdistill.store.runs import load_run
from defdistill.store.tables import ROBUSTNESS_COLUMNS, WORST_CASE_COLUMNS, read_records, record_rows

N = 120  # test inputs per diagnosis: enough for stable rates, a few seconds per model
EPS = (0.1, 0.2, 0.3)


@pytest.fixture(scope="module")
def diagnosed(trained_runs, tmp_path_factory):
    """The diagnoses of teacher-T1 and student-T100, once, into one results folder shared by
    the tests below (read-only)."""
    results = tmp_path_factory.mktemp("evaluation") / "results"
    kwargs = dict(eps=EPS, n=N, runs_dir=trained_runs.runs_dir, results_dir=results, device="cpu")
    teacher = diagnose_model(model="teacher-T1", **kwargs)
    student = diagnose_model(model="student-T100", **kwargs)
    return teacher, student, results


@pytest.fixture(scope="module")
def diagnosed_teacher_t100(trained_runs, diagnosed):
    """The diagnosis of teacher-T100 (trained at T=100, deployed at T=1), beside the others."""
    kwargs = dict(eps=EPS, n=N, runs_dir=trained_runs.runs_dir, results_dir=diagnosed[2], device="cpu")
    return diagnose_model(model="teacher-T100", **kwargs)


def _rate(rows, attack, eps):
    (row,) = [r for r in rows if r["attack"] == attack and r["eps"] == eps]
    return row["success_rate"]


def test_apgd_dlr_breaks_the_distilled_student_where_cross_entropy_pgd_fails(diagnosed):
    teacher, student, _ = diagnosed
    pgd, dlr = _rate(student.rows, "pgd", 0.2), _rate(student.rows, "apgd-dlr", 0.2)  # the middle eps
    assert pgd < 0.25, pgd  # cross-entropy gradients vanish: the defence looks robust
    assert dlr > 0.8, dlr  # the same budget on the logits' scale-invariant difference ratio
    teacher_pgd = _rate(teacher.rows, "pgd", 0.2)
    assert abs(dlr - teacher_pgd) < 0.15, (dlr, teacher_pgd)  # as breakable as the undefended net
    assert _rate(student.rows, "pgd", 1.0) < 0.95 <= _rate(teacher.rows, "pgd", 1.0)  # eps 1: any input


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


# The checks a model whose softmax saturates fails (digits, seed 0, 120 inputs): its gradient
# is zero, so the cross-entropy attacks stay flat and short of 100% even at eps 1, while noise,
# transfer, a decision-based attack and scale-invariant APGD-DLR break it.
MASKED_MODEL_FAILS = {
    "gradient_zero", "softmax_saturated", "success_varies_with_eps", "full_budget_reaches_100",
    "noise_vs_white_box", "black_box_transfer", "black_box_decision", "margin_vs_cross_entropy",
}  # fmt: skip


def test_diagnose_flags_the_distilled_student_as_gradient_masking(diagnosed):
    _, student, _ = diagnosed
    assert student.masking and student.verdict.startswith("masked: FGSM and cross-entropy PGD overstate")
    failed = {c.name for c in student.checks if not c.passed}
    assert failed >= MASKED_MODEL_FAILS, failed
    details = " ".join(c.detail for c in student.checks)
    assert "scale-invariant apgd-dlr beats cross-entropy pgd" in details
    assert "fgsm success stays flat" in details  # the same rate at every eps
    assert "signs: gradient_zero, softmax_saturated" in student.verdict  # the checks explain it
    assert _rate(student.rows, "apgd-dlr", 0.2) - _rate(student.rows, "pgd", 0.2) > 0.5


def test_diagnose_finds_no_masking_on_the_t1_teacher(diagnosed):
    teacher, _, _ = diagnosed
    assert not teacher.masking, teacher.verdict
    assert teacher.verdict.startswith("not-masked: "), teacher.verdict
    assert all(c.passed for c in teacher.checks)
    values = {c.name: c.value for c in teacher.checks}
    assert values["gradient_zero"] == 0.0 and values["full_budget_reaches_100"] == 1.0
    assert values["long_vs_default_pgd"] < Thresholds().more_effort_gain  # pgd has converged


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
    records = copy / "records" / "robustness"
    pgd_record = next(records.glob("digits__student-T100__pgd__linf__0.2*.json"))
    marked = json.loads(pgd_record.read_text()) | {"seconds": -1.0}  # a reused row keeps its mark
    pgd_record.write_text(json.dumps(marked))
    other = next(records.glob("digits__student-T100__fgsm__linf__0.1*.json"))
    digest = json.loads(other.read_text())["settings"]
    other.write_text(json.dumps(json.loads(other.read_text()) | {"seconds": -1.0, "settings": "other"}))
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
    assert "student-T100: masked: " in result.output
    frame = read_records(copy, "robustness")
    frame = frame[frame["model"] == "student-T100"]
    reused = frame[(frame["attack"] == "pgd") & (frame["eps"] == 0.2)]
    assert reused["seconds"].tolist() == [-1.0]
    rerun = frame[(frame["attack"] == "fgsm") & (frame["eps"] == 0.1)]  # made with other settings
    assert rerun["seconds"].tolist() != [-1.0] and rerun["settings"].tolist() == [digest]


def test_diagnose_records_the_longer_pgd_and_eps_1_beside_the_default_rows(diagnosed):
    _, student, results = diagnosed
    frame = read_records(results, "robustness")
    frame = frame[frame["model"] == "student-T100"]
    pgd = frame[frame["attack"] == "pgd"]
    assert pgd["eps"].tolist() == [*EPS, 1.0] and pgd["settings"].nunique() == 1  # one setting for all
    (long,) = frame[frame["attack"] == "pgd-long"].to_dict("records")  # its own rows, not pgd's
    assert long["eps"] == 0.2 and long["settings"] != pgd["settings"].iloc[0]
    assert set(frame[frame["attack"] == "apgd-dlr"]["eps"]) == {0.2}
    assert set(frame[frame["attack"] == "noise"]["eps"]) == {0.3, 1.0}
    worst = read_records(results, "worst_case")
    (at_1,) = worst[(worst["model"] == "student-T100") & (worst["eps"] == 1.0)].to_dict("records")
    assert at_1["ensemble_success"] == 1.0 > at_1["pgd"]  # noise covers what pgd misses at eps 1


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


# --- the checks, one by one, on synthetic figures ----------------------------------------

TH = Thresholds()


def test_gradient_and_saturation_checks_fail_on_most_inputs_flat():
    assert check_gradient_zero(0.0, 100).passed and not check_gradient_zero(0.9, 100).passed
    assert check_softmax_saturated(0.1).passed and not check_softmax_saturated(0.99).passed


def test_iterative_vs_single_step_fails_when_fgsm_beats_pgd():
    assert check_iterative_vs_single_step({0.1: 0.30, 0.2: 0.90}, {0.1: 0.33, 0.2: 0.96}).passed
    check = check_iterative_vs_single_step({0.1: 0.30, 0.2: 0.90}, {0.1: 0.33, 0.2: 0.60})
    assert not check.passed and math.isclose(check.value, 0.3) and "at eps 0.2" in check.detail


def test_success_grows_with_eps_fails_on_a_drop():
    assert check_success_grows_with_eps({"pgd": {0.1: 0.3, 0.2: 0.9, 1.0: 1.0}}).passed
    check = check_success_grows_with_eps({"pgd": {0.1: 0.3, 0.2: 0.9}, "transfer": {0.1: 0.5, 0.2: 0.3}})
    assert not check.passed and "transfer success falls" in check.detail


def test_success_varies_with_eps_flags_a_flat_rate_not_a_saturated_one():
    growing = check_success_varies_with_eps({"fgsm": {0.05: 0.06, 0.3: 0.99}, "pgd": {0.05: 0.07, 0.3: 1.0}})
    assert growing.passed
    # student-T100's FGSM: 0.0144 at every eps, while PGD creeps up
    flat = check_success_varies_with_eps(
        {"fgsm": {0.05: 0.0144, 0.3: 0.0144}, "pgd": {0.05: 0.05, 0.3: 0.14}}
    )
    assert not flat.passed and flat.value == 0.0 and "fgsm success stays flat" in flat.detail
    # flat at about 100% is a weak model, not a flat gradient
    assert check_success_varies_with_eps({"pgd": {0.2: 0.99, 0.3: 1.0}}).passed
    one_budget = check_success_varies_with_eps({"pgd": {0.2: 0.1}})
    assert one_budget.passed and math.isnan(one_budget.value) and "not measured" in one_budget.detail


def test_unbounded_checks_need_about_100_percent():
    assert check_unbounded_reaches_100(1.0, 0.6).passed and not check_unbounded_reaches_100(0.9, 0.6).passed
    assert check_full_budget_reaches_100(1.0, 1.0).passed
    check = check_full_budget_reaches_100(0.61, 1.0)  # cross-entropy pgd at eps 1 on student-T100
    assert not check.passed and check.value == 0.61 and "not the budget" in check.detail


def test_long_vs_default_pgd_fails_when_more_effort_finds_much_more():
    ok = check_long_vs_default_pgd({0.05: 0.06, 0.1: 0.341}, {0.1: 0.358})  # teacher-T1
    assert ok.passed and math.isclose(ok.value, 0.017) and "at eps 0.1" in ok.detail
    gain = TH.more_effort_gain + 0.03
    check = check_long_vs_default_pgd({0.1: 0.30}, {0.1: 0.30 + gain})
    assert not check.passed and "has not converged" in check.detail
    assert check_long_vs_default_pgd({0.1: 0.3}, {}).passed  # nothing to compare: not measured


def test_noise_vs_white_box_fails_when_random_noise_beats_pgd():
    assert check_noise_vs_white_box({0.3: 0.86}, {0.1: 0.34, 0.3: 1.0}).passed
    check = check_noise_vs_white_box({0.3: 0.90}, {0.1: 0.02, 0.3: 0.14})
    assert not check.passed and "random noise beats white-box pgd: 0.900 vs 0.140" in check.detail


def test_black_box_checks_fail_when_less_knowledge_does_better():
    assert check_black_box_transfer({0.2: 0.9}, {0.2: 0.95}, "surrogate-T1").passed
    check = check_black_box_transfer({0.2: 0.75}, {0.2: 0.09}, "surrogate-T1")
    assert not check.passed and "from surrogate-T1" in check.detail
    assert check_black_box_decision({0.2: 1.0}, {0.2: 0.96}, 50).passed
    check = check_black_box_decision({0.2: 1.0}, {0.2: 0.1}, 50)
    assert not check.passed and "same first 50 inputs" in check.detail


def test_margin_vs_cross_entropy_compares_scale_invariant_apgd_dlr_with_pgd():
    assert check_margin_vs_cross_entropy({0.1: 0.33}, {0.05: 0.06, 0.1: 0.34}).passed
    check = check_margin_vs_cross_entropy({0.1: 0.44}, {0.05: 0.07, 0.1: 0.09})
    assert not check.passed and "apgd-dlr beats cross-entropy pgd" in check.detail


def test_decision_comparison_uses_pgd_on_the_same_first_inputs():
    clean = torch.tensor([True, True, True, True])
    pgd = AttackOutcome("pgd", "linf", 0.2, clean, torch.tensor([False, False, True, True]), torch.ones(4))
    assert success_among(pgd, pgd.broken) == 0.5  # all four inputs
    assert success_among(pgd, pgd.broken, first=2) == 0.0  # the two a subset attack saw


def _figures(**changes) -> Figures:
    """teacher-T1-like figures on 360 inputs (digits, seed 0), with `changes`."""
    base = dict(
        n_correct=356, zero_fraction=0.0, saturated_fraction=0.0,
        fgsm={0.05: 0.06, 0.1: 0.27, 0.2: 0.89, 0.3: 1.0}, pgd={0.05: 0.06, 0.1: 0.31, 0.2: 0.96, 0.3: 1.0},
        pgd_full_budget=1.0, apgd_dlr={0.1: 0.28}, pgd_long={0.1: 0.32}, noise={0.3: 0.86},
        transfer={0.05: 0.06, 0.1: 0.3, 0.2: 0.95, 0.3: 1.0}, cw_success=1.0, cw_median=0.6,
        decision={0.05: 0.0, 0.1: 0.2, 0.2: 0.9, 0.3: 1.0}, pgd_on_decision_inputs={0.05: 0.04, 0.1: 0.3,
        0.2: 0.96, 0.3: 1.0}, n_decision=50, surrogate="surrogate-T1",
    )  # fmt: skip
    return Figures(**(base | changes))


def test_masking_checks_run_every_check_and_the_verdict_names_the_failures():
    checks = masking_checks(_figures())
    assert [c.name for c in checks] == [
        "gradient_zero", "softmax_saturated", "iterative_vs_single_step", "success_grows_with_eps",
        "success_varies_with_eps", "unbounded_reaches_100", "full_budget_reaches_100", "long_vs_default_pgd",
        "noise_vs_white_box", "black_box_transfer", "black_box_decision", "margin_vs_cross_entropy",
    ]  # fmt: skip
    assert verdict_of(checks) == (False, f"{NO_MASKING_VERDICT}: all 12 checks passed")
    masking, verdict = verdict_of(masking_checks(_figures(pgd_full_budget=0.61)))
    assert masking and verdict.startswith(f"{MASKING_VERDICT} (2 of 12 checks failed)")
    assert "pgd success falls from 1.000 at eps 0.3 to 0.610 at eps 1.0" in verdict  # eps 1 holds eps 0.3
    assert "at eps 1 (the whole input range) succeeds on 0.610" in verdict


def test_diagnose_flags_the_t100_teacher_too(diagnosed_teacher_t100):
    diagnosis = diagnosed_teacher_t100
    assert diagnosis.masking, diagnosis.verdict
    assert {c.name for c in diagnosis.checks if not c.passed} >= MASKED_MODEL_FAILS
