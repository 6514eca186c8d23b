"""The demo's answer on one screen, built from the tables `rebuild_tables` returns.

`demo_summary(tables, "digits", models)` gives at most about 30 lines of at most 100 columns:
the test accuracy of each model and the student's gap to its teacher; the attack success of
every attack in the robustness table at one budget (eps 0.2 by default), a row per attack and
a column per model, with the worst case per model below the attacks; the gradient-masking
verdict per model; and where the full tables are. Numbers have 3 decimals; names are never
cut (models that do not fit side by side continue in a second block of columns).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ..data.registry import DATASETS, get_dataset_spec

SUMMARY_EPS = 0.2
SUMMARY_WIDTH = 100
STANDARD_ATTACKS = ("fgsm", "pgd")  # first rows: the attacks the defence was evaluated with
INDENT = "  "
GUTTER = "  "


def _number(value: object) -> str:
    try:
        value = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(value) else f"{value:.3f}"


def _truthy(value: object) -> bool:
    return str(value).strip().lower() in ("true", "1", "1.0", "yes")


def summary_budget(robustness: pd.DataFrame, eps: float = SUMMARY_EPS) -> float | None:
    """`eps` if the bounded rows have it, else the largest budget below it (else the smallest)."""
    budgets = sorted({float(e) for e in pd.to_numeric(robustness["eps"], errors="coerce").dropna()})
    if not budgets:
        return None
    if any(math.isclose(b, eps) for b in budgets):
        return eps
    below = [b for b in budgets if b < eps]
    return below[-1] if below else budgets[0]


def grid(
    corner: str, labels: Sequence[str], columns: Sequence[tuple[str, Sequence[str]]], width: int
) -> list[str]:
    """A table of labelled rows and right-aligned columns, each line within `width` characters;
    columns that do not fit continue in another block under the first (never cut)."""
    label_width = max(len(corner), *(len(label) for label in labels)) if labels else len(corner)
    sized = [(header, cells, max(len(header), *(len(c) for c in cells))) for header, cells in columns]
    blocks: list[list[tuple[str, Sequence[str], int]]] = [[]]
    used = len(INDENT) + label_width
    for column in sized:
        if blocks[-1] and used + len(GUTTER) + column[2] > width:
            blocks.append([])
            used = len(INDENT) + label_width
        blocks[-1].append(column)
        used += len(GUTTER) + column[2]
    lines: list[str] = []
    for number, block in enumerate(blocks):
        if number:
            lines.append("")
        head = [corner.ljust(label_width), *(header.rjust(w) for header, _, w in block)]
        lines.append(INDENT + GUTTER.join(head).rstrip())
        for i, label in enumerate(labels):
            row = [label.ljust(label_width), *(cells[i].rjust(w) for _, cells, w in block)]
            lines.append(INDENT + GUTTER.join(row).rstrip())
    return lines


def _models(tables: Mapping[str, pd.DataFrame], dataset: str) -> list[str]:
    robustness = tables.get("robustness")
    if robustness is None or robustness.empty:
        return []
    return list(dict.fromkeys(robustness.loc[robustness["dataset"] == dataset, "model"]))


def accuracy_lines(
    tables: Mapping[str, pd.DataFrame],
    dataset: str,
    models: Sequence[str],
    accuracy: Mapping[str, float] | None = None,
) -> list[str]:
    """Test accuracy per model (the run's own figure, else the accuracy-gap table's, else the
    robustness table's clean accuracy on the attacked inputs) and each student's gap."""
    gap = tables.get("accuracy_gap", pd.DataFrame())
    gap = gap[gap["dataset"] == dataset] if not gap.empty else gap
    robustness = tables.get("robustness", pd.DataFrame())
    values, notes = {}, {}
    for model in models:
        if accuracy and model in accuracy:
            values[model] = _number(accuracy[model])
        elif not gap.empty and model in set(gap["student"]):
            values[model] = _number(gap.loc[gap["student"] == model, "student_acc"].iloc[0])
        elif not gap.empty and model in set(gap["teacher"]):
            values[model] = _number(gap.loc[gap["teacher"] == model, "teacher_acc"].iloc[0])
        elif not robustness.empty and model in set(robustness["model"]):
            row = robustness[(robustness["model"] == model) & (robustness["dataset"] == dataset)].iloc[0]
            values[model] = _number(row["clean_acc"])
            notes[model] = f"on the {int(row['n'])} attacked inputs"
        else:
            values[model] = "-"
        if not gap.empty and model in set(gap["student"]):
            row = gap[gap["student"] == model].iloc[0]
            pp = float(row["gap_pp"])
            where = "below" if pp > 0 else "above"
            notes[model] = (
                f"same as {row['teacher']}"
                if math.isclose(pp, 0.0, abs_tol=5e-4)
                else f"{abs(pp):.3f} pp {where} {row['teacher']}"
            )
            cost = row.get("cost_pp")
            if cost is not None and not pd.isna(cost) and row.get("baseline") != row["teacher"]:
                # Papernot et al.'s comparison: the cost against the undefended network
                word = "below" if float(cost) > 0 else "above"
                notes[model] += f"; {abs(float(cost)):.3f} pp {word} {row['baseline']}"
    width = max((len(m) for m in models), default=0)
    lines = ["Test accuracy"]
    for model in models:
        note = f"{GUTTER}{notes[model]}" if model in notes else ""
        lines.append(f"{INDENT}{model.ljust(width)}{GUTTER}{values[model].rjust(5)}{note}")
    return lines


def _attack_label(attack: str, norm: object, bounded: bool, norms: int) -> str:
    if bounded:
        return attack if norms == 1 and norm == "linf" else f"{attack} ({norm})"
    return f"{attack} ({norm}, unbounded)"


def worst_case_source(worst_case: pd.DataFrame) -> tuple[str, str]:
    """(column, row label) of the worst case: the per-input ensemble when the table has it,
    else the strongest single attack."""
    if "ensemble_success" in worst_case.columns:
        return "ensemble_success", "worst case: any attack, per input"
    return "worst_success", "worst case: strongest attack"


def success_lines(
    tables: Mapping[str, pd.DataFrame],
    dataset: str,
    models: Sequence[str],
    eps: float = SUMMARY_EPS,
    width: int = SUMMARY_WIDTH,
) -> list[str]:
    """A row per attack in the robustness table, a column per model: success at one budget;
    the worst case per model under the bounded attacks, the unbounded attacks last."""
    robustness = tables.get("robustness", pd.DataFrame())
    if robustness.empty:
        return ["Attack success: no robustness rows"]
    rows = robustness[(robustness["dataset"] == dataset) & robustness["model"].isin(models)]
    budgets = pd.to_numeric(rows["eps"], errors="coerce")
    budget = summary_budget(rows, eps)
    at_budget = rows[
        budgets.map(lambda b: budget is not None and not math.isnan(b) and math.isclose(b, budget))
    ]
    unbounded = rows[budgets.isna()]
    labels: list[str] = []
    cells: dict[str, list[str]] = {m: [] for m in models}

    def add(label: str, group: pd.DataFrame, column: str = "success_rate") -> None:
        success = dict(zip(group["model"], group[column], strict=True))
        labels.append(label)
        for model in models:
            cells[model].append(_number(success.get(model)))

    for frame, bounded in ((at_budget, True), (unbounded, False)):
        order = {a: i for i, a in enumerate(STANDARD_ATTACKS)}
        keys = sorted(
            dict.fromkeys(zip(frame["attack"], frame["norm"], strict=True)),
            key=lambda k: (order.get(k[0], len(order)), str(k[0]), str(k[1])),
        )
        for attack, norm in keys:
            norms = frame.loc[frame["attack"] == attack, "norm"].nunique()
            group = frame[(frame["attack"] == attack) & (frame["norm"] == norm)]
            add(_attack_label(attack, norm, bounded, norms), group)
        worst_case = tables.get("worst_case", pd.DataFrame())
        if bounded and budget is not None and not worst_case.empty:
            column, label = worst_case_source(worst_case)
            wc_eps = pd.to_numeric(worst_case["eps"], errors="coerce")
            keep = (worst_case["dataset"] == dataset) & wc_eps.map(
                lambda b: not math.isnan(b) and math.isclose(b, budget)
            )
            if keep.any():
                add(label, worst_case[keep], column)
    where = f"eps {budget:g}, L-inf" if budget is not None else "no bounded attacks"
    heading = f"Attack success at {where} (share of the correctly classified inputs fooled)"
    return [heading, *grid("attack", labels, [(m, cells[m]) for m in models], width)]


def diagnosis_lines(
    tables: Mapping[str, pd.DataFrame], dataset: str, models: Sequence[str], width: int = SUMMARY_WIDTH
) -> list[str]:
    """The gradient-masking verdict per model, one line each, from the diagnostics table: the
    calibrated verdict, then how many of the explanatory checks failed."""
    diagnostics = tables.get("diagnostics", pd.DataFrame())
    lines = ["Gradient-masking diagnosis (Carlini et al. 2019)"]
    for model in models:
        checks = (
            diagnostics[
                (diagnostics["dataset"] == dataset)
                & (diagnostics["model"] == model)
                & (diagnostics["check"] != "verdict")
            ]
            if not diagnostics.empty
            else diagnostics
        )
        if checks.empty:
            lines.append(f"{INDENT}{model}: not diagnosed")
            continue
        failed = [str(c) for c, ok in zip(checks["check"], checks["passed"], strict=True) if not _truthy(ok)]
        verdict = _verdict_word(diagnostics, dataset, model)
        if verdict is None:  # a diagnosis recorded before the calibrated verdict
            verdict = "likely gradient masking" if failed else "no sign of gradient masking"
        line = f"{INDENT}{model}: {verdict}, {len(failed)} of {len(checks)} checks failed"
        detailed = f"{line} ({', '.join(failed)})" if failed else line
        lines.append(detailed if len(detailed) <= width else line)
    return lines


CALIBRATED_VERDICTS = ("masked", "not-masked", "inconclusive")


def _verdict_word(diagnostics: pd.DataFrame, dataset: str, model: str) -> str | None:
    """The calibrated verdict (masked, not-masked, inconclusive) of a diagnosed model, if recorded."""
    row = diagnostics[
        (diagnostics["dataset"] == dataset)
        & (diagnostics["model"] == model)
        & (diagnostics["check"] == "verdict")
    ]
    if row.empty:
        return None
    word = str(row.iloc[0]["detail"]).split(":", 1)[0]
    return word if word in CALIBRATED_VERDICTS else None


def demo_summary(
    tables: Mapping[str, pd.DataFrame],
    dataset: str,
    models: Sequence[str] | None = None,
    eps: float | None = None,
    accuracy: Mapping[str, float] | None = None,
    results_dir: str | Path | None = None,
    figure: str | Path | None = None,
    width: int = SUMMARY_WIDTH,
) -> str:
    """The demo's answer as text (see the module's docstring); `models` defaults to every model
    of `dataset` in the robustness table, `accuracy` (run -> test accuracy) to the tables', `eps`
    to the dataset's headline budget (DatasetSpec.headline_eps)."""
    models = list(models) if models is not None else _models(tables, dataset)
    if eps is None:
        eps = get_dataset_spec(dataset).headline_eps if dataset in DATASETS else SUMMARY_EPS
    sections = [
        accuracy_lines(tables, dataset, models, accuracy),
        success_lines(tables, dataset, models, eps, width),
        diagnosis_lines(tables, dataset, models, width),
    ]
    if results_dir is not None:
        folder = Path(results_dir)
        figure_name = f" and {Path(figure).name}" if figure is not None else ""
        where = [f"Full tables ({', '.join(tables)}; .csv and .md){figure_name} in", f"{INDENT}{folder}"]
        if "robustness" in tables:
            hint = f"{INDENT}defdistill show robustness --results-dir {folder} --model M --eps E"
            where.append(hint if len(hint) <= width else hint.replace(str(folder), "DIR"))
        sections.append(where)
    return "\n\n".join("\n".join(section) for section in sections)
