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
                        "per_input": _per_input(1.0, 0.1)}
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
    assert "| model | role | T | fgsm | pgd |" in report  # cw has no budget: not a success at eps 0.1
    assert "| student-T100 | student | 100 | 0.05 | 0.05 |" in report
    assert "| teacher-T1 | teacher | 1 | 0.3 | 0.3 |" in report
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


# --- unbounded attacks, the diagnosis, small budgets ------------------------------------------


def test_unbounded_attacks_are_reported_as_distances_never_at_a_budget(tmp_path: Path) -> None:
    fill_results(tmp_path)
    report = write_report(tmp_path, eps=0.3).report.read_text(encoding="utf-8")
    at_eps = report.split("### Attack success against T")[1].split("\n### ")[0]
    assert "cw" not in at_eps
    distances = report.split("### Minimal perturbations (unbounded attacks)")[1].split("\n#")[0]
    assert "| model | role | T | attack | norm | n | success_rate | median_dist | mean_dist |" in distances
    assert "| student-T100 | student | 100 | cw | l2 | 100 | 1 | 0.1 | 0.1 |" in distances


def hsj_row(model: str, role: str, T: float, distances: list[float | None]) -> dict:
    found = [d is not None for d in distances]
    return {"dataset": "digits", "model": model, "role": role, "T": T, "attack": "hsj", "norm": "linf",
            "eps": None, "n": len(distances), "clean_acc": 1.0, "robust_acc": 1 - sum(found) / len(found),
            "success_rate": sum(found) / len(found), "median_dist": 0.0, "seconds": 1.0,
            "per_input": {"clean": "1" * len(found), "broken": "".join("1" if f else "0" for f in found),
                          "dist": distances}}  # fmt: skip


def test_minimal_attack_enters_each_budget_from_its_per_input_distances(tmp_path: Path) -> None:
    fill_results(tmp_path)
    distances = [0.05, 0.08, 0.2, 0.25, None]  # the last input: no adversarial example found
    record_rows(tmp_path, "robustness", [hsj_row("student-T100", "student", 100.0, distances)])
    report = write_report(tmp_path, eps=0.1).report.read_text(encoding="utf-8")
    at_eps = report.split("### Attack success against T")[1].split("\n### ")[0]
    assert "| model | role | T | fgsm | pgd | hsj (within eps) |" in at_eps
    assert "| student-T100 | student | 100 | 0.05 | 0.05 | 0.4 |" in at_eps  # 2 of 5 within 0.1
    report = write_report(tmp_path, eps=0.3).report.read_text(encoding="utf-8")
    assert "| student-T100 | student | 100 | 0.05 | 0.05 | 0.8 |" in report  # 4 of 5 within 0.3
    distances_section = report.split("### Minimal perturbations")[1].split("\n#")[0]
    assert "| student-T100 | student | 100 | hsj | linf | 5 | 0.8 | 0.14 | 0.145 |" in distances_section


def test_diagnosis_section_counts_the_checks_each_model_passes_and_states_its_verdict(tmp_path: Path) -> None:
    fill_results(tmp_path)
    # The verdict is derived from the attack records: APGD-DLR breaks what FGSM and PGD leave
    # standing on student-T100, so the report must call it masked, and teacher-T1 not masked.
    base = {"dataset": "digits", "model": "student-T100", "role": "student", "T": 100.0, "n": 100,
            "clean_acc": 0.98, "median_dist": 0.1, "seconds": 1.0,
            "attack": "apgd-dlr", "norm": "linf"}  # fmt: skip
    record_rows(tmp_path, "robustness", [
        base | {"eps": eps, "success_rate": 1.0, "robust_acc": 0.0, "per_input": _per_input(1.0, eps)}
        for eps in (0.1, 0.3)
    ])  # fmt: skip
    rows = []
    for model, failed in (("teacher-T1", ()), ("student-T100", ("gradient_zero", "margin_vs_cross_entropy"))):
        for check in ("gradient_zero", "softmax_saturated", "margin_vs_cross_entropy"):
            rows.append({"dataset": "digits", "model": model, "check": check, "value": 0.0,
                         "passed": check not in failed, "detail": f"{check} evidence"})  # fmt: skip
        verdict = (
            "masked: FGSM and cross-entropy PGD overstate robustness ..." if failed else "not-masked: ..."
        )
        rows.append({"dataset": "digits", "model": model, "check": "verdict", "value": 0.5 if failed else 0.0,
                     "passed": not failed, "detail": verdict})  # fmt: skip
    record_rows(tmp_path, "diagnostics", rows)
    report = write_report(tmp_path).report.read_text(encoding="utf-8")
    section = report.split("## Diagnosis: gradient-masking checks")[1].split("\n## ")[0]
    assert "2 models diagnosed" in section and "(masked: student-T100; not-masked: teacher-T1)" in section
    assert "| digits | teacher-T1 | 3 | 3 | 0 | - | not-masked |" in section
    assert (
        "| digits | student-T100 | 3 | 1 | 2 | gradient_zero, margin_vs_cross_entropy | masked |" in section
    )


def test_report_without_diagnostics_says_none_were_recorded(tmp_path: Path) -> None:
    fill_results(tmp_path)
    report = write_report(tmp_path).report.read_text(encoding="utf-8")
    assert "No diagnosis in this folder's results/diagnostics.csv" in report


STANDARD = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "noise")


def synthetic_outcomes(
    rates: dict, seeds=(0, 1, 2), n: int = 360, eps=(0.05, 0.1), attacks=STANDARD, extra=None
):
    """Per-attack per-input outcomes of two models: the first attack breaks each correctly classified
    input with the model's rate (scaled by eps), the others break nothing; `extra` adds
    {model: (attack, broken flags)} at every seed and budget."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = []
    for seed in seeds:
        for e in eps:
            for model, rate in rates.items():
                correct = np.ones(n, dtype=bool)
                for k, attack in enumerate(attacks):
                    broken = rng.random(n) < rate * e / max(eps) if k == 0 else np.zeros(n, dtype=bool)
                    rows.append({"dataset": "digits", "seed": seed, "model": model, "eps": e,
                                 "attack": attack, "n": n, "broken": broken, "correct": correct})  # fmt: skip
                if extra and model in extra:
                    attack, broken = extra[model]
                    rows.append({"dataset": "digits", "seed": seed, "model": model, "eps": e,
                                 "attack": attack, "n": n, "broken": broken, "correct": correct})  # fmt: skip
    return pd.DataFrame(rows)


PAIR = (("student-T100", "teacher-T1", "the test pair"),)


def test_small_budget_section_reports_a_clear_difference_over_seeds() -> None:
    from defdistill.report import small_budget_comparison, small_budget_section

    outcomes = synthetic_outcomes({"student-T100": 0.41, "teacher-T1": 0.31})
    table = small_budget_comparison(outcomes, PAIR, n_boot=500)
    assert list(table["eps"]) == [0.05, 0.1] and (table["seeds"] == 3).all()
    at = table.set_index("eps").loc[0.1]
    assert at["difference"] > 0 and at["t_low"] > 0 and at["boot_low"] > 0
    assert len(at["p_mcnemar_per_seed"].split(", ")) == 3  # one test per seed, never pooled
    text = "\n".join(small_budget_section(outcomes, PAIR, n_boot=500))
    line = next(
        x for x in text.splitlines() if x.startswith("- digits, eps 0.1, student-T100 against teacher-T1")
    )
    assert (
        "3 seeds: 0,1,2" in line and "95% t-interval over seeds" in line and "McNemar per seed p = " in line
    )
    assert "Student-T100 is broken more often than teacher-T1 over seeds" in line


def test_one_seed_gives_no_interval_over_seeds() -> None:
    from defdistill.report import small_budget_section

    outcomes = synthetic_outcomes({"student-T100": 0.3, "teacher-T1": 0.3}, seeds=(0,))
    text = "\n".join(small_budget_section(outcomes, PAIR, n_boot=500))
    line = next(x for x in text.splitlines() if x.startswith("- digits, eps 0.1,"))
    assert "(1 seed: 0;" in line and "one seed, so no interval over seeds" in line
    assert "One seed cannot separate student-T100 from teacher-T1" in line


def test_a_comparison_uses_only_the_attacks_both_models_faced() -> None:
    import numpy as np

    from defdistill.report import small_budget_comparison

    # teacher-T1 alone faced autoattack, which breaks every input: left out of the comparison
    extra = {"teacher-T1": ("autoattack", np.ones(360, dtype=bool))}
    outcomes = synthetic_outcomes({"student-T100": 0.4, "teacher-T1": 0.3}, extra=extra)
    row = small_budget_comparison(outcomes, PAIR, n_boot=200).set_index("eps").loc[0.1]
    assert "autoattack" not in row["attacks"] and row["attacks"] == "+".join(sorted(STANDARD))
    assert row["teacher-T1"] < 0.5 and row["difference"] > 0


def test_a_comparison_without_the_standard_attacks_is_refused_with_the_reason() -> None:
    from defdistill.report import small_budget_comparison, small_budget_sentence

    outcomes = synthetic_outcomes({"student-T100": 0.4, "teacher-T1": 0.3}, attacks=("fgsm", "pgd", "noise"))
    table = small_budget_comparison(outcomes, PAIR, n_boot=200)
    assert (table["seeds"] == 0).all()
    sentence = small_budget_sentence(table.to_dict("records")[0])
    assert "not compared" in sentence and "apgd-ce, apgd-dlr, a targeted attack" in sentence


def test_broken_is_counted_among_the_inputs_both_models_classify_correctly() -> None:
    import numpy as np

    from defdistill.report import small_budget_comparison

    outcomes = synthetic_outcomes({"student-T100": 0.0, "teacher-T1": 0.0}, seeds=(0, 1))
    wrong = outcomes["model"] == "student-T100"
    misclassified = np.arange(360) < 36  # the student gets 10% of the inputs wrong, clean
    outcomes["correct"] = [
        ~misclassified if w else c for w, c in zip(wrong, outcomes["correct"], strict=True)
    ]
    row = small_budget_comparison(outcomes, PAIR, n_boot=200).set_index("eps").loc[0.1]
    assert row["difference"] == 0 and row["inputs"] == 324  # clean errors are not "broken"
    assert row["clean_difference"] == pytest.approx(-0.1)


def test_small_budget_flags_come_from_per_input_outcomes_in_the_records(tmp_path: Path) -> None:
    from defdistill.report import per_input_worst_case, read_records

    rows = []
    for model, fgsm, pgd in (
        ("teacher-T1", [0, 0, 1, 0], [0, 1, 1, 0]),
        ("student-T100", [0, 0, 0, 0], [1, 1, 1, 1]),
    ):
        for attack, flags in (("fgsm", fgsm), ("pgd", pgd)):
            rows.append({"dataset": "digits", "model": model, "role": model.split("-")[0], "T": 1.0,
                         "attack": attack, "norm": "linf", "eps": 0.1, "n": 4, "clean_acc": 1.0,
                         "robust_acc": 0.5, "success_rate": 0.5, "median_dist": 0.1, "seconds": 1.0,
                         "per_input": {"clean": "1111", "broken": "".join(str(f) for f in flags),
                                       "dist": [0.1 if f else None for f in flags]}})  # fmt: skip
    per_input = tmp_path / "per-input"
    record_rows(per_input, "robustness", rows)
    old = [{k: v for k, v in row.items() if k != "per_input"} for row in rows]
    record_rows(tmp_path / "old", "robustness", old)  # records made before per-input results
    assert per_input_worst_case(read_records(tmp_path / "old", "robustness", per_input=True)).empty
    flags = per_input_worst_case(read_records(per_input, "robustness", per_input=True))
    broken = flags.pivot_table(index="input", columns="model", values="broken")
    assert broken["teacher-T1"].tolist() == [0, 1, 1, 0] and broken["student-T100"].tolist() == [1, 1, 1, 1]


def test_privacy_over_seeds_is_judged_by_paired_differences(tmp_path: Path) -> None:
    import json

    fill_privacy(tmp_path)
    seed1 = tmp_path / "privacy-seeds" / "seed1"
    fill_privacy(seed1)
    for path in (seed1 / "records" / "privacy").glob("*.json"):  # the second seed's rows
        record = json.loads(path.read_text())
        record |= {"seed": 1, "auc": record["auc"] - 0.01}
        path.write_text(json.dumps(record))
    report = write_report(tmp_path).report.read_text(encoding="utf-8")
    section = report.split("#### Over seeds (0, 1)")[1]
    assert "| model | seeds | LiRA AUC | LiRA TPR@1%FPR | loss AUC | loss advantage | test acc |" in section
    assert "| model | minus | metric | seeds | per seed | mean | sd | t-test p | sign test p |" in section
    paired = [
        line
        for line in section.splitlines()
        if line.startswith("| privacy-student-T1 | privacy-teacher | lira auc")
    ]
    assert len(paired) == 1 and "| 2 |" in paired[0]  # two seeds, paired


def test_seeds_table_uses_only_the_attacks_every_seed_ran() -> None:
    import pandas as pd

    from defdistill.report import seed_robust_accuracy

    def row(seed: int, model: str, attack: str, broken: str) -> dict:
        dist = [0.1 if b == "1" else None for b in broken]
        per_input = {"clean": "1111", "broken": broken, "dist": dist}
        return {
            "dataset": "digits",
            "model": model,
            "attack": attack,
            "eps": 0.1,
            "seed": seed,
            "per_input": per_input,
        }

    rows = [
        row(0, "teacher-T1", "pgd", "1000"),
        row(0, "teacher-T1", "autoattack", "1111"),  # seed 0 alone ran it: left out
        row(1, "teacher-T1", "pgd", "1100"),
    ]
    table = seed_robust_accuracy(pd.DataFrame(rows), models=["teacher-T1"])
    (result,) = table.to_dict("records")
    assert result["attacks"] == "pgd" and result["seeds"] == 2
    assert result["robust_acc_mean"] == pytest.approx(0.625) and result["robust_acc_sd"] > 0


def test_papernot_section_puts_gradient_amplitude_and_jsma_distortion_against_T(tmp_path: Path) -> None:
    fill_results(tmp_path)
    jsma, grads = [], []
    for T, success, log10, logits in (
        (1.0, 0.9, -4.0, 30.0),
        (10.0, 0.1, -57.0, 260.0),
        (100.0, 0.0, -500.0, 2000.0),
    ):
        model = "teacher-T1" if T == 1 else f"student-T{T:g}"
        role = "teacher" if T == 1 else "student"
        base = {"dataset": "digits", "model": model, "role": role, "T": T, "norm": "l0", "eps": None,
                "n": 100, "clean_acc": 1.0, "seconds": 1.0}  # fmt: skip
        jsma.append(base | {"attack": "jsma", "success_rate": success, "robust_acc": 1 - success,
                            "median_dist": 0.02, "mean_dist": 0.02 if success else None})  # fmt: skip
        grads.append({"dataset": "digits", "model": model, "role": role, "T": T, "n": 100, "softmax_l1": 0.0,
                      "softmax_zero": 0.5, "softmax_log10": log10, "softmax_log10_median": log10,
                      "logits_l1": logits, "seconds": 1.0})  # fmt: skip
    record_rows(tmp_path, "robustness", jsma)
    record_rows(tmp_path, "gradients", grads)
    result = write_report(tmp_path, eps=0.3)
    section = result.report.read_text(encoding="utf-8").split("### Papernot et al.'s measurements")[1]
    section = section.split("\n### ")[0]
    assert "(papernot_digits.png)" in section and tmp_path / "papernot_digits.png" in result.plots
    rows = [line for line in section.splitlines() if "teacher-T1 " in line or "student-T100 " in line]
    # a failed JSMA pair counts at gamma: 0.9 x 2% + 0.1 x 14.5% = 3.25%; none reached at T=100: 14.5%
    assert rows[0].startswith("| 1 | teacher-T1 | 0.9 |") and "| 3.25 |" in rows[0]
    assert (
        rows[1].startswith("| 100 | student-T100 | 0 |") and "| -500 |" in rows[1] and "| 14.5 |" in rows[1]
    )
