"""Every number README.md, REPRODUCTION.md and docs/*.md quote from a table is written there from the table.

A document holds generated blocks:

    <!-- begin generated: NAME results=results dataset=digits (any note) -->
    ...
    <!-- end generated: NAME -->

`results` is the results folder, relative to the document. `defdistill report` rewrites every
block of those documents that names the folder it reports on (`update_docs`);
tests/test_claims.py regenerates each block from the committed tables and fails when the
document's text differs (`stale_blocks`). The prose around the blocks quotes no measured
number, so a claim can only change with the table it comes from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.fileio import atomic_write_text
from ..core.stats import Differences
from ..data.registry import get_dataset_spec
from ..errors import DefdistillError
from ..store.runs import SURROGATE_NAME, format_T, run_name
from ..store.tables import read_records, to_markdown

BLOCK = re.compile(
    r"(?P<begin><!-- begin generated: (?P<name>[\w-]+)(?P<params>(?: \w+=\S+)*)(?: \([^)]*\))? -->\n)"
    r"(?P<body>.*?)"
    r"(?P<end><!-- end generated: (?P=name) -->)",
    re.S,
)
UNDEFENDED = run_name("teacher", 1)
DEFENDED_T = 100.0
DEFENDED = run_name("student", DEFENDED_T)


def headline_eps(dataset: str) -> float:
    """The dataset's headline budget (DatasetSpec.headline_eps): one at which random noise fools
    the undefended network on under 10% of inputs (digits 0.1; MNIST 0.3, the customary budget)."""
    return get_dataset_spec(dataset).headline_eps


# --- reading the tables ------------------------------------------------------------------------


class _Tables:
    """The committed tables of one results folder and dataset, read once."""

    def __init__(self, results_dir: Path, dataset: str):
        self.results_dir, self.dataset = results_dir, dataset
        robustness = read_records(results_dir, "robustness")
        self.robustness = robustness[robustness["dataset"] == dataset]
        gaps = read_records(results_dir, "accuracy_gap")
        self.gaps = gaps[gaps["dataset"] == dataset]

    def success(self, model: str, attack: str, eps: float | None) -> float:
        rows = self.robustness[(self.robustness["model"] == model) & (self.robustness["attack"] == attack)]
        if eps is None:
            rows = rows[rows["eps"].isna()]
        else:
            rows = rows[np.isclose(rows["eps"].astype(float).fillna(-1), eps)]
        return float(rows["success_rate"].iloc[0]) if len(rows) else math.nan

    def median_dist(self, model: str, attack: str) -> float:
        rows = self.robustness[
            (self.robustness["model"] == model)
            & (self.robustness["attack"] == attack)
            & self.robustness["eps"].isna()
        ]
        return float(rows["median_dist"].iloc[0]) if len(rows) else math.nan

    def gap_row(self, student: str) -> pd.Series | None:
        rows = self.gaps[self.gaps["student"] == student]
        return rows.iloc[0] if len(rows) else None

    def accuracy(self, model: str) -> float:
        """Test accuracy of a run, from the accuracy_gap rows (as student, else as teacher)."""
        row = self.gap_row(model)
        if row is not None:
            return float(row["student_acc"])
        taught = self.gaps[self.gaps["teacher"] == model]
        if len(taught):
            return float(taught["teacher_acc"].iloc[0])
        baseline = self.gaps[self.gaps["baseline"] == model] if "baseline" in self.gaps else taught
        return float(baseline["baseline_acc"].iloc[0]) if len(baseline) else math.nan

    def sweep_students(self) -> pd.DataFrame:
        named = [
            s == run_name("student", t) for s, t in zip(self.gaps["student"], self.gaps["T"], strict=True)
        ]
        return self.gaps[np.asarray(named, dtype=bool)].sort_values("T")


def _pct(value: float) -> str:
    """A success rate as the paper writes it: 99.7%, 100%, 1.4%."""
    if math.isnan(value):
        return "not measured"
    text = f"{100 * value:.1f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _pct_span(values: pd.Series) -> str:
    lo, hi = _pct(float(values.min())), _pct(float(values.max()))
    return lo if lo == hi else f"{lo} to {hi}"


def _f(value: float, fmt: str = ".3f") -> str:
    return (
        "not measured"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, fmt)
    )


def _below(pp: float) -> str:
    """An accuracy difference in words: "0.42 pp below", "0.02 pp above", "as accurate as"."""
    if round(pp, 2) == 0:
        return "as accurate as"
    return f"{abs(pp):.2f} pp {'below' if pp > 0 else 'above'}"


def _amount(value: float) -> str:
    """A positive quantity to three significant figures, without an exponent: 33.8, 1,935."""
    return _f(value, ",.0f" if value >= 100 else ".3g")


def _need(tables: _Tables, what: str) -> None:
    if tables.robustness.empty and tables.gaps.empty:
        raise DefdistillError(f"no {tables.dataset} rows in {tables.results_dir} for the block {what}")


# --- README.md -----------------------------------------------------------------------------------


def _diagnosis_words(results_dir: Path, dataset: str) -> dict[str, str]:
    from ..report import diagnosis_summary, read_diagnostics

    diagnostics = read_diagnostics(results_dir)
    diagnostics = diagnostics[diagnostics["dataset"] == dataset]
    if diagnostics.empty:
        return {}
    return {
        r.model: f"{r.verdict} ({r.failed} of {r.checks} checks fail)"
        for r in diagnosis_summary(diagnostics).itertuples(index=False)
    }


def measured_figures(results_dir: Path, dataset: str = "digits") -> str:
    """README's headline: accuracy, the cost of the defence, and the attacks on three models."""
    t = _Tables(results_dir, dataset)
    _need(t, "measured-figures")
    teacher_T = run_name("teacher", DEFENDED_T)
    row = t.gap_row(DEFENDED)
    lines = []
    if row is not None:
        cost = (
            f"and {row['cost_pp']:.2f} pp below the undefended {row['baseline']} (`cost_pp`, the comparison "
            "Papernot et al. make)"
            if pd.notna(row.get("cost_pp"))
            else "(its cost against teacher-T1 is not recorded: run `defdistill report --runs-dir runs`)"
        )
        lines.append(
            f"Test accuracy (`results/accuracy_gap.csv`): {UNDEFENDED} {_f(t.accuracy(UNDEFENDED), '.4f')}, "
            f"{teacher_T} {_f(t.accuracy(teacher_T), '.4f')}, {DEFENDED} {_f(t.accuracy(DEFENDED), '.4f')}. "
            f"The student is {_below(float(row['gap_pp']))} its T={format_T(DEFENDED_T)} teacher (`gap_pp`) "
            f"{cost}."
        )
        lines.append("")
    diagnosis = _diagnosis_words(results_dir, dataset)
    eps = headline_eps(dataset)
    header = (
        f"| model | FGSM eps {eps:g} | PGD eps {eps:g} | PGD-margin eps {eps:g} | "
        "CW (L2, no budget): success, median L2 | diagnosis |"
    )
    lines += [header, "| --- | --- | --- | --- | --- | --- |"]
    for model in (UNDEFENDED, teacher_T, DEFENDED):
        lines.append(
            f"| {model} | {_f(t.success(model, 'fgsm', eps))} | {_f(t.success(model, 'pgd', eps))} | "
            f"{_f(t.success(model, 'pgd-margin', eps))} | {_f(t.success(model, 'cw', None))}, "
            f"{_f(t.median_dist(model, 'cw'))} | "
            f"{diagnosis.get(model, 'not in results/diagnostics.csv (run `defdistill diagnose`)')} |"
        )
    lines += [
        "",
        f"At eps {eps:g}, distillation at T={format_T(DEFENDED_T)} moves FGSM success from "
        f"{_f(t.success(UNDEFENDED, 'fgsm', eps))} ({UNDEFENDED}) to {_f(t.success(DEFENDED, 'fgsm', eps))} "
        f"({DEFENDED}), and PGD's from {_f(t.success(UNDEFENDED, 'pgd', eps))} to "
        f"{_f(t.success(DEFENDED, 'pgd', eps))}; PGD on the margin of the logits still succeeds on "
        f"{_f(t.success(DEFENDED, 'pgd-margin', eps))} of the student's correctly classified inputs, and CW "
        f"finds an adversarial example for {_f(t.success(DEFENDED, 'cw', None))} of them at a median L2 of "
        f"{_f(t.median_dist(DEFENDED, 'cw'))} ({_f(t.median_dist(UNDEFENDED, 'cw'))} for {UNDEFENDED}).",
    ]
    return "\n".join(lines)


def _privacy_rows(results_dir: Path, dataset: str) -> pd.DataFrame:
    from ..report import read_privacy_seeds

    rows = read_privacy_seeds(results_dir)
    rows = rows[rows["dataset"] == dataset] if not rows.empty else rows
    if rows.empty:
        raise DefdistillError(f"no {dataset} privacy rows in {results_dir}: run experiments/privacy_sweep.sh")
    return rows


def _cell(rows: pd.DataFrame, model: str, attack: str, column: str) -> float:
    chosen = rows[(rows["model"] == model) & (rows["attack"] == attack)]
    return float(chosen[column].iloc[0]) if len(chosen) else math.nan


def privacy_results(results_dir: Path, dataset: str = "digits") -> str:
    """README's privacy figures: seed 0, mean ± sd over seeds, and paired differences to the teacher."""
    from ..report import PRIVACY_CONTROL, PRIVACY_TEACHER, privacy_model_order, privacy_seeds_table

    rows = _privacy_rows(results_dir, dataset)
    seeds = sorted(rows["seed"].unique())
    first = rows[rows["seed"] == seeds[0]]
    table = ["| model | transfer set | LiRA AUC | LiRA TPR@1%FPR | loss AUC | loss advantage | test acc |"]
    table.append("| --- | --- | --- | --- | --- | --- | --- |")
    for model in privacy_model_order(first):
        transfer = (
            first.loc[first["model"] == model, "transfer_set"].iloc[0] if "transfer_set" in first else ""
        )
        transfer = "-" if model in (PRIVACY_TEACHER, PRIVACY_CONTROL) else transfer
        cells = [
            _f(_cell(first, model, attack, column))
            for attack, column in (
                ("lira", "auc"), ("lira", "tpr_at_1pct_fpr"), ("loss", "auc"), ("loss", "advantage"),
                ("loss", "test_acc"),
            )
        ]  # fmt: skip
        table.append(f"| {model} | {transfer} | " + " | ".join(cells) + " |")
    m = int(first["n_members"].iloc[0])
    n = int(first["n_nonmembers"].iloc[0])
    null_sd = math.sqrt((m + n + 1) / (12.0 * m * n))
    lines = [
        f"Seed {seeds[0]} (`results/privacy.csv`; {m} members, {n} non-members):",
        "",
        *table,
        "",
    ]
    if len(seeds) > 1:
        lines += [
            f"Over seeds {', '.join(str(s) for s in seeds)} (`results/privacy-seeds/`), mean ± sd:",
            "",
            to_markdown(privacy_seeds_table(rows)).rstrip("\n"),
            "",
        ]
    lines.append(
        f"Random scores give AUC 0.5 ± {null_sd:.3f} (one sd) with {m} members and {n} non-members, and "
        f"a TPR at 1% FPR of {math.floor(0.01 * n + 1e-9) / n:.3f} is chance."
    )
    if len(seeds) > 1:
        lines += ["", *_privacy_findings(rows)]
    elif not (rows["model"] == PRIVACY_CONTROL).any():
        lines += ["", "One seed only: no paired comparison."]
    return "\n".join(lines)


def _verdict(d: Differences, what: str, adjusted: float) -> str:
    """A sentence on per-seed differences, whichever way they come out; `adjusted` is the t-test's
    p-value after Holm's correction over the family of comparisons it belongs to."""
    if math.isnan(d.t_p_value):
        test = "too few seeds for a t-test"
    else:
        test = (
            f"paired t-test p = {d.t_p_value:.2g}, Holm-adjusted {adjusted:.2g}; "
            f"sign test p = {d.sign_p_value:.2g}"
        )
    direction = "lower" if d.mean < 0 else "higher"
    sure = not math.isnan(adjusted) and adjusted < 0.05
    judged = (
        f"{direction}, significant at the 5% level" if sure else f"{direction} on average, not significant"
    )
    judged += f" at the 5% level ({test})" if not sure else f" ({test})"
    return (
        f"{what}: {', '.join(f'{v:+.3f}' for v in d.values)} over {d.n} seeds, mean {d.mean:+.3f} ± "
        f"{d.sd:.3f}: {judged}."
    )


def _family(comparisons: list[tuple[str, Differences]]) -> list[str]:
    """Bullets for a family of comparisons, their p-values Holm-adjusted together."""
    from ..report import holm

    raw = [1.0 if math.isnan(d.t_p_value) else d.t_p_value for _, d in comparisons]
    adjusted = holm(raw) if raw else []
    return [f"- {_verdict(d, what, p)}" for (what, d), p in zip(comparisons, adjusted, strict=True)]


def _privacy_findings(rows: pd.DataFrame) -> list[str]:
    """Bullets on the paired per-seed differences: every model against the teacher (LiRA AUC), the
    students' accuracy cost, and every model against the control (loss AUC) when it was run."""
    from ..report import PRIVACY_CONTROL, PRIVACY_TEACHER, privacy_differences

    lines = [
        "Each model against the teacher, seed by seed (a seed's models share the split and the shadows; "
        "p-values Holm-adjusted within each list):",
        "",
    ]
    lines += _family(
        [
            (f"LiRA AUC of {model} minus the teacher", d)
            for model, d in privacy_differences(rows, "lira", "auc", PRIVACY_TEACHER).items()
        ]
    )
    accuracy = rows[rows["attack"] == "loss"].pivot_table(index="model", columns="seed", values="test_acc")
    if PRIVACY_TEACHER in accuracy.index:
        for transfer, prefix in (("public", "privacy-student-T"), ("noise", "privacy-student-noise-")):
            students = [m for m in accuracy.index if m.startswith(prefix)]
            if not students:
                continue
            cost = (accuracy.loc[PRIVACY_TEACHER] - accuracy.loc[students]) * 100
            lines.append(
                f"- Accuracy cost of the students distilled on the {transfer} transfer set (teacher minus "
                f"student, percentage points): {cost.min().min():+.1f} to {cost.max().max():+.1f} over "
                f"{cost.shape[0]} students x {cost.shape[1]} seeds, mean {np.nanmean(cost.to_numpy()):+.1f}."
            )
    if (rows["model"] == PRIVACY_CONTROL).any():
        against = privacy_differences(rows, "loss", "auc", PRIVACY_CONTROL)
        named = {PRIVACY_TEACHER: "the teacher"}
        lines += [
            "",
            "Each model against the control (the same network trained on the public half with its labels, "
            "no member seen), seed by seed:",
            "",
        ]
        lines += _family(
            [(f"Loss AUC of {named.get(model, model)} minus the control", d) for model, d in against.items()]
        )
    else:
        lines.append(
            "- No control in these tables (`defdistill privacy --control`: the same network trained on the "
            "public half with its true labels): nothing here says where a model without members scores."
        )
    return lines


# --- REPRODUCTION.md -------------------------------------------------------------------------------

PAPER = {
    "undefended": 'JSMA success about 91-96% (the abstract says "from 95%"; we recall 95.89% for the '
    "undistilled network in the text and about 91% at the figure's lowest temperature)",
    "defended": "0.45%",
    "logits": "not reported",
    "cifar": "JSMA success about 87.89% -> 5.11% at T=100",
    "cost": "under about 1.5 percentage points at every T (baseline about 99.5% MNIST, 81% CIFAR-10)",
    "gradients": "shrink by a factor up to about 10^30",
    "minimal": '"about 800%" more features to change (JSMA, L0)',
    "jsma": "JSMA (softmax Jacobian) about 96% at T=1, 0.45% at T=100",
    "worst": "not reported (Carlini and Wagner 2017: their attacks on the logits succeed on 100% of the "
    "distilled network's inputs)",
}


def _worst_words(results_dir: Path, dataset: str, models: Sequence[str], eps: float) -> str:
    """The ensemble success (an input broken by any attack) of `models` at eps, with its interval,
    set side by side only when every model's union was taken over the same attacks."""
    worst = read_records(results_dir, "worst_case")
    if worst.empty:
        return "not measured"
    worst = worst[(worst["dataset"] == dataset) & (worst["norm"] == "linf")]
    worst = worst[np.isclose(worst["eps"].astype(float), eps)]
    parts, lists = [], {}
    for model in models:
        rows = worst[worst["model"] == model].sort_values("n")
        if rows.empty:
            parts.append(f"{model} not measured")
            continue
        r = rows.iloc[-1]
        lists[model] = str(r["attacks"]) if "attacks" in r.index and isinstance(r["attacks"], str) else ""
        parts.append(
            f"{model} {_pct(float(r['ensemble_success']))} "
            f"[{_pct(float(r['ensemble_success_lo']))}, {_pct(float(r['ensemble_success_hi']))}] "
            f"(n {int(r['n'])}; {r['ensemble_attacks']})"
        )
    if len(lists) > 1 and (len(set(lists.values())) != 1 or "" in lists.values()):
        differ = "; ".join(f"{m}: {a or 'not recorded'}" for m, a in lists.items())
        return f"not compared: the models' worst cases were taken over different attack lists ({differ})"
    if lists:
        count = len(next(iter(lists.values())).split("+"))
        parts.append(f"the same {count} attacks on each")
    return "; ".join(parts)


def _papernot(t: _Tables) -> pd.DataFrame | None:
    """report.papernot_table of the sweep's runs (teacher-T<T>, student-T<T>), indexed by model."""
    from ..report import papernot_table

    rows = t.robustness
    rows = rows[[m == run_name(r, T) for m, r, T in zip(rows["model"], rows["role"], rows["T"], strict=True)]]
    table = papernot_table(rows, read_records(t.results_dir, "gradients"), t.dataset)
    return None if table is None else table.set_index("model")


def _headline_pair(table: pd.DataFrame | None, column: str) -> tuple[pd.Series, pd.Series] | None:
    """The rows of teacher-T1 and student-T100, when both have `column`."""
    if table is None or not {UNDEFENDED, DEFENDED} <= set(table.index):
        return None
    a, b = table.loc[UNDEFENDED], table.loc[DEFENDED]
    return None if pd.isna(a[column]) or pd.isna(b[column]) else (a, b)


def _gradient_words(table: pd.DataFrame | None) -> str:
    """Papernot's gradient amplitude at T=1 and T=100, and the logits' beside it."""
    pair = _headline_pair(table, "softmax_log10")
    if pair is None:
        return "not measured (`defdistill gradients`)"
    a, b = pair
    return (
        f"softmax Jacobian 10^{a['softmax_log10']:.1f} ({UNDEFENDED}) and 10^{b['softmax_log10']:.0f} "
        f"({DEFENDED}), smaller by a factor 10^{a['softmax_log10'] - b['softmax_log10']:.0f}; float32 "
        f"makes it exactly zero on {_pct(b['softmax_zero'])} of inputs; the logits' Jacobian grows "
        f"{b['logits_l1'] / a['logits_l1']:.0f}-fold ({_amount(a['logits_l1'])} to "
        f"{_amount(b['logits_l1'])}), as the logits do: the softmax hides the gradient, not the "
        "decision boundary (mean L1 norms, `gradients.csv`)"
    )


def _minimal_words(table: pd.DataFrame | None) -> str:
    """Papernot's robustness (mean JSMA distortion) at T=1 and T=100, and JSMA-Z's."""
    pair = _headline_pair(table, "jsma_all_pairs_pct")
    if pair is None:
        return "JSMA distortion not measured"
    a, b = pair
    rise = 100 * (b["jsma_all_pairs_pct"] / a["jsma_all_pairs_pct"] - 1)
    return (
        f"JSMA-F pixels changed, a failed pair counted at 14.5%: {a['jsma_all_pairs_pct']:.1f}% to "
        f"{b['jsma_all_pairs_pct']:.1f}% (+{rise:.0f}%), a rise made of JSMA-F's failures (it reaches "
        f"{_pct(a['jsma'])} and {_pct(b['jsma'])} of the pairs); JSMA-Z, on the logits, reaches "
        f"{_pct(a['jsma-z'])} and {_pct(b['jsma-z'])} of them, changing {a['jsma-z_pixels_pct']:.1f}% "
        f"and {b['jsma-z_pixels_pct']:.1f}% of the pixels"
    )


def papernot_measurements(results_dir: Path, dataset: str = "digits") -> str:
    """REPRODUCTION.md: JSMA success, gradient amplitude and minimal perturbation against T."""
    table = _papernot(_Tables(results_dir, dataset))
    if table is None:
        raise DefdistillError(
            f"no {dataset} JSMA or gradient rows in {results_dir} for the block papernot-measurements"
        )
    table = table.reset_index()
    columns = {
        "T": "T",
        "model": "model",
        "jsma": "JSMA-F success",
        "jsma-z": "JSMA-Z success",
        "softmax_log10": "softmax gradient (log10)",
        "softmax_zero": "zero in float32",
        "logits_l1": "logits gradient",
        "jsma_all_pairs_pct": "JSMA-F % pixels (failures at 14.5%)",
        "jsma-z_pixels_pct": "JSMA-Z % pixels",
        "cw_mean_l2": "CW mean L2",
    }
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + " --- |" * len(columns)]
    for _, r in table.iterrows():
        cells = [
            format_T(r["T"]),
            r["model"],
            _pct(r["jsma"]),
            _pct(r["jsma-z"]),
            _f(r["softmax_log10"], ".1f"),
            _pct(r["softmax_zero"]),
            _amount(r["logits_l1"]),
            _f(r["jsma_all_pairs_pct"], ".2f"),
            _f(r["jsma-z_pixels_pct"], ".2f"),
            _f(r["cw_mean_l2"], ".3f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paper_comparison(results_dir: Path, dataset: str = "digits") -> str:
    """REPRODUCTION.md's table: the paper's figures beside this repository's, read from the tables."""
    t = _Tables(results_dir, dataset)
    _need(t, "paper-comparison")
    eps = headline_eps(dataset)
    s100 = DEFENDED
    row = t.gap_row(DEFENDED)
    students = t.sweep_students()
    if row is not None and pd.notna(row.get("cost_pp")):
        costs = students["cost_pp"].astype(float)
        cost = (
            f"{s100}: {row['cost_pp']:.2f} pp below the undefended {row['baseline']} "
            f"({_pct(t.accuracy(s100))} against {_pct(row['baseline_acc'])}); "
            f"{costs.min():+.2f} to {costs.max():+.2f} pp over "
            f"T = {format_T(students['T'].min())} to {format_T(students['T'].max())}; "
            f"{row['gap_pp']:.2f} pp to its own T={format_T(DEFENDED_T)} teacher"
        )
    else:
        cost = "not recorded (accuracy_gap.csv lacks cost_pp: run `defdistill report --runs-dir runs`)"
    diagnosis = _diagnosis_words(results_dir, dataset)
    papernot = _papernot(t)
    gradients = _gradient_words(papernot)
    if s100 in diagnosis:
        gradients += f"; diagnosis of {s100}: {diagnosis[s100]} (`defdistill diagnose`)"
    logits = ", ".join(
        f"{name} {_pct(t.success(s100, attack, eps))}"
        for attack, name in (
            ("pgd-margin", "PGD on the CW margin"),
            ("pgd-t", "PGD on logits / T"),
            ("transfer", f"transfer from {SURROGATE_NAME}"),
        )
    )
    cw, hsj = _pct(t.success(s100, "cw", None)), _pct(t.success(s100, "hsj", None))
    unbounded = (
        f"with no budget, CW {cw} (median L2 {_f(t.median_dist(s100, 'cw'), '.2f')}) "
        f"and HopSkipJump {hsj} (median L-inf {_f(t.median_dist(s100, 'hsj'), '.2f')}, an upper bound: "
        "10 steps on 50 inputs)"
    )
    ours = {
        "undefended": f"FGSM {_pct(t.success(UNDEFENDED, 'fgsm', eps))}, "
        f"PGD {_pct(t.success(UNDEFENDED, 'pgd', eps))} ({UNDEFENDED}); "
        f"CW {_pct(t.success(UNDEFENDED, 'cw', None))} with no budget",
        "defended": f"FGSM {_pct(t.success(s100, 'fgsm', eps))}, "
        f"PGD {_pct(t.success(s100, 'pgd', eps))} ({s100})",
        "logits": f"{logits} at eps {eps:g}; {unbounded}",
        "cifar": "not run here (see the estimates below)",
        "cost": cost,
        "gradients": gradients,
        "minimal": _minimal_words(papernot)
        + f"; CW median L2 {_f(t.median_dist(UNDEFENDED, 'cw'), '.2f')} at T=1 ({UNDEFENDED}), "
        f"{_f(t.median_dist(s100, 'cw'), '.2f')} at T={format_T(DEFENDED_T)}",
        "jsma": f"JSMA-F {_pct(t.success(UNDEFENDED, 'jsma', None))} ({UNDEFENDED}) and "
        f"{_pct(t.success(s100, 'jsma', None))} ({s100}); JSMA-Z (logits) "
        f"{_pct(t.success(UNDEFENDED, 'jsma-z', None))} and {_pct(t.success(s100, 'jsma-z', None))}; "
        "success over (input, target) pairs",
        "worst": _worst_words(results_dir, dataset, (UNDEFENDED, s100), eps),
    }
    labels = {
        "undefended": "undefended network",
        "defended": f"distilled at T={format_T(DEFENDED_T)}",
        "logits": "the same network, attacked on its logits",
        "cifar": "CIFAR-10",
        "cost": "accuracy cost",
        "gradients": "gradients",
        "minimal": "minimal perturbation",
        "jsma": "JSMA, the paper's attack",
        "worst": "per-input worst case over every attack",
    }
    lines = [
        f"| | Papernot et al. 2016 (MNIST, JSMA) | this repository ({dataset}, eps {eps:g} L-inf unless "
        "said) |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {labels[k]} | {PAPER[k]} | {ours[k]} |" for k in labels]
    return "\n".join(lines)


def student_success(results_dir: Path, dataset: str = "digits") -> str:
    """REPRODUCTION.md: student success at the paper's budget against T; CW as distances."""
    t = _Tables(results_dir, dataset)
    _need(t, "student-success")
    eps = headline_eps(dataset)
    students = t.robustness[t.robustness["role"] == "student"]
    temperatures = sorted(
        {
            float(T)
            for m, T in zip(students["model"], students["T"], strict=True)
            if m == run_name("student", T)
        }
    )
    lines = [
        "| T | " + " | ".join(format_T(T) for T in temperatures) + " |",
        "| --- | " + " | ".join("---" for _ in temperatures) + " |",
    ]
    for attack, name in (
        ("fgsm", "FGSM"),
        ("pgd", "PGD (cross-entropy)"),
        ("pgd-margin", "PGD on the CW margin"),
        ("pgd-t", "PGD on logits / T"),
        ("transfer", f"transfer from {SURROGATE_NAME}"),
    ):
        cells = [_pct(t.success(run_name("student", T), attack, eps)) for T in temperatures]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = [_f(t.median_dist(run_name("student", T), "cw"), ".3f") for T in temperatures]
    lines.append("| CW median L2 (no budget) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def temperature_findings(results_dir: Path, dataset: str = "digits") -> str:
    """REPRODUCTION.md: what the sweep shows about T, in sentences computed from the tables."""
    t = _Tables(results_dir, dataset)
    _need(t, "temperature-findings")
    eps = headline_eps(dataset)
    s100, t100 = DEFENDED, run_name("teacher", DEFENDED_T)
    # T=1: the student distilled at T=1 where the sweep made one, else the undistilled network
    s1 = run_name("student", 1)
    if not (t.robustness["model"] == s1).any():
        s1 = UNDEFENDED
    text = [
        f"FGSM success at eps {eps:g} falls from {_pct(t.success(s1, 'fgsm', eps))} at T=1 ({s1}) to "
        f"{_pct(t.success(s100, 'fgsm', eps))} at T={format_T(DEFENDED_T)}, PGD's from "
        f"{_pct(t.success(s1, 'pgd', eps))} to {_pct(t.success(s100, 'pgd', eps))}.",
    ]
    students = t.robustness[(t.robustness["role"] == "student")]
    students = students[
        [m == run_name("student", T) for m, T in zip(students["model"], students["T"], strict=True)]
    ]
    for attack, name in (("pgd-margin", "PGD on the CW margin"), ("pgd-t", "PGD on logits / T")):
        at = students[
            (students["attack"] == attack) & np.isclose(students["eps"].astype(float).fillna(-1), eps)
        ]
        if len(at):
            text.append(f"{name} succeeds on {_pct_span(at['success_rate'])} at every T.")
    cw = students[(students["attack"] == "cw") & students["eps"].isna()]
    if len(cw):
        # a T=1 student made for other comparisons may lack CW: then the undistilled network is T=1
        cw1 = s1 if not math.isnan(t.median_dist(s1, "cw")) else UNDEFENDED
        d1, d100 = t.median_dist(cw1, "cw"), t.median_dist(s100, "cw")
        named = "" if cw1 == s1 else f" ({cw1})"
        text.append(
            f"CW finds an adversarial example for {_pct_span(cw['success_rate'])} of the inputs at every T; "
            f"its median L2 distance lies between {cw['median_dist'].min():.3f} and "
            f"{cw['median_dist'].max():.3f} ({d1:.3f} at T=1{named}, {d100:.3f} at "
            f"T={format_T(DEFENDED_T)}). " + _cw_trend(results_dir, dataset, cw1, s100)
        )
    text.append(
        "The small budgets, where the question is which network is broken more often, are compared over "
        "seeds and on the same attacks in REPORT.md (Small budgets) and below."
    )
    text.append(
        f"The teacher trained at T={format_T(DEFENDED_T)} and attacked at T=1 behaves like the student "
        f"(FGSM {_pct(t.success(t100, 'fgsm', eps))}, PGD {_pct(t.success(t100, 'pgd', eps))} "
        f"at eps {eps:g})."
    )
    return " ".join(text)


def _cw_distances(results_dir: Path, dataset: str, model: str) -> np.ndarray | None:
    """Per-input CW (L2, unbounded) distances of `model`, NaN where none was found."""
    from ..report import per_input_outcomes

    rows = read_records(results_dir, "robustness", per_input=True)
    rows = rows[(rows["dataset"] == dataset) & (rows["model"] == model) & (rows["attack"] == "cw")]
    rows = rows[rows["eps"].isna()]
    if rows.empty:
        return None
    outcomes = per_input_outcomes(rows.iloc[0])
    if outcomes is None:
        return None
    broken, dist, correct = outcomes
    return np.where(broken & correct, dist, np.nan)


def _cw_trend(results_dir: Path, dataset: str, low: str, high: str) -> str:
    """Whether CW's distance changes from `low` (T=1) to `high` (T=100): Wilcoxon's signed-rank test
    of the per-input distances, on the inputs both have one for, two-sided at the 0.05 level."""
    from ..core.stats import wilcoxon_signed_rank

    a, b = _cw_distances(results_dir, dataset, high), _cw_distances(results_dir, dataset, low)
    if a is None or b is None or a.shape != b.shape:
        return "Whether it changes with T is not tested here: the records lack per-input CW distances."
    both = np.isfinite(a) & np.isfinite(b)
    test = wilcoxon_signed_rank(a[both], b[both])
    if test.p_value < 0.05:
        trend = f"{high}'s distances are {'larger' if test.positive > test.negative else 'smaller'}"
    else:
        trend = f"no change between {low} and {high} is detectable at the 0.05 level"
    return (
        f"Input by input (Wilcoxon's signed-rank test on the {int(both.sum())} inputs both have a distance "
        f"for), {high}'s distance is larger on {test.positive} and smaller on {test.negative}, median ratio "
        f"{test.median_ratio:.3f}, {_p_value(test.p_value)}: {trend}."
    )


def _p_value(p: float) -> str:
    """`p < 0.0001`, `p = 0.0021`, `p = 0.13`."""
    if p < 1e-4:
        return "p < 0.0001"
    return f"p = {p:.2g}" if p < 0.01 else "p = " + f"{p:.3f}".rstrip("0").rstrip(".")


def _small_budget_table(results_dir: Path, dataset: str, eps: str) -> pd.DataFrame:
    """report.small_budget_comparison on `dataset` at the comma-separated budgets `eps`, over the
    seeds of `results_dir` and its seeds/ folders."""
    from ..report import attack_outcomes, seed_robustness, small_budget_comparison

    budgets = [float(e) for e in eps.split(",")]
    rows = read_records(results_dir, "robustness", per_input=True)
    outcomes = attack_outcomes(pd.concat([rows, seed_robustness(results_dir)], ignore_index=True))
    keep = (outcomes["dataset"] == dataset) & np.isin(outcomes["eps"].round(6), np.round(budgets, 6))
    return small_budget_comparison(outcomes[keep])


def small_budget(results_dir: Path, dataset: str = "digits", eps: str = "0.1") -> str:
    """REPRODUCTION.md: the small-budget comparisons of REPORT.md at the listed budgets, over the seeds
    of `results_dir` and its seeds/ folders, on the attacks both models faced (report.compare_pair)."""
    from ..report import small_budget_sentence

    table = _small_budget_table(results_dir, dataset, eps)
    if table.empty:
        return f"Not measured: no per-input records of two compared models on {dataset} at eps {eps}."
    return "\n".join(small_budget_sentence(r) for r in table.to_dict("records"))


def small_budget_answer(results_dir: Path, dataset: str = "digits", eps: str = "0.1") -> str:
    """README.md: the small-budget comparisons at the listed budgets as one table (the pairs of
    report.SMALL_BUDGET_PAIRS, over seeds, on the attacks both models faced), each with its verdict."""
    from ..report import SIGNIFICANCE, small_budget_outcome, small_budget_verdict

    table = _small_budget_table(results_dir, dataset, eps)
    if table.empty:
        return f"Not measured: no per-input records of two compared models on {dataset} at eps {eps}."
    lines = [
        "| a against b | eps | seeds | broken: a, b | difference (95% t-interval over seeds) "
        "| what it establishes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in table.to_dict("records"):
        if r.get("refused"):
            lines.append(f"| {r['a']} against {r['b']} | {r['eps']:g} | | | | not compared: {r['refused']} |")
            continue
        outcome = small_budget_outcome(r)
        interval = "" if outcome == "one seed" else f" ({r['t_low']:+.3f} to {r['t_high']:+.3f})"
        holm = f"Holm-adjusted p = {r['p_t_holm']:.2g}"
        way = "more" if r["difference"] > 0 else "less"
        verdict = {
            "one seed": small_budget_verdict(r),
            "established": f"{r['a']} broken {way} often ({holm})",
            "interval": f"interval excludes 0, {r['a']} {way} often; {holm}, not below {SIGNIFICANCE:g}",
            "none": f"no difference established ({holm})",
        }[outcome]
        lines.append(
            f"| {r['a']} against {r['b']} | {r['eps']:g} | {int(r['seeds'])} | {r[r['a']]:.3f}, "
            f"{r[r['b']]:.3f} | {r['difference']:+.3f}{interval} | {verdict} |"
        )
    return "\n".join(lines)


def sweep_cost(results_dir: Path, dataset: str = "digits") -> str:
    """REPRODUCTION.md: the attack time per model and CW's share, from the rows' `seconds`."""
    t = _Tables(results_dir, dataset)
    _need(t, "sweep-cost")
    rows = t.robustness
    per_model = rows.groupby("model")["seconds"].sum()
    cw = rows.loc[rows["attack"] == "cw", "seconds"].sum()
    total = rows["seconds"].sum()
    return (
        f"Attacks: {per_model.min():.0f} to {per_model.max():.0f} s per model "
        f"({rows['model'].nunique()} models, {len(rows)} rows), of which CW is {100 * cw / total:.0f}% "
        f"({cw:,.0f} of {total:,.0f} s in all, "
        "the rows' `seconds`)."
    )


def accuracy_noise(results_dir: Path, dataset: str = "digits") -> str:
    """REPRODUCTION.md: the spread of the accuracy differences, which one seed cannot resolve."""
    t = _Tables(results_dir, dataset)
    _need(t, "accuracy-noise")
    students = t.sweep_students()
    gaps = students["gap_pp"].astype(float)
    text = (
        f"the students' accuracy gaps to their own teachers lie between {gaps.min():+.2f} and "
        f"{gaps.max():+.2f} pp over T = {format_T(students['T'].min())} to {format_T(students['T'].max())}"
    )
    costs = pd.to_numeric(students["cost_pp"], errors="coerce") if "cost_pp" in students else None
    if costs is not None and costs.notna().all():
        text += f", their costs against {UNDEFENDED} between {costs.min():+.2f} and {costs.max():+.2f} pp"
    else:
        text += f" (their costs against {UNDEFENDED} are not recorded: `defdistill report --runs-dir runs`)"
    return text[0].upper() + text[1:] + " (`accuracy_gap.csv`)."


def _attack_lists(results_dir: Path, dataset: str, eps: float) -> dict[str, str]:
    """Per model, the L-inf attacks of its per-input worst case at `eps` (sorted, joined by '+'):
    the bounded attacks recorded at `eps` and the unbounded L-inf ones (HopSkipJump)."""
    rows = read_records(results_dir, "robustness")
    rows = rows[(rows["dataset"] == dataset) & (rows["norm"] == "linf")]
    at = rows[rows["eps"].isna() | np.isclose(rows["eps"].astype(float).fillna(-1), eps)]
    return {m: "+".join(sorted(set(g["attack"]))) for m, g in at.groupby("model")}


def defences_headline(results_dir: Path, dataset: str = "digits", eps: str = "0.1") -> str:
    """docs/defences.md: worst-case robust accuracy per defence at one budget, and the verdicts,
    compared only when every model faced the same attacks."""
    budget = float(eps)
    path = results_dir / "defences.csv"
    if not path.is_file():
        raise DefdistillError(f"no {path} for the block defences-headline: run experiments/defences.sh")
    table = pd.read_csv(path)
    table = table[table["dataset"] == dataset]
    column = f"robust_acc@{budget:g}"
    if table.empty or column not in table.columns:
        raise DefdistillError(f"{path} has no {dataset} rows with {column}")
    lists = _attack_lists(results_dir, dataset, budget)
    models = list(table["model"])
    used = {lists.get(m, "") for m in models}
    n = int(table["n"].iloc[0])
    if len(used) != 1 or "" in used:
        differ = "; ".join(f"{m}: {lists.get(m) or 'none'}" for m in models)
        return (
            f"Not compared: at eps {budget:g} the models faced different attack lists ({differ}), "
            "and a worst case over fewer attacks is not comparable with one over more. Rerun "
            "experiments/defences.sh with one ATTACKS list for every model."
        )
    parts = [f"{r.defence} ({r.model}) {float(r[column]):.3f}" for _, r in table.iterrows()]
    masked = [r.model for _, r in table.iterrows() if str(r.masked) == "True"]
    clean = [r.model for _, r in table.iterrows() if str(r.masked) != "True"]
    return (
        f"At L-inf eps {budget:g} on the first {n} test inputs, worst-case robust accuracy (an input "
        "counts only if it is classified correctly and no attack broke it; every model faced the same "
        f"attacks, {used.pop()}): " + ", ".join(parts) + ". The gradient-masking diagnosis flags "
        f"{', '.join(masked) if masked else 'none of them'} and passes "
        f"{', '.join(clean) if clean else 'none'} (`defences.csv`, `masked`)."
    )


RENDERERS: dict[str, Callable[..., str]] = {
    "defences-headline": defences_headline,
    "measured-figures": measured_figures,
    "privacy-results": privacy_results,
    "paper-comparison": paper_comparison,
    "papernot-measurements": papernot_measurements,
    "student-success": student_success,
    "temperature-findings": temperature_findings,
    "sweep-cost": sweep_cost,
    "small-budget": small_budget,
    "small-budget-answer": small_budget_answer,
    "accuracy-noise": accuracy_noise,
}


# --- the blocks in the documents ----------------------------------------------------------------


def _params(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split())


def render_block(name: str, doc_dir: Path, params: dict[str, str]) -> str:
    """The text of block `name` whose marker carries `params` (results=..., dataset=...)."""
    if name not in RENDERERS:
        raise DefdistillError(f"unknown generated block {name!r}: choose one of {', '.join(RENDERERS)}")
    options = dict(params)
    results_dir = doc_dir / options.pop("results", "results")
    return RENDERERS[name](results_dir, **options).rstrip("\n") + "\n"


def blocks(text: str) -> list[re.Match]:
    return list(BLOCK.finditer(text))


def regenerate(path: Path, results_dir: Path | None = None) -> str:
    """The document's text with its blocks regenerated (only those naming `results_dir`, if given)."""
    text = path.read_text(encoding="utf-8")
    doc_dir = path.resolve().parent

    def replace(match: re.Match) -> str:
        params = _params(match["params"])
        source = (doc_dir / params.get("results", "results")).resolve()
        if results_dir is not None and source != Path(results_dir).resolve():
            return match[0]
        return match["begin"] + render_block(match["name"], doc_dir, params) + match["end"]

    return BLOCK.sub(replace, text)


def default_docs(root: Path) -> list[Path]:
    """The documents `defdistill report` rewrites by default: README.md, REPRODUCTION.md and
    docs/*.md under `root`, those that exist."""
    return [p for p in (root / "README.md", root / "REPRODUCTION.md") if p.is_file()] + sorted(
        (root / "docs").glob("*.md")
    )


def update_docs(docs: Sequence[str | Path], results_dir: str | Path) -> list[Path]:
    """Rewrite the blocks of `docs` that name `results_dir`; the documents that changed."""
    changed = []
    for doc in docs:
        path = Path(doc)
        if not path.is_file():
            continue
        new = regenerate(path, Path(results_dir))
        if new != path.read_text(encoding="utf-8"):
            atomic_write_text(path, new)
            changed.append(path)
    return changed


def stale_blocks(path: str | Path) -> list[str]:
    """Names of the blocks of `path` whose text is not what the tables give now."""
    path = Path(path)
    doc_dir = path.resolve().parent
    stale = []
    for match in blocks(path.read_text(encoding="utf-8")):
        if match["body"] != render_block(match["name"], doc_dir, _params(match["params"])):
            stale.append(match["name"])
    return stale
