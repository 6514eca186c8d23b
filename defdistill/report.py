"""`defdistill report`: PNG plots and results/REPORT.md from the tables in results/.

Three figures per dataset, drawn with matplotlib's object API (Agg canvas, no pyplot state):
- the success rate of each attack against the temperature T, for the students distilled at T
  and for the teachers trained at T (Papernot et al. 2016, Figure 5, with FGSM, PGD and
  Carlini-Wagner in place of the paper's JSMA) at one L-inf budget, 0.3 by default: the
  customary MNIST budget (Madry et al. 2018), where the undefended network falls to every
  gradient attack, so any drop with T is the defence's doing, or gradient masking;
- robust accuracy against epsilon, per model, for each attack that takes a budget, with the
  worst case over those attacks first;
- test accuracy of teacher and student, and their gap in percentage points, against T.

Only the runs the sweeps name (`teacher-T<T>`, `student-T<T>`) are plotted; every row is still
in the tables. Every file is written atomically.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .core.fileio import atomic_write_bytes, atomic_write_text
from .errors import DefdistillError
from .store.runs import format_T, run_name
from .store.tables import RECORDS_DIR, ROLE_RANK, read_records, to_markdown

REPORT_FILE = "REPORT.md"
DEFAULT_REPORT_EPS = 0.3
EXTRA_TABLES = ("worst_case", "diagnostics")  # derived tables, embedded when present
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
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _temperature_axis(ax, temperatures: list[float]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(temperatures)
    ax.set_xticklabels([format_T(t) for t in temperatures])
    ax.minorticks_off()
    ax.set_xlabel("temperature T")
    ax.grid(alpha=0.3)


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
    """Attack success rate against T, students and teachers side by side."""
    fig, axes = _figure(2)
    temperatures = sorted(rows["T"].unique())
    for ax, role in zip(axes, ("student", "teacher"), strict=True):
        for attack, group in rows[rows["role"] == role].groupby("attack", sort=False):
            bounded = group["eps"].notna()
            at_eps = group[~bounded | np.isclose(group["eps"].astype(float).fillna(-1), eps)].sort_values("T")
            if at_eps.empty:
                continue
            label = attack if bounded.any() else f"{attack} (unbounded)"
            marker = MARKERS[len(ax.lines) % len(MARKERS)]  # overlapping lines stay distinguishable
            ax.plot(at_eps["T"], at_eps["success_rate"], marker=marker, alpha=0.85, label=label)
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
    axes[1].bar(range(len(gap)), gap["gap_pp"], color="tab:red")
    axes[1].axhline(0, color="black", linewidth=0.8)
    axes[1].set_xticks(range(len(gap)))
    axes[1].set_xticklabels([format_T(t) for t in gap["T"]])
    axes[1].set_xlabel("temperature T")
    axes[1].set_ylabel("teacher - student (percentage points)")
    axes[1].grid(alpha=0.3, axis="y")
    _temperature_axis(axes[0], temperatures)
    for ax, title in zip(axes, ("test accuracy", "accuracy gap"), strict=True):
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
    """Success rate per model (rows) and attack (columns) at `eps`; unbounded attacks as they ran."""
    keep = rows["eps"].isna() | np.isclose(rows["eps"].astype(float).fillna(-1), eps)
    frame = rows[keep]
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
            label = f"{attack}_success" if unbounded else f"{attack}_success@{eps:g}"
            table[label] = table["model"].map(success[attack])
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


def privacy_summary(rows: pd.DataFrame) -> str:
    """Students against the teacher, in words, from one dataset's privacy rows.

    LiRA when recorded (the calibrated attack Carlini et al. 2022 recommend), else the loss
    attack. The null spread is the Mann-Whitney U's: sd(AUC) = sqrt((m + n + 1) / (12 m n)) for
    m members and n non-members scored at random.
    """
    attack = "lira" if (rows["attack"] == "lira").any() else "loss"
    chosen = rows[rows["attack"] == attack]
    teachers = chosen[chosen["role"] == "teacher"]
    students = chosen[chosen["role"] == "student"]
    if teachers.empty or students.empty:
        return f"No teacher and student pair recorded under the {attack} attack to compare."
    teacher = teachers.iloc[0]
    name = "LiRA" if attack == "lira" else "the loss attack"
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
    if "seed" in rows.columns and rows["seed"].nunique() == 1:
        text.append(
            f"One run (seed {int(rows['seed'].iloc[0])}): repeat with other seeds before trusting small gaps."
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
        lines += [f"### Privacy on {dataset}", "", privacy_summary(rows), ""]
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
    return lines


def _extra_table(results_dir: Path, name: str) -> str | None:
    path = results_dir / f"{name}.md"
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    body = [line for line in lines if not line.startswith("# ")]
    return "\n".join(body).strip() + "\n"


def write_report(
    results_dir: str | Path = "results", eps: float = DEFAULT_REPORT_EPS, datasets: list[str] | None = None
) -> ReportResult:
    """Plot every dataset in results_dir's records and write REPORT.md beside the plots."""
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and 0 < eps <= 1):
        raise DefdistillError(f"--eps must lie in (0, 1], got {eps}")
    results_dir = Path(results_dir)
    if not (results_dir / RECORDS_DIR).is_dir():
        raise DefdistillError(
            f"no results in {results_dir}: "
            "run experiments/temperature_sweep.sh digits (or defdistill demo) first"
        )
    all_robustness = read_records(results_dir, "robustness")
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
    from .evaluate.attacks import ATTACKS

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
        rows = robustness[robustness["dataset"] == dataset]
        gap = gaps[gaps["dataset"] == dataset] if not gaps.empty else gaps
        lines += [f"## {dataset}", ""]
        if not rows.empty:
            chosen = choose_eps(rows, eps)
            if chosen is None:
                chosen = eps
            elif not math.isclose(chosen, eps):
                notes.append(
                    f"{dataset}: no rows at eps {eps:g}; success against T is plotted at eps {chosen:g}"
                )
            path = plot_success_vs_T(rows, dataset, chosen, results_dir / f"success_vs_T_{dataset}.png")
            plots.append(path)
            lines += [
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
        if not gap.empty:
            path = plot_accuracy_gap(gap, dataset, results_dir / f"accuracy_gap_{dataset}.png")
            plots.append(path)
            shown = (
                gap[["T", "teacher", "teacher_acc", "student", "student_acc", "gap_pp"]]
                .sort_values("T")
                .copy()
            )
            shown["T"] = [format_T(t) for t in shown["T"]]
            lines += [
                "### Accuracy gap",
                "",
                f"![accuracy gap against T, {dataset}]({path.name})",
                "",
                to_markdown(shown),
            ]
        compression = read_records(results_dir, "compression")
        variants = variants_table(
            all_robustness, all_gaps, compression, dataset, choose_eps(all_robustness, eps) or eps
        )
        if variants is not None:
            lines += [
                "### Distillation variants (experiments/variants.sh)",
                "",
                "Every student at the temperatures the variants were trained at: method, size, accuracy, "
                "and attack success (a success rate without a budget is the unbounded attack's). "
                "Low FGSM/PGD success beside high CW success is the gradient masking of distillation, "
                "not robustness. Sizes and CPU latency from [compression.md](compression.md).",
                "",
                to_markdown(variants),
            ]
    if privacy_found:
        lines += privacy_section(privacy, privacy_found, results_dir, plots, notes)
    for name in EXTRA_TABLES:
        text = _extra_table(results_dir, name)
        if text is not None:
            lines += [f"## {name.replace('_', ' ').capitalize()} ([{name}.md]({name}.md))", "", text]
    report = results_dir / REPORT_FILE
    atomic_write_text(report, "\n".join(lines).rstrip() + "\n")
    return ReportResult(report, plots, notes)
