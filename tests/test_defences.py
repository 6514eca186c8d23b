"""Adversarially trained teachers, robust distillation and the defences study (issue 18).

Training is one or two epochs on digits; the objectives themselves are tested in
test_robust_training.py.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import replace

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from defdistill.cli import app
from defdistill.evaluate.attacks import AttackSettings
from defdistill.studies import defences as defences_module
from defdistill.train.distill import distill
from defdistill.train.loop import fit, recipe_for, resolve_budget, train_teacher
from defdistill.train.robust import default_budget

runner = CliRunner()
EPS, STEPS, STEP_SIZE = default_budget("digits")
# Attacks cut short: the test checks the plumbing, not the strength of the evaluation.
LIGHT = AttackSettings(
    pgd_steps=10, cw_steps=20, cw_binary_search_steps=1, hsj_steps=2, hsj_initial_evals=10,
    hsj_max_evals=20,
)  # fmt: skip


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


@pytest.fixture(scope="module")
def robust_runs(tmp_path_factory: pytest.TempPathFactory):
    """teacher-T1-pgdat after one epoch of PGD adversarial training (read-only for tests)."""
    runs_dir = tmp_path_factory.mktemp("robust-runs") / "runs"
    result = train_teacher(epochs=1, adv="pgd", runs_dir=runs_dir, device="cpu")
    return runs_dir, result


def test_pgd_adversarial_teacher_is_named_apart_and_records_its_budget(robust_runs):
    runs_dir, result = robust_runs
    assert result.path.name == "teacher-T1-pgdat"
    meta = json.loads((result.path / "meta.json").read_text())
    assert meta["adv_method"] == "pgd" and meta["adv_paper"] == "Madry et al. 2018"
    assert (meta["adv_eps"], meta["adv_steps"], meta["adv_step_size"]) == pytest.approx(
        (EPS, STEPS, STEP_SIZE)
    )
    assert meta["adv_beta"] is None and meta["T"] == 1 and meta["amp"] is None
    assert meta["clean_acc"] > 0.5
    assert not (runs_dir / "digits" / "teacher-T1").exists()  # today's name is left alone


def test_trades_teacher_through_the_command_line(tmp_path):
    result = invoke(
        "train-teacher", "--adv", "trades", "--beta", "3", "--adv-steps", "2", "--epochs", "1",
        "--runs-dir", tmp_path / "runs", "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "teacher-T1-trades (trades, eps 0.1, 2 steps of 0.125, beta 3)" in result.output
    meta = json.loads((tmp_path / "runs" / "digits" / "teacher-T1-trades" / "meta.json").read_text())
    # a changed step count takes Madry's step 2.5 * eps / steps
    assert (meta["adv_method"], meta["adv_beta"], meta["adv_steps"]) == ("trades", 3.0, 2)
    assert meta["adv_step_size"] == pytest.approx(2.5 * EPS / 2)


@pytest.mark.parametrize(
    ("method", "name", "T"), [("ard", "student-T30-ard", 30.0), ("rslad", "student-T1-rslad", 1.0)]
)
def test_robust_distillation_students_from_the_robust_teacher(method, name, T, robust_runs, tmp_path):
    runs_dir, teacher = robust_runs
    result = distill(
        method=method, teacher="teacher-T1-pgdat", epochs=1, runs_dir=runs_dir,
        results_dir=tmp_path / "results", device="cpu",
    )  # fmt: skip
    try:
        meta = result.meta
        assert result.path.name == name
        assert (meta["method"], meta["T"], meta["teacher"]) == (method, T, "teacher-T1-pgdat")
        assert (meta["adv_method"], meta["adv_eps"], meta["adv_steps"]) == (method, EPS, STEPS)
        assert meta["alpha"] == (0.95 if method == "ard" else None)
        assert meta["clean_acc"] > 0.3
        gap = pd.read_csv(tmp_path / "results" / "accuracy_gap.csv")
        assert list(gap["student"]) == [name] and list(gap["method"]) == [method]
    finally:
        import shutil

        shutil.rmtree(result.path)  # the shared runs stay as they were


def test_fit_hands_the_model_and_inputs_to_an_objective_that_needs_them():
    calls = []

    class Recording:
        needs_inputs = True

        def __call__(self, model, x, targets, labels):
            calls.append((x.shape, targets.shape, labels.shape))
            return torch.nn.functional.cross_entropy(model(x), labels)

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x, y = torch.rand(10, 1, 8, 8), torch.arange(10)
    recipe = replace(recipe_for("digits"), epochs=1, batch_size=4)
    losses = fit(model, x, y, y, Recording(), recipe, torch.device("cpu"), seed=0)
    assert len(losses) == 1 and [c[0][0] for c in calls] == [4, 4, 2]
    with pytest.raises(Exception, match="float32"):
        fit(model, x, y, y, Recording(), recipe, torch.device("cpu"), seed=0, amp="bfloat16")


def test_budget_defaults_and_madry_step():
    assert resolve_budget("digits") == pytest.approx((EPS, STEPS, STEP_SIZE))
    assert resolve_budget("mnist") == (0.3, 40, 0.01)
    assert resolve_budget("digits", eps=0.2) == pytest.approx((0.2, 5, 0.1))
    assert resolve_budget("digits", eps=0.2, step_size=0.01) == pytest.approx((0.2, 5, 0.01))
    assert resolve_budget("digits", eps=0.0) == pytest.approx((0.0, 5, STEP_SIZE))  # eps 0 is allowed


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train-teacher", "--adv", "fgsm"], "unknown adversarial training method (--adv) 'fgsm'"),
        (["train-teacher", "--adv", "pgd", "--adv-eps", "1.5"], "--adv-eps must be a number in [0, 1]"),
        (["train-teacher", "--adv", "pgd", "--adv-eps", "-0.1"], "--adv-eps must be a number in [0, 1]"),
        (["train-teacher", "--adv", "pgd", "--adv-steps", "0"], "--adv-steps must be an integer >= 1"),
        (
            ["train-teacher", "--adv", "pgd", "--adv-step-size", "0"],
            "--adv-step-size must be a finite number > 0",
        ),
        (["train-teacher", "--adv", "trades", "--beta", "-1"], "--beta must be a finite number >= 0"),
        (["train-teacher", "--adv", "pgd", "--beta", "6"], "does not apply to --adv pgd"),
        (["train-teacher", "--adv-eps", "0.1"], "add --adv pgd or --adv trades"),
        (["train-teacher", "--adv", "pgd", "--T", "100"], "trains at T=1"),
        (["train-teacher", "--adv", "pgd", "--amp", "on"], "float32"),
        (["distill", "--method", "ard"], "pass --teacher"),
        (["distill", "--method", "rslad"], "pass --teacher"),
        (["distill", "--method", "rslad", "--teacher", "teacher-T1", "--T", "100"], "drop --T"),
        (
            ["distill", "--method", "rslad", "--teacher", "teacher-T1", "--alpha", "0.5"],
            "--alpha does not apply",
        ),
        (["distill", "--method", "ard", "--teacher", "teacher-T1", "--adv-eps", "2"], "--adv-eps must be"),
        (
            ["distill", "--method", "ard", "--teacher", "teacher-T1", "--adv-steps", "0"],
            "--adv-steps must be",
        ),
        (["distill", "--method", "ard", "--teacher", "t", "--transfer-set", "noise"], "--transfer-set noise"),
        (["distill", "--adv-eps", "0.1"], "apply to --method ard or rslad"),
        (["defences", "--T", "1"], "T > 1"),
        (["defences", "--eps", "2"], "epsilon must lie in [0, 1]"),
        (["defences", "--attacks", "fgsm,nope"], "unknown attack 'nope'"),
        (["defences", "--epochs", "0"], "--epochs must be a positive integer"),
    ],
)
def test_bad_adversarial_input_is_one_line_exit_2_before_training(args, fragment, tmp_path):
    folders = ["--runs-dir", tmp_path / "runs", "--data-dir", tmp_path / "no-data"]
    if args[0] != "train-teacher":
        folders += ["--results-dir", tmp_path / "results"]
    started = time.perf_counter()
    assert_one_line_error(invoke(*args, *folders, "--device", "cpu"), fragment)
    assert time.perf_counter() - started < 10
    assert not list((tmp_path / "runs").rglob("meta.json")) and not (tmp_path / "results").exists()


def test_adversarial_training_refuses_torchrun_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = invoke("train-teacher", "--adv", "pgd", "--runs-dir", tmp_path / "runs", "--device", "cpu")
    assert_one_line_error(result, "one process")


def test_robust_accuracy_prefers_the_per_input_ensemble():
    worst = pd.DataFrame({"clean_acc": [0.9], "worst_success": [0.5], "ensemble_robust_acc": [0.3]})
    acc, source = defences_module.robust_accuracy(worst)
    assert list(acc) == [0.3] and "ensemble" in source
    acc, source = defences_module.robust_accuracy(worst.drop(columns="ensemble_robust_acc"))
    assert list(acc) == pytest.approx([0.45]) and "single" in source


def test_defences_study_end_to_end_then_reused_through_the_command_line(tmp_path, monkeypatch):
    runs, results = tmp_path / "runs", tmp_path / "results"
    report = defences_module.run_defences(
        epochs=2, n=60, eps=(0.1, 0.3), attacks=("fgsm", "pgd"), settings=LIGHT, runs_dir=runs,
        results_dir=results, device="cpu",
    )  # fmt: skip
    keys = ["standard", "distillation-teacher", "defensive-distillation", "pgd-at", "trades", "ard", "rslad"]
    assert list(report.runs) == keys and report.reused == []
    table = pd.read_csv(results / "defences.csv")
    assert list(table["defence"]) == keys and set(table["dataset"]) == {"digits"}
    assert (results / "defences.md").read_text().startswith("# Defences")
    for column in ("fgsm_success@0.1", "pgd_success@0.3", "robust_acc@0.1", "robust_acc@0.3"):
        assert table[column].between(0, 1).all(), column
    assert (table["robust_acc@0.1"] <= table["clean_acc"] + 1e-9).all()
    # the calibrated verdict: True masked, False not masked, empty when inconclusive
    assert set(table["masked"].dropna()) <= {True, False} and (table["n"] == 60).all()
    assert (table["train_seconds"] > 0).all()
    row = table.set_index("defence").loc["ard"]
    assert (row["model"], row["teacher"]) == ("student-T30-ard", "teacher-T1-pgdat")

    # the same study again: every run is reused, the table is rewritten
    monkeypatch.setattr(
        defences_module, "run_defences", functools.partial(defences_module.run_defences, settings=LIGHT)
    )
    result = invoke(
        "defences", "--epochs", "2", "--n", "60", "--eps", "0.1,0.3", "--runs-dir", runs,
        "--results-dir", results, "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "defences on digits: 7 models, 7 reused" in result.output
    assert "teacher-T1-pgdat: " in result.output  # its diagnosis verdict
    assert list(pd.read_csv(results / "defences.csv")["defence"]) == keys
