"""Papernot et al.'s gradient amplitude (evaluate/sensitivity.py): exact where float arithmetic
underflows, and measured on trained networks through the library, the CLI and a sweep."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TrainedRuns, assert_one_line_error, invoke


def _direct_log10(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    from defdistill.evaluate.sensitivity import jacobian

    _, jac = jacobian(lambda v: torch.softmax(net(v), dim=1), x)
    return torch.log10(jac.abs().sum(dim=2).mean(dim=1))


def test_log_space_amplitude_equals_the_float64_jacobian_where_it_does_not_underflow():
    from defdistill.evaluate.sensitivity import jacobian, softmax_log_amplitude

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5)).double()
    x = torch.rand(20, 12, dtype=torch.float64)
    logits, jac = jacobian(net, x)
    assert torch.allclose(softmax_log_amplitude(logits, jac), _direct_log10(net, x), atol=1e-9)


def test_log_space_amplitude_keeps_the_exponent_where_float64_gives_zero():
    from defdistill.evaluate.sensitivity import jacobian, softmax_log_amplitude

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5)).double()
    x = torch.rand(20, 12, dtype=torch.float64)
    small = softmax_log_amplitude(*jacobian(base, x))
    hot = copy.deepcopy(base)
    with torch.no_grad():
        hot[2].weight *= 1e5  # logits 10^5 times larger: exp(-gap) is far below float64's range
        hot[2].bias *= 1e5
    assert bool((_direct_log10(hot, x) == -math.inf).any())
    scaled = softmax_log_amplitude(*jacobian(hot, x))
    assert bool(torch.isfinite(scaled).all()) and bool((scaled < small - 100).all())


def test_distillation_hides_the_softmax_gradient_but_not_the_logits(
    trained_runs: TrainedRuns, tmp_path: Path
):
    from defdistill.evaluate.sensitivity import measure_gradients

    rows = measure_gradients(
        ["teacher-T1", "student-T100"], dataset="digits", n=100, runs_dir=trained_runs.runs_dir,
        results_dir=tmp_path, device="cpu",
    )  # fmt: skip
    plain, distilled = rows
    assert plain["softmax_zero"] == 0 and distilled["softmax_zero"] > 0.5
    assert distilled["softmax_log10"] < plain["softmax_log10"] - 20  # Papernot et al.'s finding
    assert distilled["logits_l1"] > plain["logits_l1"]  # Carlini & Wagner's: the logits are as sensitive
    table = pd.read_csv(tmp_path / "gradients.csv")
    assert list(table["model"]) == ["teacher-T1", "student-T100"] and set(table["n"]) == {100}


def test_gradients_command_prints_the_table_and_records_it(trained_runs: TrainedRuns, tmp_path: Path):
    done = invoke(
        "gradients", "--models", "teacher-T100", "--n", "30", "--runs-dir", trained_runs.runs_dir,
        "--results-dir", tmp_path, "--device", "cpu",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "softmax_log10" in done.output
    assert done.output.strip().splitlines()[-1] == f"1 run measured -> {tmp_path / 'gradients.csv'}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "0"], "--n must be"),
        (["--models", "teacher-T7"], "teacher-T7"),
    ],
)
def test_bad_gradients_options_are_one_line_errors(
    trained_runs: TrainedRuns, tmp_path: Path, args: list[str], message: str
):
    done = invoke("gradients", *args, "--runs-dir", trained_runs.runs_dir, "--results-dir", tmp_path)
    assert done.exit_code == 2
    assert_one_line_error(done, message)
