"""The demo's one-screen summary and the table renderer, on tables measured on real digits models."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from defdistill.store.render import aligned_text, render_frame
from defdistill.studies.summary import demo_summary

MODELS = ["teacher-T1", "teacher-T100", "student-T100"]
NUMBER = re.compile(r"\d\.\d{3}")


@pytest.fixture(scope="module")
def measured(trained_runs, tmp_path_factory) -> tuple[dict[str, pd.DataFrame], Path]:
    """fgsm, pgd and cw on the three fixture models (30 inputs), one model diagnosed, the
    accuracy gap recorded: the tables `rebuild_tables` returns, and their folder."""
    from defdistill.evaluate.attacks import AttackSettings, attack_model
    from defdistill.evaluate.diagnose import diagnose_model
    from defdistill.store.runs import read_meta
    from defdistill.store.tables import rebuild_tables, record_accuracy_gap

    results = tmp_path_factory.mktemp("summary") / "results"
    settings = AttackSettings(cw_steps=20, cw_binary_search_steps=1)
    for path in (trained_runs.teacher_t1, trained_runs.teacher_t100, trained_runs.student_t100):
        attack_model(
            model=str(path), attacks=["fgsm", "pgd", "cw"], eps=[0.1, 0.2], n=30, settings=settings,
            runs_dir=trained_runs.runs_dir, results_dir=results, device="cpu",
        )  # fmt: skip
    diagnose_model(
        model=str(trained_runs.student_t100), eps=[0.1, 0.2], n=30,
        settings=AttackSettings(cw_steps=20, cw_binary_search_steps=1, decision_n=10, hsj_steps=2),
        runs_dir=trained_runs.runs_dir, results_dir=results, device="cpu",
    )  # fmt: skip
    record_accuracy_gap(results, read_meta(trained_runs.student_t100), "student-T100")
    return rebuild_tables(results), results


def test_demo_summary_fits_one_screen_and_names_every_model_and_attack_whole(measured):
    tables, results = measured
    text = demo_summary(tables, "digits", MODELS, results_dir=results, figure=results / "summary.png")
    lines = text.splitlines()
    assert len(lines) <= 40, text
    assert max(len(line) for line in lines) <= 100, text
    assert "…" not in text and "..." not in text
    for name in [*MODELS, "fgsm", "pgd", "cw (l2, unbounded)", "worst case: any attack, per input"]:
        assert name in text, (name, text)
    assert "Attack success at eps 0.1" in text  # digits' headline budget
    grid = lines[lines.index(next(line for line in lines if line.strip().startswith("attack "))) + 1 :]
    grid = grid[: grid.index("")]
    cells = [cell for line in grid for cell in line.split()[-len(MODELS) :]]
    assert cells and all(cell == "-" or NUMBER.fullmatch(cell) for cell in cells), grid
    accuracies = [line.split()[1] for line in lines[1:4]]
    assert all(NUMBER.fullmatch(a) for a in accuracies), lines[:4]
    table = tables["robustness"]
    fgsm = table[(table["model"] == "teacher-T1") & (table["attack"] == "fgsm") & (table["eps"] == 0.1)]
    row = next(line for line in lines if line.strip().startswith("fgsm"))
    assert f"{fgsm['success_rate'].iloc[0]:.3f}" == row.split()[1]
    assert "below teacher-T100" in text or "above teacher-T100" in text or "same as teacher-T100" in text
    verdicts = [line for line in lines if line.strip().startswith("student-T100:")]
    assert len(verdicts) == 1 and "student-T100: masked, " in verdicts[0]
    assert "teacher-T1: not diagnosed" in text
    assert str(results) in text and "summary.png" in text


def test_summary_takes_new_attacks_and_the_per_input_worst_case_when_the_tables_have_them(measured):
    tables, _ = measured
    robustness = tables["robustness"]
    square = robustness[robustness["attack"] == "pgd"].assign(attack="square", success_rate=0.123)
    worst_case = tables["worst_case"].assign(ensemble_success=0.987)
    text = demo_summary({**tables, "robustness": pd.concat([robustness, square]), "worst_case": worst_case},
                        "digits", MODELS)  # fmt: skip
    square_row = next(line for line in text.splitlines() if line.strip().startswith("square"))
    assert square_row.split()[1:] == ["0.123"] * 3
    worst = next(line for line in text.splitlines() if "worst case" in line)
    assert "any attack, per input" in worst and worst.split()[-3:] == ["0.987"] * 3


def test_models_that_do_not_fit_side_by_side_continue_below_never_cut(measured):
    tables, _ = measured
    text = demo_summary(tables, "digits", MODELS, width=50)
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Attack success"))
    end = next(i for i, line in enumerate(lines) if line.startswith("Gradient-masking"))
    grid = [line for line in lines[start + 1 : end] if line]
    assert max(len(line) for line in grid) <= 50, grid
    headers = [line.split() for line in grid if line.split()[0] == "attack"]
    assert len(headers) >= 2 and sum((h[1:] for h in headers), []) == MODELS, grid


def test_a_table_wider_than_the_terminal_is_shown_one_record_per_block_never_cut(measured):
    tables, _ = measured
    frame = tables["robustness"].head(3)
    wide = aligned_text(frame)
    narrow = render_frame(frame, "table", width=40)
    assert max(len(line) for line in wide.splitlines()) > 40
    assert narrow.startswith("[1/3]") and max(len(line) for line in narrow.splitlines()) <= 40
    for text in (wide, narrow, render_frame(frame, "md"), render_frame(frame, "csv")):
        assert "…" not in text
        assert "teacher-T1" in text
    assert render_frame(frame, "table", width=None) == wide  # not a terminal: full width
