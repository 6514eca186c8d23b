"""`defdistill report`: plots from the record tables, and REPORT.md around them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from defdistill.errors import DefdistillError
from defdistill.report import write_report
from defdistill.tables import record_rows

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEMPERATURES = (1.0, 10.0, 100.0)


def fill_results(results: Path, eps_grid: tuple[float, ...] = (0.1, 0.3)) -> None:
    """Records as a temperature sweep leaves them (numbers made up, shapes real)."""
    rows, gaps = [], []
    for T in TEMPERATURES:
        for role in ("teacher", "student"):
            model = f"{role}-T{T:g}"
            masked = role == "student" and T > 1
            base = {"dataset": "digits", "model": model, "role": role, "T": T, "n": 100, "clean_acc": 0.98,
                    "median_dist": 0.1, "seconds": 1.0}  # fmt: skip
            for attack in ("fgsm", "pgd"):
                for eps in eps_grid:
                    success = 0.05 if masked else min(1.0, 3 * eps)
                    rows.append(base | {"attack": attack, "norm": "linf", "eps": eps, "success_rate": success,
                                        "robust_acc": 0.98 * (1 - success)})  # fmt: skip
            rows.append(
                base | {"attack": "cw", "norm": "l2", "eps": None, "success_rate": 1.0, "robust_acc": 0.0}
            )
        gaps.append({
            "dataset": "digits", "T": T, "teacher": f"teacher-T{T:g}", "teacher_T": T, "teacher_acc": 0.98,
            "student": f"student-T{T:g}", "student_acc": 0.97, "gap_pp": 1.0, "method": "soft",
            "student_arch": "digits-cnn", "student_params": 1, "teacher_params": 1,
        })  # fmt: skip
    # A run outside the sweep's names must not be drawn as one of its temperatures.
    rows.append(rows[0] | {"model": "student-T100-fitnets", "role": "student", "T": 100.0})
    record_rows(results, "robustness", rows)
    record_rows(results, "accuracy_gap", gaps)


def test_report_writes_valid_pngs_and_links_each_from_report_md(tmp_path: Path) -> None:
    import matplotlib.image

    fill_results(tmp_path)
    result = write_report(tmp_path)
    names = sorted(p.name for p in result.plots)
    assert names == ["accuracy_gap_digits.png", "robust_acc_vs_eps_digits.png", "success_vs_T_digits.png"]
    for path in result.plots:
        assert path.parent == tmp_path and path.read_bytes()[:8] == PNG_SIGNATURE
        height, width, _ = matplotlib.image.imread(path).shape
        assert height > 200 and width > 400
    report = (tmp_path / "REPORT.md").read_text(encoding="utf-8")
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert sorted(linked) == names  # relative links, one per plot
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_report_tabulates_success_per_model_and_attack_at_its_eps(tmp_path: Path) -> None:
    fill_results(tmp_path)
    report = write_report(tmp_path, eps=0.1).report.read_text(encoding="utf-8")
    assert "### Attack success against T (eps = 0.1)" in report
    assert "| model | role | T | cw | fgsm | pgd |" in report
    assert "| student-T100 | student | 100 | 1 | 0.05 | 0.05 |" in report
    assert "| teacher-T1 | teacher | 1 | 1 | 0.3 | 0.3 |" in report
    assert "student-T100-fitnets" not in report.split("## Worst case")[0]
    assert "## Worst case" in report  # the derived table, embedded when present
    assert "## Diagnostics" not in report  # absent here, and its absence is no error


def test_report_falls_back_to_the_nearest_budget_below_and_says_so(tmp_path: Path) -> None:
    fill_results(tmp_path, eps_grid=(0.05, 0.2))
    result = write_report(tmp_path, eps=0.3)
    assert result.notes == ["digits: no rows at eps 0.3; success against T is plotted at eps 0.2"]
    assert "(eps = 0.2)" in result.report.read_text(encoding="utf-8")


def test_report_without_results_names_the_script_to_run(tmp_path: Path) -> None:
    with pytest.raises(DefdistillError, match="no results in .*temperature_sweep.sh digits"):
        write_report(tmp_path / "empty")
    with pytest.raises(DefdistillError, match=r"--eps must lie in \(0, 1\]"):
        write_report(tmp_path, eps=0)


def test_report_command_prints_one_summary_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from defdistill.cli import app

    fill_results(tmp_path)
    result = CliRunner().invoke(app, ["report", "--results-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"report: 3 plots -> {tmp_path / 'REPORT.md'}" in " ".join(result.output.split())
