"""`defdistill report`: plots from the record tables, and REPORT.md around them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import invoke

from defdistill.errors import DefdistillError
from defdistill.evaluate.worst_case import record_worst_case
from defdistill.report import write_report
from defdistill.store.tables import record_rows

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
                                        "robust_acc": 0.98 * (1 - success),
                                        "per_input": _per_input(success, eps)})  # fmt: skip
            rows.append(
                base | {"attack": "cw", "norm": "l2", "eps": None, "success_rate": 1.0, "robust_acc": 0.0,
                        "per_input": _per_input(1.0, 0.5)}
            )  # fmt: skip
        gaps.append({
            "dataset": "digits", "T": T, "teacher": f"teacher-T{T:g}", "teacher_T": T, "teacher_acc": 0.98,
            "student": f"student-T{T:g}", "student_acc": 0.97, "gap_pp": 1.0, "method": "soft",
            "student_arch": "digits-cnn", "student_params": 1, "teacher_params": 1,
        })  # fmt: skip
    # A run outside the sweep's names must not be drawn as one of its temperatures.
    rows.append(rows[0] | {"model": "student-T100-fitnets", "role": "student", "T": 100.0})
    record_rows(results, "robustness", rows)
    record_rows(results, "accuracy_gap", gaps)
    for model in {row["model"] for row in rows}:
        record_worst_case(results, "digits", model)


def _per_input(success: float, distance: float) -> dict:
    """Per-input results of 100 inputs, 98 classified correctly, the first `success` of them broken."""
    broken = round(success * 98)
    return {
        "clean": "1" * 98 + "00",
        "broken": "1" * broken + "0" * (100 - broken),
        "dist": [distance] * broken + [None] * (100 - broken),
    }


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
    fill_results(tmp_path)
    result = invoke("report", "--results-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert f"report: 3 plots -> {tmp_path / 'REPORT.md'}" in " ".join(result.output.split())


# --- the privacy section --------------------------------------------------------------------

PRIVACY_MODELS = (  # name, role, T, transfer set, member-score shift, test accuracy
    ("privacy-teacher", "teacher", 1.0, "public", 1.0, 0.98),
    ("privacy-student-T1", "student", 1.0, "public", 0.3, 0.97),
    ("privacy-student-T10", "student", 10.0, "public", 0.2, 0.96),
    ("privacy-student-T100", "student", 100.0, "public", 0.1, 0.95),
    ("privacy-student-noise-T100", "student", 100.0, "noise", 0.0, 0.90),
)


def fill_privacy(results: Path, n: int = 200) -> dict[tuple[str, str], object]:
    """Privacy records and stored ROCs as `defdistill privacy` leaves them, from seeded fake scores."""
    import numpy as np

    from defdistill.studies.privacy import metrics_from_roc, roc_curve, save_roc_record

    rng = np.random.default_rng(0)
    rows, rocs = [], {}
    for name, role, T, transfer, shift, acc in PRIVACY_MODELS:
        for attack in ("loss", "confidence", "entropy", "lira"):
            roc = roc_curve(rng.normal(shift, 1, n), rng.normal(0, 1, n))
            rows.append({"dataset": "digits", "model": name, "role": role, "T": T, "attack": attack,
                         **metrics_from_roc(roc), "test_acc": acc, "transfer_set": transfer, "shadows": 4,
                         "seed": 0, "epochs": 1})  # fmt: skip
            rocs[name, attack] = roc
    record_rows(results, "privacy", rows)
    for row in rows:
        save_roc_record(results, row, rocs[row["model"], row["attack"]])
    return rocs


def test_report_adds_a_privacy_section_with_the_roc_figure_table_and_computed_summary(tmp_path: Path) -> None:
    import math

    import matplotlib.image

    from defdistill.studies.privacy import roc_auc, tpr_at_fpr

    fill_results(tmp_path)
    rocs = fill_privacy(tmp_path)
    figure = tmp_path / "privacy_roc_digits.png"
    assert not figure.exists()  # drawn by the report from the stored curves alone, no run folders
    result = write_report(tmp_path)
    assert figure in result.plots and figure.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = matplotlib.image.imread(figure).shape
    assert width > 1.5 * height  # two panels side by side: LiRA and loss
    report = result.report.read_text(encoding="utf-8")
    section = report.split("\n## Privacy")[1].split("\n## ")[0]
    assert "](privacy_roc_digits.png)" in section
    header = (
        "| model | role | T | attack | auc | tpr_at_1pct_fpr | tpr_at_0_1pct_fpr | advantage | test_acc |"
    )
    assert header in section
    table = [line for line in section.splitlines() if line.startswith("| privacy-")]
    assert len(table) == 5 * 4
    assert table[0].startswith("| privacy-teacher | teacher | 1 | lira |")  # teacher first, LiRA first
    assert table[-4].startswith("| privacy-student-noise-T100 | student | 100 | lira |")  # noise last

    teacher = rocs["privacy-teacher", "lira"]
    students = [rocs[name, "lira"] for name, *_ in PRIVACY_MODELS[1:4]]
    aucs = [roc_auc(r) for r in students]
    gaps = [roc_auc(teacher) - a for a in aucs]
    assert all(g > 0 for g in gaps)  # the fake teacher leaks more, by construction
    summary = " ".join(section.split())
    assert (
        f"Under LiRA the teacher reaches AUC {roc_auc(teacher):.3f} and TPR {tpr_at_fpr(teacher, 0.01):.3f}"
        in summary
    )
    assert (
        f"AUC {min(aucs):.3f} to {max(aucs):.3f}, {min(gaps):.3f} to {max(gaps):.3f} below the teacher's"
        in summary
    )
    assert "test accuracy of 0.950 to 0.970 costs +1.0 to +3.0 percentage points" in summary
    assert "distilled on uniform noise at T = 100 reaches" in summary
    assert "costs +8.0 percentage points" in summary
    assert f"AUC 0.5 ± {math.sqrt(401 / (12 * 200 * 200)):.3f} (one sd)" in summary
    assert "TPR 0.010 at 1% FPR" in summary  # 2 false positives of 200


def test_report_has_no_privacy_section_without_privacy_records(tmp_path: Path) -> None:
    fill_results(tmp_path)
    result = write_report(tmp_path)
    assert "Privacy" not in result.report.read_text(encoding="utf-8")
    assert not list(tmp_path.glob("privacy_roc_*.png"))


def test_report_of_privacy_records_alone_has_only_the_privacy_section(tmp_path: Path) -> None:
    fill_privacy(tmp_path)
    result = write_report(tmp_path)
    report = result.report.read_text(encoding="utf-8")
    assert [line for line in report.splitlines() if line.startswith("## ")] == [
        "## Privacy: membership inference (`defdistill privacy`)"
    ]
    assert [p.name for p in result.plots] == ["privacy_roc_digits.png"]
