"""`defdistill report`: PNG plots and results/REPORT.md from the tables in results/.

Four figures per dataset, drawn with matplotlib's object API (Agg canvas, no pyplot state):
- the success rate of each attack against the temperature T, for the students distilled at T
  and for the teachers trained at T (Papernot et al. 2016, Figure 5, with the gradient attacks
  beside the paper's JSMA) at the dataset's headline L-inf budget, shaded with each rate's 95%
  Wilson interval: any drop with T is the defence's doing, or gradient masking;
- robust accuracy against epsilon, per model, for each attack that takes a budget, with the
  worst case over those attacks first;
- Papernot et al.'s gradient amplitude, JSMA success and mean minimal perturbation against T,
  with the logits' gradient, JSMA-Z and CW beside them;
- test accuracy of teacher and student, and their gap in percentage points, against T.

Only the runs the sweeps name (`teacher-T<T>`, `student-T<T>`) are plotted; every row is still
in the tables. Every file is written atomically.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .core.fileio import atomic_write_png, atomic_write_text
from .errors import DefdistillError
from .store.runs import format_T, run_name
from .store.tables import (
    PER_INPUT,
    RECORDS_DIR,
    ROLE_RANK,
    migrate_privacy_records,
    read_records,
    to_markdown,
)

REPORT_FILE = "REPORT.md"
DEFAULT_REPORT_EPS = 0.3
EXTRA_TABLES = ("worst_case",)  # derived tables, embedded when present
ROLE_STYLE = {"teacher": "--", "student": "-"}
MARKERS = "osD^vP*X<>"
PRIVACY_REPORT_COLUMNS = (
    "model", "role", "T", "attack", "auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "advantage", "test_acc",
)  # fmt: skip
PRIVACY_ATTACK_ORDER = ("lira", "loss", "confidence", "entropy")
PRIVACY_TRANSFER_ORDER = ("public", "noise")
PRIVACY_TRANSFER_WORDS = {"public": "the public half", "noise": "uniform noise"}


@dataclass
class ReportResult:
    """What `write_report` wrote."""

    report: Path
    plots: list[Path]
    notes: list[str] = field(default_factory=list)
    docs: list[Path] = field(default_factory=list)  # documents whose generated blocks changed


def _sweep_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of the runs a sweep names: teacher-T<T> and student-T<T>."""
    if frame.empty:
        return frame
    named = [m == run_name(r, t) for m, r, t in zip(frame["model"], frame["role"], frame["T"], strict=True)]
    return frame[np.asarray(named, dtype=bool)]


def _figure(panels: int, width: float = 5.0, height: float = 3.8):
    from matplotlib.figure import Figure

    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def _save(fig, path: Path) -> Path:
    return atomic_write_png(path, fig, dpi=110)


def _temperature_axis(ax, temperatures: list[float]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(temperatures)
    ax.set_xticklabels([format_T(t) for t in temperatures])
    ax.minorticks_off()
    ax.set_xlabel("temperature T")
    ax.grid(alpha=0.3)


def _interval(ax, rows: pd.DataFrame, x: str, rate: str, colour, alpha: float = 0.15) -> None:
    """Shade a rate's 95% Wilson interval (columns `<rate>_lo`, `<rate>_hi`) where the rows have it."""
    lo, hi = f"{rate}_lo", f"{rate}_hi"
    if lo in rows.columns and hi in rows.columns and rows[[lo, hi]].notna().all().all():
        low, high = rows[lo].astype(float), rows[hi].astype(float)
        ax.fill_between(rows[x], low, high, color=colour, alpha=alpha, linewidth=0)


def choose_eps(rows: pd.DataFrame, eps: float) -> float | None:
    """`eps` if the bounded rows have it, else the largest budget below it (else the smallest)."""
    budgets = sorted({float(e) for e in rows["eps"].dropna()})
    if not budgets:
        return None
    if any(math.isclose(b, eps) for b in budgets):
        return eps
    below = [b for b in budgets if b < eps]
    return below[-1] if below else budgets[0]


def plot_success_vs_T(rows: pd.DataFrame, dataset: str, eps: float, path: Path) -> Path:
    """Attack success rate at `eps` against T, students and teachers side by side.

    Only attacks that ran at that budget, and minimal-perturbation attacks within it where
    per-input distances allow (`within_eps_rows`); their distances have a table of their own.
    """
    fig, axes = _figure(2)
    temperatures = sorted(rows["T"].unique())
    budgeted = budgeted_rows(rows)  # an unbounded attack never stands at a budget it did not run at
    for ax, role in zip(axes, ("student", "teacher"), strict=True):
        for attack, group in budgeted[budgeted["role"] == role].groupby("attack", sort=False):
            at_eps = group[np.isclose(group["eps"].astype(float), eps)].sort_values("T")
            if at_eps.empty:
                continue
            marker = MARKERS[len(ax.lines) % len(MARKERS)]  # overlapping lines stay distinguishable
            (line,) = ax.plot(at_eps["T"], at_eps["success_rate"], marker=marker, alpha=0.85, label=attack)
            _interval(ax, at_eps, "T", "success", line.get_color())
        title = (
            "students (distilled at T, deployed at T=1)" if role == "student" else "teachers (trained at T)"
        )
        ax.set_title(f"{dataset}: {title}", fontsize=10)
        ax.set_ylabel(f"adversarial success rate (eps = {eps:g})")
        ax.set_ylim(-0.03, 1.03)
        _temperature_axis(ax, temperatures)
        if ax.lines:
            ax.legend(fontsize=8)
    return _save(fig, path)


def plot_robust_acc_vs_eps(rows: pd.DataFrame, bounded: list[str], dataset: str, path: Path) -> Path:
    """Robust accuracy against eps, one line per model; the worst case over attacks first."""
    from matplotlib import colormaps

    bounded_rows = rows[rows["attack"].isin(bounded) & rows["eps"].notna()].copy()
    bounded_rows["eps"] = bounded_rows["eps"].astype(float)
    worst = bounded_rows.groupby(["model", "role", "T", "eps"], as_index=False)["robust_acc"].min()
    worst["attack"] = "worst case"
    panels = [("worst case over " + ", ".join(bounded), worst)]
    panels += [(attack, bounded_rows[bounded_rows["attack"] == attack]) for attack in bounded]
    temperatures = sorted(rows["T"].unique())
    logs = np.log(np.asarray(temperatures, dtype=float))
    span = (logs.max() - logs.min()) or 1.0
    cmap = colormaps["viridis"]
    fig, axes = _figure(len(panels))
    for ax, (title, frame) in zip(axes, panels, strict=True):
        for (model, role, T), group in frame.groupby(["model", "role", "T"], sort=False):
            group = group.sort_values("eps")
            colour = cmap(0.9 * (math.log(T) - logs.min()) / span)
            ax.plot(
                group["eps"],
                group["robust_acc"],
                ROLE_STYLE.get(role, ":"),
                color=colour,
                marker=".",
                label=model,
            )
            _interval(ax, group, "eps", "robust_acc", colour, alpha=0.08)
        ax.set_title(f"{dataset}: {title}", fontsize=10)
        ax.set_xlabel("L-inf budget eps")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    order = sorted(
        range(len(labels)), key=lambda i: (labels[i].split("-")[0], float(labels[i].split("-T")[-1]))
    )
    fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="outside right upper", fontsize=7)
    return _save(fig, path)


def plot_accuracy_gap(gap: pd.DataFrame, dataset: str, path: Path) -> Path:
    """Teacher and student test accuracy, and their gap, against T."""
    gap = gap.sort_values("T")
    temperatures = sorted(gap["T"].unique())
    fig, axes = _figure(2)
    axes[0].plot(gap["T"], gap["teacher_acc"], "--o", label="teacher (trained at T)")
    axes[0].plot(gap["T"], gap["student_acc"], "-o", label="student (distilled at T)")
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=8)
    positions = np.arange(len(gap))
    cost = pd.to_numeric(gap["cost_pp"], errors="coerce") if "cost_pp" in gap.columns else None
    if cost is not None and cost.notna().any():
        baseline = pd.to_numeric(gap["baseline_acc"], errors="coerce").dropna()
        if not baseline.empty:
            axes[0].axhline(
                baseline.iloc[0], color="black", linewidth=0.8, ls=":", label="teacher-T1 (undefended)"
            )
            axes[0].legend(fontsize=8)
        axes[1].bar(positions - 0.2, gap["gap_pp"], width=0.4, color="tab:red", label="against its teacher")
        axes[1].bar(positions + 0.2, cost, width=0.4, color="tab:blue", label="against teacher-T1 (cost)")
        axes[1].legend(fontsize=8)
    else:
        axes[1].bar(positions, gap["gap_pp"], color="tab:red")
    axes[1].axhline(0, color="black", linewidth=0.8)
    axes[1].set_xticks(positions)
    axes[1].set_xticklabels([format_T(t) for t in gap["T"]])
    axes[1].set_xlabel("temperature T")
    axes[1].set_ylabel("accuracy lost by the student (percentage points)")
    axes[1].grid(alpha=0.3, axis="y")
    _temperature_axis(axes[0], temperatures)
    for ax, title in zip(axes, ("test accuracy", "accuracy gap and cost"), strict=True):
        ax.set_title(f"{dataset}: {title}", fontsize=10)
    return _save(fig, path)


SUMMARY_FIGURE = "summary.png"


def plot_demo_summary(
    tables: dict[str, pd.DataFrame], dataset: str, models: list[str], path: Path
) -> Path | None:
    """The demo's figure: per model, FGSM's and PGD's success against eps next to the worst case
    (the per-input ensemble when the worst-case table has one, else the strongest attack).
    None when the tables hold no bounded attack rows for these models."""
    robustness = tables.get("robustness", pd.DataFrame())
    worst_case = tables.get("worst_case", pd.DataFrame())
    if robustness.empty:
        return None
    rows = robustness[(robustness["dataset"] == dataset) & robustness["model"].isin(models)]
    rows = rows[rows["eps"].notna()]
    if rows.empty:
        return None
    worst_column = "ensemble_success" if "ensemble_success" in worst_case.columns else "worst_success"
    worst_label = (
        "worst case, per input" if worst_column == "ensemble_success" else "worst case (strongest attack)"
    )
    fig, axes = _figure(len(models), width=4.2, height=3.4)
    for ax, model in zip(axes, models, strict=True):
        for attack, style in (("fgsm", "-o"), ("pgd", "-s")):
            line = rows[(rows["model"] == model) & (rows["attack"] == attack)].sort_values("eps")
            if not line.empty:
                ax.plot(line["eps"].astype(float), line["success_rate"], style, alpha=0.85, label=attack)
        if not worst_case.empty and worst_column in worst_case.columns:
            worst = worst_case[(worst_case["dataset"] == dataset) & (worst_case["model"] == model)]
            worst = worst[worst["eps"].notna()].sort_values("eps")
            if not worst.empty:
                ax.plot(
                    worst["eps"].astype(float), worst[worst_column], "--D", color="black", label=worst_label
                )
        ax.set_title(f"{dataset}: {model}", fontsize=10)
        ax.set_xlabel("L-inf budget eps")
        ax.set_ylabel("attack success rate")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    return _save(fig, Path(path))


def success_table(rows: pd.DataFrame, eps: float) -> pd.DataFrame:
    """Success rate per model (rows) and attack (columns) at `eps`.

    Attacks that ran at that budget, and minimal-perturbation attacks within it when per-input
    distances allow; an unbounded attack's own success rate is not a success at `eps` (see
    `distances_table`).
    """
    budgeted = budgeted_rows(rows)
    frame = budgeted[np.isclose(budgeted["eps"].astype(float), eps)]
    table = frame.pivot_table(
        index=["role", "T", "model"], columns="attack", values="success_rate", sort=False
    )
    table = table.reset_index()
    table["rank"] = table["role"].map(ROLE_RANK).fillna(len(ROLE_RANK))
    table = table.sort_values(["rank", "T"], kind="stable")
    table["T"] = [format_T(t) for t in table["T"]]
    attacks = [a for a in dict.fromkeys(frame["attack"]) if a in table.columns]
    return table[["model", "role", "T", *attacks]].reset_index(drop=True)


def variants_table(
    robustness: pd.DataFrame, gaps: pd.DataFrame, compression: pd.DataFrame, dataset: str, eps: float
) -> pd.DataFrame | None:
    """Distillation variants side by side: method, size, accuracy and attack success at `eps`.

    Shown when a dataset has a student beyond the sweeps' `student-T<T>` (another method,
    architecture, transfer set or generation); every student at those temperatures is listed,
    so Papernot's own student is the baseline row. None when there is nothing to compare.
    """
    gap = gaps[gaps["dataset"] == dataset] if not gaps.empty else gaps
    if gap.empty or "method" not in gap.columns:
        return None
    named = np.asarray([s == run_name("student", t) for s, t in zip(gap["student"], gap["T"], strict=True)])
    variant_T = set(gap.loc[~named, "T"])
    if not variant_T:
        return None
    gap = gap[gap["T"].isin(variant_T)].sort_values(
        ["T", "student_params", "student"], ascending=[True, False, True], kind="stable"
    )
    # The teachers' own rows first, the reference for size and accuracy (a born-again generation
    # that teaches the next is listed once, as a student).
    teachers = gap.drop_duplicates("teacher")
    teachers = teachers[~teachers["teacher"].isin(gap["student"])]
    table = pd.concat(
        [
            pd.DataFrame(
                {
                    "model": teachers["teacher"],
                    "T": [format_T(t) for t in teachers["teacher_T"]],
                    "method": "(teacher)",
                    "arch": None,
                    "params": teachers["teacher_params"],
                    "clean_acc": teachers["teacher_acc"],
                    "gap_pp": None,
                }
            ),
            pd.DataFrame(
                {
                    "model": gap["student"],
                    "T": [format_T(t) for t in gap["T"]],
                    "method": gap["method"],
                    "arch": gap["student_arch"],
                    "params": gap["student_params"],
                    "clean_acc": gap["student_acc"],
                    "gap_pp": gap["gap_pp"],
                }
            ),
        ],
        ignore_index=True,
    )
    sizes = compression[compression["dataset"] == dataset] if not compression.empty else compression
    if not sizes.empty:
        size = sizes.set_index("model")
        table["arch"] = table["arch"].fillna(table["model"].map(size["arch"]))
        table["size_bytes"] = table["model"].map(size["size_bytes"])
        table["us_per_input_b1"] = table["model"].map(size["us_per_input_b1"])
    rows = robustness[(robustness["dataset"] == dataset) & robustness["model"].isin(table["model"])]
    if not rows.empty:
        keep = rows["eps"].isna() | np.isclose(rows["eps"].astype(float).fillna(-1), eps)
        success = rows[keep].pivot_table(index="model", columns="attack", values="success_rate", sort=False)
        for attack in success.columns:
            unbounded = rows.loc[rows["attack"] == attack, "eps"].isna().all()
            if unbounded:  # no budget: its success at any distance, and how far it had to go
                attacked = rows[rows["attack"] == attack].set_index("model")
                table[f"{attack}_success_unbounded"] = table["model"].map(success[attack])
                table[f"{attack}_median_dist"] = table["model"].map(attacked["median_dist"])
            else:
                table[f"{attack}_success@{eps:g}"] = table["model"].map(success[attack])
        robust = rows[keep & rows["eps"].notna()].groupby("model")["robust_acc"].min()
        table[f"worst_robust_acc@{eps:g}"] = table["model"].map(robust)
    return table.reset_index(drop=True)


def _transfer_sets(rows: pd.DataFrame) -> pd.Series:
    """Each row's transfer set (records without the column: read from the run name)."""
    named = pd.Series(["noise" if "-noise-" in str(m) else "public" for m in rows["model"]], index=rows.index)
    if "transfer_set" not in rows.columns:
        return named
    return rows["transfer_set"].where(rows["transfer_set"].notna(), named)


def _order_privacy(rows: pd.DataFrame) -> pd.DataFrame:
    """Teacher first, then the students by transfer set (public first) and T; LiRA first in each model."""
    rank = {name: i for i, name in enumerate(PRIVACY_TRANSFER_ORDER)}
    attacks = {name: i for i, name in enumerate(PRIVACY_ATTACK_ORDER)}
    key = pd.DataFrame(
        {
            "role": rows["role"].map(ROLE_RANK).fillna(len(ROLE_RANK)),
            "transfer": _transfer_sets(rows).map(rank).fillna(len(rank)),
            "T": rows["T"].astype(float),
            "model": rows["model"],
            "attack": rows["attack"].map(attacks).fillna(len(attacks)),
        },
        index=rows.index,
    )
    return rows.loc[key.sort_values(list(key.columns), kind="stable").index]


def privacy_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One dataset's privacy rows with the report's columns, in reading order."""
    shown = _order_privacy(rows)[list(PRIVACY_REPORT_COLUMNS)].copy()
    shown["T"] = [format_T(t) for t in shown["T"]]
    return shown.reset_index(drop=True)


def _span(values: pd.Series, fmt: str) -> str:
    lo, hi = float(values.min()), float(values.max())
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{lo:{fmt}} to {hi:{fmt}}"


def _versus(values: pd.Series, reference: float, fmt: str = ".3f") -> str:
    """How `values` stand against the teacher's `reference`, e.g. "0.020 to 0.028 below the teacher's"."""
    diff = values.astype(float) - float(reference)
    if (diff < 0).all():
        return f"{_span(-diff, fmt)} below the teacher's"
    if (diff > 0).all():
        return f"{_span(diff, fmt)} above the teacher's"
    if (diff == 0).all():
        return "equal to the teacher's"
    return f"between {-diff.min():{fmt}} below and {diff.max():{fmt}} above the teacher's"


def privacy_summary(rows: pd.DataFrame, other_seeds: int = 0) -> str:
    """Students against the teacher, in words, from one dataset's privacy rows.

    Online LiRA when recorded, then offline LiRA (the calibrated attack Carlini et al. 2022
    recommend), else the loss
    attack. The null spread is the Mann-Whitney U's: sd(AUC) = sqrt((m + n + 1) / (12 m n)) for
    m members and n non-members scored at random.
    """
    recorded = set(rows["attack"])
    attack = next((a for a in ("lira-online", "lira", "loss") if a in recorded), "loss")
    chosen = rows[rows["attack"] == attack]
    teachers = chosen[chosen["role"] == "teacher"]
    students = chosen[chosen["role"] == "student"]
    if teachers.empty or students.empty:
        return f"No teacher and student pair recorded under the {attack} attack to compare."
    teacher = teachers.iloc[0]
    name = {"lira-online": "online LiRA", "lira": "LiRA"}.get(attack, "the loss attack")
    text = [
        f"Under {name} the teacher reaches AUC {teacher['auc']:.3f} and TPR {teacher['tpr_at_1pct_fpr']:.3f} "
        f"at 1% FPR, with test accuracy {teacher['test_acc']:.3f}."
    ]
    transfer = _transfer_sets(students)
    for transfer_set in [t for t in PRIVACY_TRANSFER_ORDER if (transfer == t).any()] + sorted(
        set(transfer) - set(PRIVACY_TRANSFER_ORDER)
    ):
        group = students[transfer == transfer_set].sort_values("T")
        cost = (teacher["test_acc"] - group["test_acc"]) * 100.0
        where = PRIVACY_TRANSFER_WORDS.get(transfer_set, f"the {transfer_set} transfer set")
        several = len(group) > 1
        text.append(
            f"The student{'s' if several else ''} distilled on {where} at T = "
            f"{', '.join(format_T(t) for t in group['T'])} reach{'' if several else 'es'} "
            f"AUC {_span(group['auc'], '.3f')}, {_versus(group['auc'], teacher['auc'])}, and TPR "
            f"{_span(group['tpr_at_1pct_fpr'], '.3f')} at 1% FPR, "
            f"{_versus(group['tpr_at_1pct_fpr'], teacher['tpr_at_1pct_fpr'])}; "
            f"{'their' if several else 'its'} test accuracy of {_span(group['test_acc'], '.3f')} costs "
            f"{_span(cost, '+.1f')} percentage points"
            f"{' (negative: more accurate than the teacher)' if (cost < 0).any() else ''}."
        )
    m, n = int(teacher["n_members"]), int(teacher["n_nonmembers"])
    null_sd = math.sqrt((m + n + 1) / (12.0 * m * n))
    chance_tpr = math.floor(0.01 * n + 1e-9) / n
    largest = float((students["auc"] - teacher["auc"]).abs().max())
    text.append(
        f"With {m} members and {n} non-members, random scores give AUC 0.5 ± {null_sd:.3f} (one sd) and "
        f"TPR {chance_tpr:.3f} at 1% FPR; the largest AUC difference between a student and the teacher, "
        f"{largest:.3f}, is {largest / null_sd:.1f} such sds."
    )
    controls = chosen[chosen["role"] == "control"]
    if not controls.empty:
        control = controls.iloc[0]
        text.append(
            f"The control, the same network trained on the public half with its labels (no member seen), "
            f"reaches AUC {control['auc']:.3f} and TPR {control['tpr_at_1pct_fpr']:.3f} at 1% FPR: what the "
            "attack finds in a model without members."
        )
    if "seed" in rows.columns and rows["seed"].nunique() == 1:
        seed = int(rows["seed"].iloc[0])
        text.append(
            f"Seed {seed} here; the models are compared seed by seed over {other_seeds + 1} seeds below."
            if other_seeds
            else f"One run (seed {seed}): repeat with other seeds before trusting small gaps."
        )
    return " ".join(text)


def privacy_section(
    privacy: pd.DataFrame, datasets: list[str], results_dir: Path, plots: list[Path], notes: list[str]
) -> list[str]:
    """REPORT.md's privacy section: per dataset the summary, the log-log ROC figure and the table."""
    from .studies.privacy import plot_privacy_rocs, read_roc_records, roc_figure_path  # imports torch

    lines = [
        "## Privacy: membership inference (`defdistill privacy`)",
        "",
        "A teacher trained on the private half of the training split; students that see only its soft "
        "labels at T on a public half (labels unused) or on uniform noise, deployed at T=1. Members: the "
        "teacher's private examples; non-members: test examples. AUC, TPR at 1% and 0.1% FPR (exact ROC, "
        "no interpolation) and advantage max(TPR - FPR). Full rows: [privacy.md](privacy.md) "
        "([csv](privacy.csv)).",
        "",
    ]
    for dataset in datasets:
        rows = privacy[privacy["dataset"] == dataset]
        seeds = read_privacy_seeds(results_dir)
        seeds = seeds[seeds["dataset"] == dataset]
        others = seeds["seed"].nunique() - 1 if not seeds.empty else 0
        lines += [f"### Privacy on {dataset}", "", privacy_summary(rows, others), ""]
        curves = read_roc_records(results_dir, dataset)
        figure = roc_figure_path(results_dir, dataset)
        if curves:
            plots.append(plot_privacy_rocs(curves, figure))
        elif figure.is_file():
            notes.append(f"{dataset}: no stored ROC curves; linking the existing {figure.name} as it is")
        else:
            notes.append(
                f"{dataset}: no stored ROC curves; run defdistill privacy again to draw {figure.name}"
            )
        if figure.is_file():
            lines += [f"![membership-inference ROC, log-log, {dataset}]({figure.name})", ""]
        lines.append(to_markdown(privacy_table(rows)))
        if others > 0:
            lines += ["", *privacy_paired_section(seeds)]
    return lines


def _extra_table(results_dir: Path, name: str) -> str | None:
    path = results_dir / f"{name}.md"
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    body = [line for line in lines if not line.startswith("# ")]
    return "\n".join(body).strip() + "\n"


@dataclass(frozen=True)
class _Records:
    """The records a report draws from, and the datasets it covers."""

    all_robustness: pd.DataFrame  # every robustness row, per-input results included
    robustness: pd.DataFrame  # the sweep's rows (teacher-T<T>, student-T<T>)
    all_gaps: pd.DataFrame
    gaps: pd.DataFrame  # the sweep students' rows
    privacy: pd.DataFrame
    found: list[str]  # datasets with sweep rows
    privacy_found: list[str]  # datasets with privacy rows


def _check_report_inputs(results_dir: Path, eps: float | None) -> None:
    if eps is not None and not (isinstance(eps, (int, float)) and math.isfinite(eps) and 0 < eps <= 1):
        raise DefdistillError(f"--eps must lie in (0, 1], got {eps}")
    if not (results_dir / RECORDS_DIR).is_dir():
        raise DefdistillError(
            f"no results in {results_dir}: "
            "run experiments/temperature_sweep.sh digits (or defdistill demo) first"
        )


def _load_records(results_dir: Path, runs_dir: str | Path | None, datasets: list[str] | None) -> _Records:
    """Refresh the accuracy baselines and migrate old privacy keys, then read the records of
    `datasets` (every dataset when None)."""
    from .studies.derive import derive

    derive(results_dir, runs_dir)  # derived rows (accuracy gap, worst case) restored from primary data
    for folder in [results_dir, *sorted((results_dir / PRIVACY_SEEDS_DIR).glob("*/"))]:
        migrate_privacy_records(folder)  # rows keyed before the transfer set was part of the key
    all_robustness = read_records(results_dir, "robustness", per_input=True)
    robustness = _sweep_rows(all_robustness)
    gaps = read_records(results_dir, "accuracy_gap")
    all_gaps = gaps.copy()
    if not gaps.empty:
        gaps = gaps[[s == run_name("student", t) for s, t in zip(gaps["student"], gaps["T"], strict=True)]]
    found = sorted(set(robustness["dataset"]) | set(gaps["dataset"]))
    privacy = read_records(results_dir, "privacy")
    privacy_found = sorted(set(privacy["dataset"]))
    if datasets:
        found = [d for d in found if d in datasets]
        privacy_found = [d for d in privacy_found if d in datasets]
    if not found and not privacy_found:
        raise DefdistillError(
            f"no sweep runs (teacher-T<T>, student-T<T>) in the tables of {results_dir}: "
            "run experiments/temperature_sweep.sh digits first"
        )
    return _Records(all_robustness, robustness, all_gaps, gaps, privacy, found, privacy_found)


def _headline_eps(dataset: str) -> float:
    from .data.registry import DATASETS

    return DATASETS[dataset].headline_eps if dataset in DATASETS else DEFAULT_REPORT_EPS


def write_report(
    results_dir: str | Path = "results",
    *,
    eps: float | None = None,
    datasets: list[str] | None = None,
    runs_dir: str | Path | None = None,
    docs: Sequence[str | Path] = (),
) -> ReportResult:
    """Plot every dataset in results_dir's records and write REPORT.md beside the plots.

    First the derived rows are brought up to date (`studies.derive.derive`: accuracy gaps and worst
    cases recomputed where missing or stale, and the cost against teacher-T1, from `runs_dir` when
    given, else from the rows themselves). `docs` (README.md,
    REPRODUCTION.md) have their generated blocks that name this results folder rewritten from
    the tables (`defdistill.studies.claims`). `eps` (default: each dataset's headline budget,
    DatasetSpec.headline_eps, one at which random noise fools the undefended network on under
    10% of inputs) is the budget of the success-against-T table and plot.
    """
    results_dir = Path(results_dir)
    _check_report_inputs(results_dir, eps)
    records = _load_records(results_dir, runs_dir, datasets)
    found = records.found
    notes: list[str] = []
    plots: list[Path] = []
    lines = ["# Defensive distillation: report", ""]
    if found:
        lines += [
            "Made by `defdistill report` from the tables in this folder. Success rate: adversarial examples "
            "found / test inputs the model classified correctly (Papernot's adversarial sample success "
            "rate). Students are distilled at T and deployed at T=1; teachers are trained at T. Full rows: "
            "[robustness.md](robustness.md) ([csv](robustness.csv)), "
            "[accuracy_gap.md](accuracy_gap.md) ([csv](accuracy_gap.csv)).",
            "",
        ]
    for dataset in found:
        budget = eps if eps is not None else _headline_eps(dataset)
        lines += _dataset_section(records, dataset, budget, results_dir, plots, notes)
    if found:
        lines += diagnosis_section(results_dir, found)
    if not records.robustness.empty and found:
        seeds = seed_robustness(results_dir)
        outcomes = attack_outcomes(pd.concat([records.all_robustness, seeds], ignore_index=True))
        lines += small_budget_section(outcomes[outcomes["dataset"].isin(found)])
        lines += seeds_section(pd.concat([records.all_robustness, seeds], ignore_index=True), found)
        lines += l2_section(results_dir)
    if records.privacy_found:
        lines += privacy_section(records.privacy, records.privacy_found, results_dir, plots, notes)
    for name in EXTRA_TABLES:
        text = _extra_table(results_dir, name)
        if text is not None:
            lines += [f"## {name.replace('_', ' ').capitalize()} ([{name}.md]({name}.md))", "", text]
    report = results_dir / REPORT_FILE
    atomic_write_text(report, "\n".join(lines).rstrip() + "\n")
    result = ReportResult(report, plots, notes)
    if docs:
        from .studies.claims import update_docs

        result.docs = update_docs(docs, results_dir)
    return result


def _dataset_section(
    records: _Records, dataset: str, eps: float, results_dir: Path, plots: list[Path], notes: list[str]
) -> list[str]:
    """One dataset's section: attack success, accuracy gap, variants. Adds its plots and notes."""
    rows = records.robustness[records.robustness["dataset"] == dataset]
    gaps = records.gaps
    gap = gaps[gaps["dataset"] == dataset] if not gaps.empty else gaps
    lines = [f"## {dataset}", ""]
    if not rows.empty:
        lines += _attack_section(rows, dataset, eps, results_dir, plots, notes)
        lines += _papernot_section(rows, read_records(results_dir, "gradients"), dataset, results_dir, plots)
    if not gap.empty:
        lines += _gap_section(gap, dataset, results_dir, plots)
    compression = read_records(results_dir, "compression")
    all_robustness = records.all_robustness
    variants = variants_table(
        all_robustness, records.all_gaps, compression, dataset, choose_eps(all_robustness, eps) or eps
    )
    if variants is not None:
        lines += [
            "### Distillation variants (experiments/variants.sh)",
            "",
            "Every student at the temperatures the variants were trained at: method, size, accuracy, "
            "and attack success at the budget (`_unbounded`: a minimal-perturbation attack's success at "
            "any distance, beside its median distance). "
            "Low FGSM/PGD success beside high CW success is the gradient masking of distillation, "
            "not robustness. Sizes and CPU latency from [compression.md](compression.md).",
            "",
            to_markdown(variants),
        ]
    return lines


def _attack_section(
    rows: pd.DataFrame, dataset: str, eps: float, results_dir: Path, plots: list[Path], notes: list[str]
) -> list[str]:
    """Success against T at the report's budget (or the nearest recorded one), robust accuracy
    against eps, and the minimal-perturbation attacks' distances."""
    from .evaluate.attacks import ATTACKS

    chosen = choose_eps(rows, eps)
    if chosen is None:
        chosen = eps
    elif not math.isclose(chosen, eps):
        notes.append(f"{dataset}: no rows at eps {eps:g}; success against T is plotted at eps {chosen:g}")
    path = plot_success_vs_T(rows, dataset, chosen, results_dir / f"success_vs_T_{dataset}.png")
    plots.append(path)
    lines = [
        f"### Attack success against T (eps = {chosen:g})",
        "",
        f"![success rate against T, {dataset}]({path.name})",
        "",
        to_markdown(success_table(rows, chosen)),
    ]
    bounded = [a for a in dict.fromkeys(rows["attack"]) if a in ATTACKS and ATTACKS[a].bounded]
    if rows["eps"].notna().any() and bounded:
        path = plot_robust_acc_vs_eps(
            rows, bounded, dataset, results_dir / f"robust_acc_vs_eps_{dataset}.png"
        )
        plots.append(path)
        lines += [
            "### Robust accuracy against epsilon",
            "",
            f"![robust accuracy against eps, {dataset}]({path.name})",
            "",
        ]
    distances = distances_table(rows)
    if distances is not None:
        lines += [
            "### Minimal perturbations (unbounded attacks)",
            "",
            "Attacks that search for the smallest adversarial perturbation have no budget: their "
            "success at any distance says little, their distances say how far the model's decision "
            "lies (median and mean norm over the successful examples, in `norm`; Carlini and Wagner "
            "2017 tabulate the mean). The mean needs per-input distances in the records. Within each "
            "L-inf budget, such an attack enters the success table above only from per-input "
            "distances. HopSkipJump's distances are upper bounds on the minimal perturbation: it runs 10 "
            "steps on the first 50 inputs, not to convergence, so a model's true distance may be smaller.",
            "",
            to_markdown(distances),
        ]
    return lines


# --- Papernot et al.'s measurements against T: gradient amplitude and minimal perturbation ---------

PAPERNOT_COLUMNS = (
    "T", "model", "jsma", "jsma-z", "softmax_log10", "softmax_zero", "logits_l1",
    "jsma_pixels_pct", "jsma_all_pairs_pct", "jsma-z_pixels_pct", "cw_mean_l2",
)  # fmt: skip


def papernot_table(rows: pd.DataFrame, gradients: pd.DataFrame, dataset: str) -> pd.DataFrame | None:
    """Per distilled network (student-T<T>, with teacher-T1 as the undistilled T=1 row): JSMA-F
    and JSMA-Z success over (input, target) pairs, the softmax gradient's exact log10 amplitude,
    the share of inputs where it is zero in float32, the logits' amplitude, and robustness as
    the mean minimal perturbation: JSMA's share of pixels changed (successful pairs) and CW's L2."""
    from .evaluate.attacks import AttackSettings

    gamma = AttackSettings().jsma_gamma  # the most JSMA may change (the paper's 14.5%)
    models = rows[(rows["role"] == "student") | (rows["model"] == run_name("teacher", 1))]
    grads = gradients[gradients["dataset"] == dataset].set_index("model") if not gradients.empty else None
    table = []
    for model, group in models.groupby("model", sort=False):
        by_attack = group.set_index("attack")
        entry: dict[str, object] = {"T": float(group["T"].iloc[0]), "model": model}
        for attack in ("jsma", "jsma-z"):
            if attack in by_attack.index:
                row = by_attack.loc[attack]
                entry[attack] = float(row["success_rate"])
                entry[f"{attack}_pixels_pct"] = 100 * float(row.get("mean_dist", math.nan))
                if attack == "jsma":  # a failed pair counted at the most JSMA may change: a lower bound
                    rate, reached = float(row["success_rate"]), float(row.get("mean_dist", math.nan))
                    reached = 0.0 if math.isnan(reached) else reached
                    entry["jsma_all_pairs_pct"] = 100 * (rate * reached + (1 - rate) * gamma)
        if "cw" in by_attack.index:
            entry["cw_mean_l2"] = float(by_attack.loc["cw"].get("mean_dist", math.nan))
        if grads is not None and model in grads.index:
            for column in ("softmax_log10", "softmax_zero", "logits_l1"):
                entry[column] = float(grads.loc[model, column])
        table.append(entry)
    frame = pd.DataFrame(table).reindex(columns=list(PAPERNOT_COLUMNS))
    frame = frame.dropna(how="all", subset=list(PAPERNOT_COLUMNS[2:]))
    if frame.empty or frame[["jsma", "softmax_log10"]].isna().all().all():
        return None  # CW alone is in the minimal-perturbation table already
    frame["student"] = frame["model"].str.startswith("student")  # teacher-T1 before student-T1
    return frame.sort_values(["T", "student"]).drop(columns="student").reset_index(drop=True)


def plot_papernot(table: pd.DataFrame, dataset: str, path: Path) -> Path:
    """Three panels against T: gradient amplitudes (log10), JSMA success, mean minimal perturbation.

    The lines join the distilled networks (student-T<T>); the undistilled teacher-T1 is a
    black star at T=1 on each, so that two networks at T=1 never draw a vertical segment."""
    fig, axes = _figure(3, width=4.4)
    table = table.assign(log_logits=np.log10(table["logits_l1"].astype(float)))
    baseline = table[table["model"] == run_name("teacher", 1)]
    table = table[table["model"] != run_name("teacher", 1)].sort_values("T")
    temperatures = sorted(set(table["T"]) | set(baseline["T"]))
    amp, success, distortion = axes

    def draw(ax, column: str, label: str, **style) -> None:
        if table[column].notna().any():
            ax.plot(table["T"], table[column], marker=style.pop("marker", "o"), label=label, **style)
        if not baseline.empty and baseline[column].notna().any():
            ax.plot(baseline["T"], baseline[column], "*", color="black", markersize=10)

    draw(amp, "softmax_log10", "softmax (JSMA-F, FGSM)")
    draw(amp, "log_logits", "logits (JSMA-Z, CW)", marker="s")
    amp.set_ylabel("log10 mean L1 norm of the input Jacobian")
    amp.set_title(f"{dataset}: adversarial gradient amplitude", fontsize=10)
    draw(success, "jsma", "JSMA-F (softmax)")
    draw(success, "jsma-z", "JSMA-Z (logits)")
    success.set_ylim(-0.03, 1.03)
    success.set_ylabel("success over (input, target) pairs")
    success.set_title(f"{dataset}: JSMA success (gamma 14.5%)", fontsize=10)
    draw(distortion, "jsma_all_pairs_pct", "JSMA-F, failures at 14.5%")
    draw(distortion, "jsma_pixels_pct", "JSMA-F, reached pairs")
    draw(distortion, "jsma-z_pixels_pct", "JSMA-Z, reached pairs")
    distortion.set_ylabel("mean minimal perturbation (% of pixels)")
    distortion.set_title(f"{dataset}: robustness (Papernot's measure)", fontsize=10)
    extra: list = []
    if table["cw_mean_l2"].notna().any() or baseline["cw_mean_l2"].notna().any():
        l2 = distortion.twinx()
        draw(l2, "cw_mean_l2", "CW: mean L2 (right axis)", marker="s", color="tab:red")
        l2.set_ylabel("CW mean L2 distance")
        l2.set_ylim(bottom=0)
        extra = l2.get_legend_handles_labels()[0]
    for ax in axes:
        _temperature_axis(ax, temperatures)
        handles = list(ax.get_legend_handles_labels()[0]) + (extra if ax is distortion else [])
        if not baseline.empty:
            from matplotlib.lines import Line2D

            star = Line2D([], [], marker="*", color="black", linestyle="", markersize=10)
            star.set_label(f"{run_name('teacher', 1)} (no distillation)")
            handles.append(star)
        if handles:  # the distortion panel's lines run along its top and bottom
            ax.legend(handles=handles, fontsize=7, loc="center right" if ax is distortion else "best")
    return _save(fig, path)


def _papernot_section(
    rows: pd.DataFrame, gradients: pd.DataFrame, dataset: str, results_dir: Path, plots: list[Path]
) -> list[str]:
    table = papernot_table(rows, gradients, dataset)
    if table is None:
        return []
    path = plot_papernot(table, dataset, results_dir / f"papernot_{dataset}.png")
    plots.append(path)
    shown = table.copy()
    shown["T"] = [format_T(t) for t in shown["T"]]
    return [
        "### Papernot et al.'s measurements against T, and what they miss",
        "",
        "Per distilled network (teacher-T1: no distillation). `jsma`, `jsma-z`: success over (input, "
        "target) pairs, each correctly classified input towards the 9 other classes. `softmax_log10`: "
        "the exact log10 of the mean L1 norm of the softmax's input Jacobian, the gradient JSMA-F and "
        "FGSM follow (computed in log space: float arithmetic underflows first); `softmax_zero`: the "
        "share of inputs where float32 makes it exactly zero; `logits_l1`: the same norm for the "
        "logits, which JSMA-Z and CW follow ([gradients.md](gradients.md)). Robustness as the mean "
        "minimal perturbation: JSMA's share of pixels changed over the pairs it reached "
        "(`jsma_pixels_pct`), over all pairs with a failed one counted at the 14.5% JSMA may change "
        "(`jsma_all_pairs_pct`, a lower bound that rises as JSMA-F fails), JSMA-Z's, and CW's mean L2. "
        "A falling softmax amplitude beside a rising logits amplitude is gradient masking: "
        "the softmax hides the gradient, not the decision boundary.",
        "",
        f"![gradient amplitude, JSMA success and minimal perturbation against T, {dataset}]({path.name})",
        "",
        to_markdown(shown),
    ]


def _gap_section(gap: pd.DataFrame, dataset: str, results_dir: Path, plots: list[Path]) -> list[str]:
    """The students' accuracy gap to their teachers and cost against teacher-T1, plotted against T."""
    path = plot_accuracy_gap(gap, dataset, results_dir / f"accuracy_gap_{dataset}.png")
    plots.append(path)
    columns = ["T", "teacher", "teacher_acc", "student", "student_acc", "gap_pp", "baseline_acc", "cost_pp"]
    shown = gap.reindex(columns=columns).sort_values("T").copy()
    shown["T"] = [format_T(t) for t in shown["T"]]
    return [
        "### Accuracy gap and cost",
        "",
        "`gap_pp`: the student against its own teacher (trained at T); `cost_pp`: against the "
        "undefended network teacher-T1 (`baseline_acc`), the comparison Papernot et al. make. "
        "Percentage points on the whole test split.",
        "",
        f"![accuracy gap against T, {dataset}]({path.name})",
        "",
        to_markdown(shown),
    ]


# --- minimal-perturbation attacks: distances, and success within a budget from per-input distances ---

WITHIN_SUFFIX = " (within eps)"  # a minimal-perturbation attack's success within a budget, from its distances


def per_input_outcomes(row: pd.Series | dict) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(is_adv, distances, correct) per attacked input from a record's `per_input` results, or
    None when the record has none (records made before they were kept).

    `is_adv[i]`: an adversarial example was found for the correctly classified input i;
    `distances[i]`: its perturbation norm (NaN when none was found); `correct[i]`: the clean
    input was classified correctly.
    """
    get = row.get if isinstance(row, dict) else (lambda k, d=None: row[k] if k in row.index else d)
    per_input = get(PER_INPUT)
    if not isinstance(per_input, dict):
        return None
    flags = np.array([c == "1" for c in per_input.get("broken", "")], dtype=bool)
    correct = np.array([c == "1" for c in per_input.get("clean", "")], dtype=bool)
    dist = np.asarray([math.nan if d is None else float(d) for d in per_input.get("dist", [])], dtype=float)
    if not (flags.shape == dist.shape == correct.shape) or flags.ndim != 1:
        return None
    return flags, dist, correct


def _found(outcomes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Distances of the adversarial examples found for correctly classified inputs."""
    flags, dist, correct = outcomes
    return dist[flags & correct & np.isfinite(dist)]


def distances_table(rows: pd.DataFrame) -> pd.DataFrame | None:
    """Minimal-perturbation attacks as Carlini and Wagner tabulate them: distances, not a budget.

    Per model and unbounded attack: success (any distance), and the median and mean perturbation
    norm over the successful examples. The mean needs per-input distances (records before those
    have the median only).
    """
    minimal = rows[rows["eps"].isna()]
    if minimal.empty:
        return None
    out = []
    for _, row in minimal.iterrows():
        outcomes = per_input_outcomes(row)
        found = _found(outcomes) if outcomes is not None else None
        mean = row.get("mean_dist") if "mean_dist" in row.index else None
        median = row["median_dist"]
        if found is not None and found.size:
            median, mean = float(np.median(found)), float(found.mean())
        out.append(
            {"model": row["model"], "role": row["role"], "T": row["T"], "attack": row["attack"],
             "norm": row["norm"], "n": row["n"], "success_rate": row["success_rate"],
             "median_dist": median, "mean_dist": mean}
        )  # fmt: skip
    table = pd.DataFrame(out)
    table["rank"] = table["role"].map(ROLE_RANK).fillna(len(ROLE_RANK))
    table = table.sort_values(["attack", "rank", "T"], kind="stable").drop(columns="rank")
    table["T"] = [format_T(t) for t in table["T"]]
    return table.reset_index(drop=True)


def within_eps_rows(rows: pd.DataFrame, budgets: Sequence[float]) -> pd.DataFrame:
    """Success of each L-inf minimal-perturbation attack within each budget, from per-input distances.

    An input counts as broken within eps when its adversarial example lies at distance <= eps.
    Records without per-input distances give no rows (the attack is then reported as distances
    only); L2 attacks give none either, since the budgets are L-inf.
    """
    out = []
    minimal = rows[rows["eps"].isna() & (rows["norm"] == "linf")]
    for _, row in minimal.iterrows():
        outcomes = per_input_outcomes(row)
        if outcomes is None:
            continue
        flags, dist, correct = outcomes
        for eps in budgets:
            broken = flags & correct & (dist <= eps * (1 + 1e-6))
            n_correct = int(correct.sum())
            out.append(
                {"dataset": row["dataset"], "model": row["model"], "role": row["role"], "T": row["T"],
                 "attack": f"{row['attack']}{WITHIN_SUFFIX}", "norm": "linf", "eps": float(eps),
                 "n": len(flags), "success_rate": broken.sum() / n_correct if n_correct else math.nan,
                 "robust_acc": float((correct & ~broken).mean())}
            )  # fmt: skip
    return pd.DataFrame(out)


def budgeted_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows that ran at a budget, plus minimal-perturbation attacks within each budget where
    per-input distances allow it. Unbounded rows themselves never stand at a budget."""
    bounded = rows[rows["eps"].notna()]
    budgets = sorted({float(e) for e in bounded["eps"]})
    within = within_eps_rows(rows, budgets) if budgets else pd.DataFrame()
    return pd.concat([bounded, within], ignore_index=True) if not within.empty else bounded


# --- the diagnosis ---------------------------------------------------------------------------


def diagnosis_summary(diagnostics: pd.DataFrame) -> pd.DataFrame:
    """Per model: how many checks passed, which failed, and the verdict (results/diagnostics.csv)."""
    out = []
    for (dataset, model), group in diagnostics.groupby(["dataset", "model"], sort=False):
        checks = group[group["check"] != "verdict"]
        passed = checks["passed"].astype(str).str.lower().isin(["true", "1", "1.0"])
        verdict = group.loc[group["check"] == "verdict", "detail"]
        line = str(verdict.iloc[0]) if not verdict.empty else "no verdict recorded"
        out.append(
            {"dataset": dataset, "model": model, "checks": len(checks), "passed": int(passed.sum()),
             "failed": int((~passed).sum()), "failed_checks": ", ".join(checks.loc[~passed, "check"]) or "-",
             "verdict": re.split(r" \(|:", line, maxsplit=1)[0]}
        )  # fmt: skip
    return pd.DataFrame(out)


def read_diagnostics(results_dir: Path) -> pd.DataFrame:
    path = results_dir / "diagnostics.csv"
    if not path.is_file():
        return pd.DataFrame(columns=["dataset", "model", "check", "value", "passed", "detail"])
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def diagnosis_section(results_dir: Path, datasets: list[str]) -> list[str]:
    lines = ["## Diagnosis: gradient-masking checks ([diagnostics.md](diagnostics.md))", ""]
    diagnostics = read_diagnostics(results_dir)
    diagnostics = diagnostics[diagnostics["dataset"].isin(datasets)] if datasets else diagnostics
    if diagnostics.empty:
        return lines + [
            "No diagnosis in this folder's results/diagnostics.csv: run `defdistill diagnose --model M` "
            "on each model (the demo does it for its three).",
            "",
        ]
    summary = diagnosis_summary(diagnostics)
    counts = {v: summary[summary["verdict"] == v] for v in ("masked", "not-masked", "inconclusive")}
    named = "; ".join(f"{v}: {', '.join(f['model'])}" for v, f in counts.items() if len(f))
    lines += [
        f"{len(summary)} models diagnosed. The verdict is a paired test on the same inputs at every eps "
        "(one-sided exact McNemar, Holm-corrected, a gap of at least 0.05 in robust accuracy): masked "
        "when cross-entropy gradient attacks on the model as given leave significantly more inputs "
        "standing than the per-input worst case over every recorded attack; the checks of Carlini et al. "
        f"(2019) explain it and never make it alone" + (f" ({named})." if named else "."),
        "",
        to_markdown(summary),
    ]
    return lines


# --- small budgets: two models on the same inputs --------------------------------------------

FLAG_COLUMNS = ("dataset", "seed", "model", "eps", "input", "broken")
SEEDS_DIR = "seeds"
SMALL_BUDGET_PAIR = ("student-T100", "teacher-T1")
SIGNIFICANCE = 0.05


def per_input_worst_case(robustness: pd.DataFrame) -> pd.DataFrame:
    """Per-input worst case over the bounded attacks: an input is broken at eps if the model
    misclassifies it clean or any attack's example at that eps fooled it.

    Reads the records' per-input results; rows without them are left out, so records from
    before per-input outcomes give an empty frame. The seed is the record's `seed`, else 0.
    """
    rows = robustness[robustness["eps"].notna()] if not robustness.empty else robustness
    if PER_INPUT not in rows.columns:
        return pd.DataFrame(columns=list(FLAG_COLUMNS))
    merged: dict[tuple, np.ndarray] = {}
    for _, row in rows.iterrows():
        outcomes = per_input_outcomes(row)
        if outcomes is None:
            continue
        broken, _, correct = outcomes
        flags = broken | ~correct
        seed = row["seed"] if "seed" in row.index and pd.notna(row["seed"]) else 0
        key = (row["dataset"], int(seed), row["model"], float(row["eps"]))
        if key in merged and merged[key].shape != flags.shape:
            continue  # another n: not the same inputs
        merged[key] = merged[key] | flags if key in merged else flags
    out = [
        {"dataset": d, "seed": s, "model": m, "eps": e, "input": i, "broken": bool(b)}
        for (d, s, m, e), flags in merged.items()
        for i, b in enumerate(flags)
    ]
    return pd.DataFrame(out, columns=list(FLAG_COLUMNS))


def seed_robustness(results_dir: Path) -> pd.DataFrame:
    """The robustness records of the extra seeds' results folders (results/seeds/seed-K/), where
    experiments/seeds.sh repeats the headline models with other seeds."""
    frames = [
        read_records(folder, "robustness", per_input=True)
        for folder in sorted((results_dir / SEEDS_DIR).glob("seed-*"))
        if (folder / RECORDS_DIR / "robustness").is_dir()
    ]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (the same order as given)."""
    order = np.argsort(p_values)
    adjusted = np.empty(len(p_values))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


SMALL_BUDGET_PAIRS = (  # (a, b): a minus b; what each comparison separates
    ("student-T100", "teacher-T1", "defensive distillation against the undefended network"),
    ("student-T1", "teacher-T1", "distillation itself, without temperature"),
    ("student-T100", "student-T1", "temperature, distillation held fixed"),
    ("teacher-T100", "teacher-T1", "training at T=100 without a student"),
)
OUTCOME_COLUMNS = ("dataset", "seed", "model", "eps", "attack", "n", "broken", "correct")


def attack_outcomes(robustness: pd.DataFrame) -> pd.DataFrame:
    """One row per bounded attack record with per-input results: dataset, seed, model, eps, attack,
    n, and the per-input arrays `broken` (an adversarial example was found for a correctly
    classified input) and `correct` (the clean input was classified correctly)."""
    if robustness.empty or PER_INPUT not in robustness.columns:
        return pd.DataFrame(columns=list(OUTCOME_COLUMNS))
    rows = robustness[robustness["eps"].notna()]
    out = []
    for _, row in rows.iterrows():
        outcomes = per_input_outcomes(row)
        if outcomes is None:
            continue
        broken, _, correct = outcomes
        seed = row["seed"] if "seed" in row.index and pd.notna(row["seed"]) else 0
        out.append({"dataset": row["dataset"], "seed": int(seed), "model": row["model"],
                    "eps": float(row["eps"]), "attack": row["attack"], "n": int(broken.size),
                    "broken": broken & correct, "correct": correct})  # fmt: skip
    return pd.DataFrame(out, columns=list(OUTCOME_COLUMNS))


def _union(rows: pd.DataFrame, attacks: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(broken by any of `attacks`, clean-correct) of one model, seed and budget."""
    chosen = rows[rows["attack"].isin(attacks)]
    broken = np.logical_or.reduce(list(chosen["broken"]))
    return broken, chosen["correct"].iloc[0]


def compare_pair(
    outcomes: pd.DataFrame, a: str, b: str, dataset: str, eps: float, n_boot: int = 10_000
) -> dict | None:
    """Model a against model b at one budget, over seeds, on the same inputs and the same attacks.

    The attacks are those both models faced in every seed that takes part (the intersection of
    their lists); a seed whose intersection lacks the standard list (evaluate/worst_case.py,
    `lacks_standard`) is left out, and with no seed left the comparison is refused (`refused`
    says why). Within a seed, "broken" is counted among the inputs both models classify
    correctly, so a difference in clean accuracy (reported beside it) is not counted as one in
    robustness. Seeds are the unit: the interval is a t-interval over the per-seed differences
    and a bootstrap that resamples seeds and, clustered across seeds, inputs; McNemar's exact
    test is per seed only. None when either model has no record at this budget.
    """
    from .core.stats import cluster_bootstrap_ci, mcnemar_exact, paired_t_test, t_interval
    from .evaluate.worst_case import attack_list, lacks_standard

    at = outcomes[(outcomes["dataset"] == dataset) & np.isclose(outcomes["eps"], eps)]
    left, right = at[at["model"] == a], at[at["model"] == b]
    if left.empty or right.empty:
        return None
    seeds, dropped = [], []
    lists: dict[int, set[str]] = {}
    for seed in sorted(set(left["seed"]) & set(right["seed"])):
        la, lb = left[left["seed"] == seed], right[right["seed"] == seed]
        if la["n"].nunique() != 1 or lb["n"].nunique() != 1 or la["n"].iloc[0] != lb["n"].iloc[0]:
            dropped.append(f"seed {seed}: the two models were attacked on different inputs")
            continue
        common = set(la["attack"]) & set(lb["attack"])
        missing = lacks_standard(common)
        if missing:
            dropped.append(f"seed {seed}: the attacks both faced lack {', '.join(missing)}")
            continue
        seeds.append(seed)
        lists[seed] = common
    row: dict = {"dataset": dataset, "eps": float(eps), "a": a, "b": b}
    if not seeds:
        reasons = dropped or [f"{a} and {b} share no seed at this budget"]
        return row | {"seeds": 0, "refused": "; ".join(reasons)}
    attacks = sorted(set.intersection(*lists.values()))
    diffs, clean_a, clean_b, rate_a, rate_b, p_seed, inputs = [], [], [], [], [], [], []
    d_rows, v_rows = [], []
    a_higher = b_higher = only_a_total = only_b_total = 0
    for seed in seeds:
        ba, ca = _union(left[left["seed"] == seed], attacks)
        bb, cb = _union(right[right["seed"] == seed], attacks)
        both = ca & cb
        k = int(both.sum())
        ra, rb = float(ba[both].mean()) if k else math.nan, float(bb[both].mean()) if k else math.nan
        only_a, only_b = int((ba & ~bb & both).sum()), int((bb & ~ba & both).sum())
        diffs.append(ra - rb)
        rate_a.append(ra)
        rate_b.append(rb)
        inputs.append(k)
        clean_a.append(float(ca.mean()))
        clean_b.append(float(cb.mean()))
        p_seed.append(mcnemar_exact(only_a, only_b))
        only_a_total, only_b_total = only_a_total + only_a, only_b_total + only_b
        a_higher, b_higher = a_higher + int(ra > rb), b_higher + int(ra < rb)
        d_rows.append(ba.astype(float) - bb.astype(float))
        v_rows.append(both)
    t_lo, t_hi = t_interval(diffs)
    boot_lo, boot_hi = cluster_bootstrap_ci(np.vstack(d_rows), np.vstack(v_rows), n_boot=n_boot)
    _, p_t = paired_t_test(diffs)
    return row | {
        "seeds": len(seeds), "seed_list": ",".join(str(s) for s in seeds), "attacks": attack_list(attacks),
        "inputs": float(np.mean(inputs)), a: float(np.mean(rate_a)), b: float(np.mean(rate_b)),
        "difference": float(np.mean(diffs)), "per_seed": ", ".join(f"{d:+.3f}" for d in diffs),
        "t_low": t_lo, "t_high": t_hi, "boot_low": boot_lo, "boot_high": boot_hi, "p_t": p_t,
        "seeds_a_higher": a_higher, "seeds_b_higher": b_higher, "only_a": only_a_total,
        "only_b": only_b_total, "p_mcnemar_per_seed": ", ".join(_p(p) for p in p_seed),
        "clean_a": float(np.mean(clean_a)), "clean_b": float(np.mean(clean_b)),
        "clean_difference": float(np.mean(clean_a) - np.mean(clean_b)),
        "dropped": "; ".join(dropped), "refused": "",
    }  # fmt: skip


def small_budget_comparison(
    outcomes: pd.DataFrame, pairs: Sequence[tuple[str, str, str]] = SMALL_BUDGET_PAIRS, n_boot: int = 10_000
) -> pd.DataFrame:
    """Every pair of `pairs` at every budget where both models have records (`compare_pair`);
    the paired t-test's p-values are Holm-adjusted over the comparisons of a dataset."""
    rows = []
    for dataset in sorted(set(outcomes["dataset"])):
        for a, b, _ in pairs:
            mine = (outcomes["dataset"] == dataset) & (outcomes["model"] == a)
            budgets = sorted(set(outcomes.loc[mine, "eps"]))
            for eps in budgets:
                result = compare_pair(outcomes, a, b, dataset, eps, n_boot)
                if result is not None:
                    rows.append(result)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_t_holm"] = math.nan
    for _, group in table.groupby("dataset", sort=False):
        tested = group[group["p_t"].notna()] if "p_t" in group else group.iloc[0:0]
        if len(tested):
            table.loc[tested.index, "p_t_holm"] = holm(tested["p_t"].tolist())
    return table


def _p(p: float) -> str:
    if isinstance(p, float) and math.isnan(p):
        return "n/a"
    return "< 0.0001" if p < 1e-4 else f"{p:.2g}" if p < 0.01 else f"{p:.3f}".rstrip("0").rstrip(".")


def small_budget_outcome(r: dict) -> str:
    """What one comparison over seeds establishes: "one seed"; "established" where the t-interval
    over seeds excludes 0 and the Holm-adjusted paired t-test is below SIGNIFICANCE; "interval"
    where only the interval excludes 0; else "none"."""
    if int(r["seeds"]) < 2:
        return "one seed"
    if r["t_low"] > 0 or r["t_high"] < 0:
        return "established" if r["p_t_holm"] < SIGNIFICANCE else "interval"
    return "none"


def small_budget_verdict(r: dict) -> str:
    """`small_budget_outcome` in words, as REPORT.md's sentences say it."""
    a, b = r["a"], r["b"]
    return {
        "one seed": f"one seed cannot separate {a} from {b}: a seed-to-seed difference is not measured",
        "established": f"{a} is broken {'more' if r['difference'] > 0 else 'less'} often than {b} over seeds",
        "interval": f"the t-interval excludes 0; the Holm-adjusted test does not reach {SIGNIFICANCE:g}",
        "none": f"no difference between {a} and {b} is established over these seeds",
    }[small_budget_outcome(r)]


def small_budget_sentence(r: dict) -> str:
    """One comparison in words: which way it came out over seeds, and how surely."""
    norm = "L2 " if r.get("norm") == "l2" else ""
    a, b, head = r["a"], r["b"], f"{r['dataset']}, {norm}eps {r['eps']:g}, {r['a']} against {r['b']}"
    if r.get("refused"):
        return f"- {head}: not compared ({r['refused']})."
    seeds = int(r["seeds"])
    count = len(r["attacks"].split("+"))
    text = (
        f"- {head} ({seeds} seed{'s' if seeds != 1 else ''}: {r['seed_list']}; the {count} attacks both "
        f"faced, {r['attacks']}): among the {r['inputs']:.0f} inputs both classify correctly (mean over "
        f"seeds), {a} is broken on {r[a]:.3f} and {b} on {r[b]:.3f}; difference {r['difference']:+.3f} "
        f"(per seed {r['per_seed']})"
    )
    if seeds >= 2:
        text += (
            f", 95% t-interval over seeds {r['t_low']:+.3f} to {r['t_high']:+.3f}, cluster bootstrap over "
            f"seeds and inputs {r['boot_low']:+.3f} to {r['boot_high']:+.3f}; paired t-test p = "
            f"{_p(r['p_t'])} (Holm-adjusted {_p(r['p_t_holm'])})"
        )
    else:
        text += (
            f"; one seed, so no interval over seeds (a bootstrap over its inputs alone: {r['boot_low']:+.3f} "
            f"to {r['boot_high']:+.3f})"
        )
    verdict = small_budget_verdict(r)
    text += (
        f". McNemar per seed p = {r['p_mcnemar_per_seed']}. {verdict[0].upper()}{verdict[1:]}; {a} higher "
        f"in {int(r['seeds_a_higher'])} of {seeds} seeds. Clean accuracy {r['clean_a']:.3f} against "
        f"{r['clean_b']:.3f} ({r['clean_difference']:+.3f})."
    )
    if r.get("dropped"):
        text += f" Left out: {r['dropped']}."
    return text


def small_budget_sentences(table: pd.DataFrame) -> list[str]:
    return [small_budget_sentence(r) for r in table.to_dict("records")]


SMALL_BUDGET_TABLE = (  # the columns REPORT.md shows
    "dataset", "eps", "a", "b", "seeds", "inputs", "rate_a", "rate_b", "difference", "t_low", "t_high",
    "boot_low", "boot_high", "p_t_holm", "seeds_a_higher", "clean_difference", "attacks",
)  # fmt: skip


def small_budget_markdown(table: pd.DataFrame) -> str:
    """The compared rows as one table (refused comparisons are in the sentences only)."""
    shown = table[table["refused"] == ""].copy() if "refused" in table else table.iloc[0:0]
    if shown.empty:
        return ""
    shown["rate_a"] = [r[r["a"]] for _, r in shown.iterrows()]
    shown["rate_b"] = [r[r["b"]] for _, r in shown.iterrows()]
    shown["attacks"] = [len(x.split("+")) for x in shown["attacks"]]
    return to_markdown(shown[list(SMALL_BUDGET_TABLE)].rename(columns={"attacks": "n_attacks"}))


def small_budget_section(
    outcomes: pd.DataFrame, pairs: Sequence[tuple[str, str, str]] = SMALL_BUDGET_PAIRS, n_boot: int = 10_000
) -> list[str]:
    """REPORT.md's paired comparisons (student-T100, student-T1, teacher-T100 against teacher-T1, and
    student-T100 against student-T1) at every budget, over seeds."""
    lines = [
        "## Small budgets: input by input, over seeds",
        "",
        "Each comparison sets model a against model b on the same inputs and the same attacks: the per-input "
        "worst case is recomputed from the per-input records over the attacks both models faced (the "
        "intersection of their lists), and a comparison whose shared list lacks the standard attacks (fgsm, "
        "pgd, apgd-ce, apgd-dlr, noise and a targeted attack: apgd-t, pgd-t or autoattack) is refused, with "
        "the reason. Broken: the worst case changed the answer on an input both models classify correctly; "
        "the clean-accuracy difference stands beside it. Seeds are the unit of replication: each seed trains "
        "its own networks (experiments/seeds.sh; seed 0 is the committed sweep), the interval is a 95% "
        "t-interval over the per-seed differences (and a bootstrap resampling seeds and, clustered across "
        "seeds, inputs), and McNemar's exact test is given per seed, never pooled over seeds that share "
        "inputs. "
        "What each pair separates: " + "; ".join(f"{a} against {b}, {what}" for a, b, what in pairs) + ".",
        "",
    ]
    table = small_budget_comparison(outcomes, pairs, n_boot) if not outcomes.empty else pd.DataFrame()
    if table.empty:
        return lines + [
            "Not measured: the records hold no per-input outcomes of two of these models at one budget.",
            "",
        ]
    markdown = small_budget_markdown(table)
    return lines + small_budget_sentences(table) + ([""] + [markdown] if markdown else []) + [""]


SEED_MODELS = ("teacher-T1", "student-T1", "teacher-T100", "student-T100")


L2_DIR = "l2"  # results/l2/: the L2 threat model's rows, kept apart from the L-inf sweep's
L2_ATTACKS = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "square", "noise")


def l2_table(results_dir: Path) -> pd.DataFrame:
    """Per dataset and model of results_dir/l2: clean accuracy, each L2 attack's success at the
    dataset's L2 budget, CW's median distance, and the per-input worst case with its attack list."""
    from .data.registry import DATASETS

    folder = results_dir / L2_DIR
    rows = read_records(folder, "robustness")
    worst = read_records(folder, "worst_case")
    if rows.empty:
        return pd.DataFrame()
    out = []
    for (dataset, model), group in rows[rows["norm"] == "l2"].groupby(["dataset", "model"], sort=False):
        budget = DATASETS[dataset].l2_eps if dataset in DATASETS else math.nan
        at = group[np.isclose(group["eps"].astype(float).fillna(-1), budget)]
        if at.empty:
            continue
        entry: dict = {"dataset": dataset, "model": model, "l2_eps": budget, "n": int(at["n"].iloc[0]),
                       "clean_acc": float(at["clean_acc"].iloc[0])}  # fmt: skip
        for attack in L2_ATTACKS:
            hit = at[at["attack"] == attack]
            entry[attack] = float(hit["success_rate"].iloc[0]) if len(hit) else math.nan
        cw = group[(group["attack"] == "cw") & group["eps"].isna()]
        entry["cw_median_l2"] = float(cw["median_dist"].iloc[0]) if len(cw) else math.nan
        w = worst[(worst["dataset"] == dataset) & (worst["model"] == model) & (worst["norm"] == "l2")]
        w = w[np.isclose(w["eps"].astype(float), budget)] if not w.empty else w
        entry["worst_robust_acc"] = float(w["ensemble_robust_acc"].iloc[0]) if len(w) else math.nan
        attacks = w["attacks"].iloc[0] if len(w) and "attacks" in w.columns else None
        entry["attacks"] = attacks if isinstance(attacks, str) else ""
        out.append(entry)
    return pd.DataFrame(out)


def l2_comparisons(results_dir: Path, n_boot: int = 10_000) -> pd.DataFrame:
    """The small-budget pairs under the L2 threat model (results_dir/l2), on the same attacks."""
    folder = results_dir / L2_DIR
    rows = read_records(folder, "robustness", per_input=True)
    if rows.empty:
        return pd.DataFrame()
    table = small_budget_comparison(attack_outcomes(rows[rows["norm"] == "l2"]), n_boot=n_boot)
    return table.assign(norm="l2") if not table.empty else table


def l2_section(results_dir: Path) -> list[str]:
    """REPORT.md's L2 threat model, when results_dir/l2 holds rows."""
    table = l2_table(results_dir)
    if table.empty:
        return []
    lines = [
        "## L2 threat model ([l2/robustness.md](l2/robustness.md))",
        "",
        "The same networks (seed 0) under an L2 budget: 2.0 on MNIST, the customary L2 budget there, and on "
        "other images the same root-mean-square change per pixel, 2.0 / sqrt(784), times sqrt(pixels): 0.57 "
        "on 8x8 digits (DatasetSpec.l2_eps). Attacks: FGSM and PGD (L2), APGD-CE, APGD-DLR and APGD-T (L2), "
        "Square (L2, 5,000 queries), noise on the L2 sphere, and CW's minimal L2 distances, which enter the "
        "worst case within the budget. Success is over the correctly classified inputs; `worst_robust_acc` "
        "is the per-input worst case over `attacks`.",
        "",
        to_markdown(table),
        "",
    ]
    comparisons = l2_comparisons(results_dir)
    if not comparisons.empty:
        lines += small_budget_sentences(comparisons) + [""]
    return lines


def seed_robust_accuracy(robustness: pd.DataFrame, models: Sequence[str] = SEED_MODELS) -> pd.DataFrame:
    """Per dataset, model and eps: the per-input worst-case robust accuracy over the attacks that
    every seed ran on that model (so that the seeds are comparable), as mean and sd over the seeds."""
    if robustness.empty or "seed" not in robustness.columns:
        return pd.DataFrame()
    rows = robustness[robustness["model"].isin(models) & robustness["eps"].notna()]
    rows = rows.assign(seed=rows["seed"].fillna(0).astype(int))
    out = []
    for (dataset, model, eps), group in rows.groupby(["dataset", "model", "eps"]):
        per_seed = group.groupby("seed")["attack"].agg(set)
        if len(per_seed) < 2:
            continue
        common = sorted(set.intersection(*per_seed))
        flags = per_input_worst_case(group[group["attack"].isin(common)])
        robust = 1 - flags.groupby("seed")["broken"].mean()
        if len(robust) != len(per_seed):
            continue
        out.append({
            "dataset": dataset, "model": model, "eps": float(eps), "seeds": len(robust),
            "robust_acc_mean": float(robust.mean()), "robust_acc_sd": float(robust.std()),
            "attacks": "+".join(common),
        })  # fmt: skip
    return pd.DataFrame(out)


def seeds_section(robustness: pd.DataFrame, datasets: Sequence[str]) -> list[str]:
    """REPORT.md's headline over seeds: worst-case robust accuracy, mean and sd."""
    table = seed_robust_accuracy(robustness)
    if table.empty:
        return []
    table = table[table["dataset"].isin(datasets)]
    return [
        "## Over seeds: worst-case robust accuracy, mean and sd",
        "",
        "Each seed trains its own networks (experiments/seeds.sh; seed 0 is the committed sweep); an input "
        "counts as robust only if no attack in `attacks` (those every seed ran on that model) broke it, so "
        "two rows are comparable only where their `attacks` agree.",
        "",
        to_markdown(table),
    ]


# --- privacy over seeds -----------------------------------------------------------------------

PRIVACY_SEEDS_DIR = "privacy-seeds"  # experiments/privacy_sweep.sh: seed S > 0 in privacy-seeds/seed<S>/
PRIVACY_TEACHER = "privacy-teacher"
PRIVACY_CONTROL = "privacy-control"
SEED_METRICS = (  # (attack, column, heading)
    ("lira", "auc", "LiRA AUC"),
    ("lira", "tpr_at_1pct_fpr", "LiRA TPR@1%FPR"),
    ("loss", "auc", "loss AUC"),
    ("loss", "advantage", "loss advantage"),
)


def read_privacy_seeds(results_dir: Path) -> pd.DataFrame:
    """Privacy rows of every seed: results_dir's own and those under privacy-seeds/*/ (one row per
    dataset, seed, model and attack; the last folder read wins a duplicate)."""
    frames = [read_records(results_dir, "privacy")]
    seeds_dir = results_dir / PRIVACY_SEEDS_DIR
    if seeds_dir.is_dir():
        frames += [read_records(d, "privacy") for d in sorted(seeds_dir.iterdir()) if d.is_dir()]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return read_records(results_dir, "privacy")
    rows = pd.concat(frames, ignore_index=True)
    if "seed" not in rows.columns:
        rows["seed"] = 0
    rows["seed"] = rows["seed"].fillna(0).astype(int)
    return rows.drop_duplicates(["dataset", "seed", "model", "attack"], keep="last").reset_index(drop=True)


def _metric(rows: pd.DataFrame, attack: str, column: str) -> pd.DataFrame:
    """model x seed table of one metric."""
    chosen = rows[rows["attack"] == attack]
    return chosen.pivot_table(index="model", columns="seed", values=column, aggfunc="first")


def _mean_sd(values: pd.Series, fmt: str = ".3f") -> str:
    values = values.dropna()
    if values.empty:
        return ""
    if len(values) == 1:
        return format(float(values.iloc[0]), fmt)
    return f"{values.mean():{fmt}} ± {values.std(ddof=1):{fmt}}"


def privacy_model_order(rows: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(_order_privacy(rows.drop_duplicates("model"))["model"]))


def privacy_seeds_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model: the seeds, and mean ± sd over them of the headline metrics and test accuracy."""
    out = []
    accuracy = rows.pivot_table(index="model", columns="seed", values="test_acc", aggfunc="first")
    for model in privacy_model_order(rows):
        entry = {"model": model, "seeds": int(rows.loc[rows["model"] == model, "seed"].nunique())}
        for attack, column, heading in SEED_METRICS:
            table = _metric(rows, attack, column)
            entry[heading] = _mean_sd(table.loc[model]) if model in table.index else ""
        entry["test acc"] = _mean_sd(accuracy.loc[model])
        out.append(entry)
    return pd.DataFrame(out)


def privacy_differences(rows: pd.DataFrame, attack: str, column: str, reference: str) -> dict:
    """model -> `Differences` of its metric minus `reference`'s, seed by seed (the seeds both have)."""
    from .core.stats import describe_differences

    table = _metric(rows, attack, column)
    if reference not in table.index:
        return {}
    out = {}
    for model in privacy_model_order(rows):
        if model == reference or model not in table.index:
            continue
        diffs = (table.loc[model] - table.loc[reference]).dropna()
        if not diffs.empty:
            out[model] = describe_differences(diffs.to_numpy())
    return out


def privacy_paired(rows: pd.DataFrame, attack: str, column: str, reference: str) -> pd.DataFrame:
    """Each model's metric minus `reference`'s, seed by seed: the differences, mean ± sd, and the
    paired t-test and sign test over seeds (pairs share the split, the seed and the shadows)."""
    return pd.DataFrame(
        [
            {"model": model, "minus": reference, "metric": f"{attack} {column}", "seeds": d.n,
             "per seed": ", ".join(f"{v:+.3f}" for v in d.values), "mean": d.mean, "sd": d.sd,
             "t-test p": d.t_p_value, "sign test p": d.sign_p_value}
            for model, d in privacy_differences(rows, attack, column, reference).items()
        ]
    )  # fmt: skip


def privacy_paired_section(rows: pd.DataFrame) -> list[str]:
    """Over-seed tables of one dataset: mean ± sd per model, and paired differences to the teacher
    (and to the control, when it was run)."""
    seeds = sorted(rows["seed"].unique())
    lines = [
        f"#### Over seeds ({', '.join(str(s) for s in seeds)})",
        "",
        "Mean ± sd over seeds, then each model's AUC minus the teacher's (and the control's) seed by seed: "
        "the pairs share the split and the shadow models, so the paired differences, not one model's "
        "spread, say whether two models differ. With 3 seeds a sign test cannot go below p = 0.25.",
        "",
        to_markdown(privacy_seeds_table(rows)),
    ]
    references = [r for r in (PRIVACY_TEACHER, PRIVACY_CONTROL) if (rows["model"] == r).any()]
    for reference in references:
        paired = pd.concat(
            [privacy_paired(rows, attack, "auc", reference) for attack in ("lira", "loss")], ignore_index=True
        )
        if reference == PRIVACY_CONTROL:
            paired = paired[paired["model"] != PRIVACY_TEACHER]
        if not paired.empty:
            lines += ["", to_markdown(paired)]
    return lines
