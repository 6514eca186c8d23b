"""Every command through Typer's CliRunner, and each bad input's one-line message."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import assert_one_line_error, invoke

from defdistill.cli import app


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
        "--force",
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
    result = invoke("tables", "--results-dir", results, "--runs-dir", trained_runs.runs_dir)
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(results / "robustness.csv")) == 2
    # The student's accuracy-gap row is derived from its run, so `tables` restores it too.
    assert result.stdout.strip().splitlines() == [
        "recomputed 1 accuracy-gap rows from the primary data",
        f"rebuilt robustness (2 rows), accuracy_gap (1 rows), worst_case (2 rows) in {results}",
    ]


@pytest.mark.slow
def test_demo_command_runs_the_whole_pipeline_and_answers_on_one_screen(tmp_path):
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
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.rstrip().splitlines()
    assert lines[-1].startswith("demo on digits: 3 models")
    widths = [len(line.replace(str(tmp_path), "/tmp/x")) for line in lines]  # a path is never cut
    assert len(lines) <= 40 and max(widths) <= 100, result.stdout
    for expected in ("Test accuracy", "Attack success at eps 0.1", "worst case", "cw (l2, unbounded)"):
        assert expected in result.stdout
    verdicts = [line for line in lines if "checks failed" in line and line.startswith("  ")]
    assert [line.split(":")[0].strip() for line in verdicts] == ["teacher-T1", "teacher-T100", "student-T100"]
    assert "…" not in result.stdout
    assert (tmp_path / "results" / "summary.png").stat().st_size > 10_000
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


def test_demo_writes_into_results_demo_by_default_and_the_other_commands_into_results():
    from typer.main import get_command

    commands = get_command(app).commands

    def default(command: str) -> Path:
        return Path(next(p for p in commands[command].params if p.name == "results_dir").default)

    assert default("demo") == Path("results") / "demo"
    assert {default(c) for c in ("attack", "tables", "show", "diagnose", "distill")} == {Path("results")}


def _best_of_three(*args: str) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, capture_output=True, env=os.environ.copy())
        times.append(time.perf_counter() - started)
    return min(times)


def test_help_answers_within_half_a_second_of_a_bare_python():
    baseline = _best_of_three("-c", "pass")
    help_ = _best_of_three("-m", "defdistill", "--help")
    assert help_ - baseline < 0.5, (help_, baseline)


def test_importing_the_cli_loads_no_torch_pandas_foolbox_or_matplotlib():
    heavy = "('torch', 'foolbox', 'pandas', 'matplotlib')"
    code = f"import sys, defdistill.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def attacked(trained_runs, tmp_path_factory) -> Path:
    """A results folder with real robustness and worst-case tables: fgsm and pgd at two budgets
    on teacher-T1 and student-T100 (20 inputs)."""
    from defdistill.evaluate.attacks import attack_model

    results = tmp_path_factory.mktemp("show") / "results"
    for model in ("teacher-T1", "student-T100"):
        attack_model(
            model=model, attacks=["fgsm", "pgd"], eps=[0.1, 0.2], n=20,
            runs_dir=trained_runs.runs_dir, results_dir=results, device="cpu",
        )  # fmt: skip
    return results


def test_show_prints_the_filtered_rows_whole_at_full_width_when_stdout_is_not_a_terminal(attacked):
    result = invoke(
        "show", "robustness", "--model", "student-T100", "--eps", "0.2", "--results-dir", attacked
    )
    assert result.exit_code == 0, result.output
    header, rule, *rows = result.stdout.rstrip().splitlines()
    assert header.split()[:3] == ["model", "attack", "norm"] and set(rule) == {"-", " "}
    assert [row.split()[:4] for row in rows] == [
        ["student-T100", "fgsm", "linf", "0.2"],
        ["student-T100", "pgd", "linf", "0.2"],
    ]
    assert "…" not in result.stdout and max(len(line) for line in [header, *rows]) > 80


def test_show_writes_csv_with_every_column_and_markdown(attacked):
    result = invoke(
        "show", "worst_case", "--model", "teacher-T1", "--format", "csv", "--results-dir", attacked
    )
    assert result.exit_code == 0, result.output
    from io import StringIO

    frame = pd.read_csv(StringIO(result.stdout))
    assert list(frame["eps"]) == [0.1, 0.2] and set(frame["model"]) == {"teacher-T1"}
    assert list(frame.columns) == list(pd.read_csv(attacked / "worst_case.csv").columns)
    result = invoke("show", "robustness", "--attack", "pgd", "--format", "md", "--results-dir", attacked)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("| dataset | model |") and len(lines) == 2 + 4


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["show", "nope"], ["unknown table 'nope'", "robustness", "worst_case"]),
        (["show", "robustness", "--format", "xml"], ["unknown format 'xml'", "md", "csv"]),
        (["show", "robustness", "--eps", "abc"], ["--eps takes comma-separated numbers"]),
        (
            ["show", "robustness", "--model", "student-T7"],
            ["no robustness rows with model student-T7", "teacher-T1"],
        ),
        (["show", "robustness", "--eps", "0.3"], ["no robustness rows with eps 0.3", "0.1, 0.2"]),
        (["show", "diagnostics"], ["no diagnostics table"]),
    ],
)
def test_show_bad_input_is_one_line_and_exit_2(args, fragments, attacked):
    result = invoke(*args, "--results-dir", attacked)
    assert result.exit_code == 2
    assert_one_line_error(result, *fragments)


def test_a_run_without_a_terminal_prints_one_line_per_finished_step_and_quiet_prints_none(
    trained_runs, tmp_path
):
    args = ["attack", "--model", "student", "--attacks", "fgsm,pgd", "--eps", "0.1", "--n", "20"]
    common = ["--runs-dir", trained_runs.runs_dir, "--results-dir", tmp_path / "r", "--device", "cpu"]
    result = invoke(*args, *common)
    assert result.exit_code == 0, result.output
    steps = [line for line in result.stderr.splitlines() if not line.startswith("note:")]
    assert [line.split(" (")[0] for line in steps] == ["done: fgsm", "done: pgd"], result.stderr
    assert all(line.endswith(" s)") for line in steps)
    quiet = invoke(*args, *common, "--quiet")
    assert quiet.exit_code == 0, quiet.output
    assert [line for line in quiet.stderr.splitlines() if not line.startswith("note:")] == []
