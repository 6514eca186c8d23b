"""Every command through Typer's CliRunner, and each bad input's one-line message."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from defdistill.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def test_train_teacher_command_writes_a_run_and_prints_a_summary(tmp_path):
    result = invoke(
        "train-teacher",
        "--T",
        "1",
        "--epochs",
        "2",
        "--runs-dir",
        tmp_path / "runs",
        "--device",
        "cpu",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert "teacher-T1: test accuracy" in result.output
    assert (tmp_path / "runs" / "digits" / "teacher-T1" / "model.safetensors").is_file()


def test_distill_command_says_when_it_falls_back_to_a_T1_teacher(runs_copy, tmp_path):
    shutil.rmtree(runs_copy / "digits" / "teacher-T100")
    result = invoke(
        "distill",
        "--T",
        "100",
        "--epochs",
        "2",
        "--runs-dir",
        runs_copy,
        "--results-dir",
        tmp_path / "results",
        "--device",
        "cpu",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert "Hinton-style" in result.output
    assert "student-T100 (soft" in result.output and "test accuracy" in result.output


def test_attack_and_tables_commands_write_and_rebuild_the_tables(trained_runs, tmp_path):
    results = tmp_path / "results"
    result = invoke(
        "attack",
        "--model",
        "student",
        "--attacks",
        "fgsm",
        "--eps",
        "0.1,0.3",
        "--n",
        "30",
        "--runs-dir",
        trained_runs.runs_dir,
        "--results-dir",
        results,
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert "student-T100: 2 rows" in result.output
    (results / "robustness.csv").unlink()
    result = invoke("tables", "--results-dir", results, "--quiet")
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(results / "robustness.csv")) == 2


def test_demo_command_runs_the_whole_pipeline(tmp_path):
    result = invoke(
        "demo",
        "--epochs",
        "2",
        "--n",
        "20",
        "--runs-dir",
        tmp_path / "runs",
        "--results-dir",
        tmp_path / "results",
        "--device",
        "cpu",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert "demo on digits: 3 models" in result.output
    table = pd.read_csv(tmp_path / "results" / "robustness.csv")
    assert set(table["model"]) == {"teacher-T1", "teacher-T100", "student-T100"}
    assert {"fgsm", "pgd", "cw"} <= set(table["attack"])
    assert (tmp_path / "results" / "accuracy_gap.md").is_file()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["train-teacher", "--T", "0"], ["temperature must be", "> 0"]),
        (["train-teacher", "--T", "-5"], ["temperature must be"]),
        (["train-teacher", "--T", "nan"], ["temperature must be"]),
        (["train-teacher", "--dataset", "imagenet"], ["unknown dataset 'imagenet'", "digits"]),
        (["train-teacher", "--epochs", "0"], ["--epochs must be a positive integer"]),
        (["train-teacher", "--device", "tpu"], ["unknown device 'tpu'"]),
        (["distill", "--T", "100"], ["no teacher", "train-teacher --T 100"]),
        (["distill", "--alpha", "1.5"], ["--alpha must lie in [0, 1]"]),
        (["attack", "--model", "teacher"], ["ambiguous", "teacher-T1", "teacher-T100"]),
        (["attack", "--attacks", "deepfool"], ["unknown attack 'deepfool'"]),
        (["attack", "--eps", "-0.1"], ["epsilon must lie in [0, 1]"]),
        (["attack", "--eps", "abc"], ["--eps takes comma-separated numbers"]),
        (["attack", "--n", "0"], ["--n must be a positive integer"]),
        (["attack", "--model", "student-T7"], ["no run 'student-T7'"]),
        (["attack", "--dataset", "mnist", "--model", "teacher-T1"], []),
    ],
)
def test_bad_input_ends_with_one_clear_line(args, fragments, trained_runs, tmp_path):
    runs = tmp_path / "empty-runs" if args[0] == "distill" else trained_runs.runs_dir
    result = invoke(*args, "--runs-dir", runs, "--data-dir", tmp_path / "data")
    assert_one_line_error(result, *fragments)


def test_corrupt_checkpoint_is_one_clear_line_and_is_left_untouched(runs_copy, tmp_path):
    weights = runs_copy / "digits" / "student-T100" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    before = weights.read_bytes()
    result = invoke("attack", "--model", "student", "--runs-dir", runs_copy, "--results-dir", tmp_path / "r")
    assert_one_line_error(result, "model.safetensors", "train the run again")
    assert weights.read_bytes() == before
    assert not (tmp_path / "r" / "robustness.csv").exists()


def test_checkpoint_for_another_dataset_is_refused(runs_copy, tmp_path):
    target = runs_copy / "mnist" / "teacher-T1"
    shutil.copytree(runs_copy / "digits" / "teacher-T1", target)
    result = invoke(
        "attack",
        "--dataset",
        "mnist",
        "--model",
        str(target),
        "--runs-dir",
        runs_copy,
        "--data-dir",
        tmp_path / "data",
    )
    assert_one_line_error(result, "trained on 'digits'", "--dataset digits")
