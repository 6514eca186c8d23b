"""Is a model robust, or are its gradients masked? The checks of Carlini et al. (2019).

Carlini, Athalye, Papernot et al. 2019, "On Evaluating Adversarial Robustness", list the signs
that an evaluation measures a broken attack rather than a robust model; Carlini & Wagner (2016,
2017) showed that defensive distillation passes a naive evaluation through exactly these
(its softmax saturates at T=1, so cross-entropy gradients vanish). `diagnose_model` measures
each sign on one model, runs the attacks it needs (reusing rows already recorded for the same
inputs and settings), writes results/diagnostics.{csv,md} and ends with a verdict.

The checks are structural signs: they explain a verdict and never make one. The verdict is
calibrated (evaluate.verdict): at every eps, a paired test on the same inputs of what
cross-entropy gradient ascent on the outputs as given leaves standing against the per-input
worst case over every attack recorded for the model. `recalibrate_diagnostics` redoes the
verdict rows of recorded diagnoses from the recorded attacks alone.

One function per check (as AutoAttack's checks.py has one per sanity check), each a pure
function of measured figures that returns a `Check`; `masking_checks` runs them all. Every
comparison is made on the same inputs: the attacks run on the same first n test inputs, and
the decision-based attack, which runs on the first 50 only, is compared with PGD's per-input
results on those 50.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from ..checks import check_eps
from ..core.fileio import ensure_writable_dir
from ..core.progress import SILENT, ProgressReporter
from ..data.registry import get_dataset_spec, load_dataset
from ..store.runs import run_identity
from ..store.tables import PER_INPUT, ROBUSTNESS_COLUMNS, read_records, record_rows
from .attacks import (
    ATTACKS,
    DEFAULT_EPS,
    AttackOutcome,
    AttackSettings,
    load_surrogate,
    load_target,
    run_attack,
    settings_digest,
)
from .metrics import decode_flags
from .verdict import EpsTest, VerdictThresholds, calibrated_verdict, grid_tests
from .worst_case import naive_and_worst_flags, record_worst_case

# The attacks the checks read, in the order they run; each is reused from recorded rows when
# they were made with the same settings, seed and inputs. Where each runs: `attack_budgets`.
DIAGNOSIS_ATTACKS = ("fgsm", "pgd", "apgd-dlr", "pgd-long", "noise", "transfer", "cw", "hsj")
# An L-inf budget of 1 contains every input in [0, 1]: an attack that works succeeds on all.
FULL_BUDGET = 1.0
MASKING_VERDICT = "robustness is likely gradient masking"
NO_MASKING_VERDICT = "no sign of gradient masking found"

Rates = dict[float, float]  # success rate per eps


@dataclass(frozen=True)
class Thresholds:
    """Where a measurement turns into evidence of masking.

    A well-trained undefended network has no input with an exactly-zero gradient (its logit
    margins are far below the ~100 needed to underflow float32) and few saturated softmaxes.
    Success rates are fractions of the correctly classified inputs; the tolerances absorb the
    noise of a few hundred inputs (50 for the decision-based attack, hence its wider slack).
    """

    zero_gradient: float = 0.05  # most inputs with an exactly-zero gradient
    saturated: float = 0.5  # most inputs with max softmax == 1.0 in float32
    # fgsm above pgd; a success drop as eps grows; random noise above pgd
    tolerance: float = 0.05
    # a white-box attack whose success rises less than this from the smallest to the largest
    # eps, while below `unbounded_success`, is flat: the budget does not matter to it
    flat_rise: float = 0.05
    black_box_tolerance: float = 0.1  # black-box success (transfer, hsj) above white-box
    # an unbounded attack (cw; pgd at L-inf eps 1, the whole input range) must reach about 100%
    unbounded_success: float = 0.95
    margin_gap: float = 0.2  # scale-invariant apgd-dlr above cross-entropy pgd at one eps
    # pgd-long (2x the steps, 2 random starts) above pgd at the middle eps: the default attack
    # had not converged, its success understates the budget's (README, Honest evaluation)
    more_effort_gain: float = 0.05


@dataclass(frozen=True)
class Check:
    """One row of results/diagnostics: a measurement, whether it passed, and why."""

    name: str
    value: float
    passed: bool
    detail: str


@dataclass(frozen=True)
class Figures:
    """What the checks read, measured on one model. Rates are success rates at each eps."""

    n_correct: int  # correctly classified inputs among the n
    zero_fraction: float  # of them, with an exactly-zero cross-entropy input gradient
    saturated_fraction: float  # of them, with a softmax saturated at 1.0 in float32
    fgsm: Rates
    pgd: Rates  # at the requested budgets
    pgd_full_budget: float  # pgd at L-inf eps 1
    apgd_dlr: Rates
    pgd_long: Rates  # at the middle budget
    noise: Rates
    transfer: Rates
    cw_success: float
    cw_median: float
    decision: Rates  # hsj within eps, on its first n_decision inputs
    pgd_on_decision_inputs: Rates  # pgd on the same n_decision inputs
    n_decision: int
    surrogate: str
    long_pgd: str = "pgd-long"  # how pgd-long differs from pgd, for the detail


@dataclass
class Diagnosis:
    """What `diagnose_model` measured, concluded and recorded."""

    model_path: Path
    dataset: str
    checks: list[Check]
    masking: bool  # the calibrated verdict is "masked"
    verdict: str  # "<masked|not-masked|inconclusive>: <reason>"
    rows: list[dict[str, Any]] = field(default_factory=list)  # the attack rows the checks read
    calibrated: CalibratedVerdict | None = None


def gradient_measurements(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device | str = "cpu",
    batch_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per input: classified correctly; input gradient of the cross-entropy exactly zero;
    softmax saturated (its largest probability is exactly 1.0 in float32)."""
    model = model.to(device).eval()
    correct, zero, saturated = [], [], []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device).float().requires_grad_(True)
        yb = y[start : start + batch_size].to(device)
        logits = model(xb).float()
        # summed, so each input's gradient is its own loss's gradient
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, yb, reduction="sum"), xb)
        logits = logits.detach()
        correct.append((logits.argmax(1) == yb).cpu())
        zero.append((grad.flatten(1).abs().amax(1) == 0).cpu())
        saturated.append((F.softmax(logits, dim=1).amax(1) == 1.0).cpu())
    return torch.cat(correct), torch.cat(zero), torch.cat(saturated)


def _fraction(flags: torch.Tensor, among: torch.Tensor) -> float:
    return float(flags[among].float().mean()) if bool(among.any()) else math.nan


def _fmt(value: float) -> str:
    return "nan" if value != value else f"{value:.3f}"


def _worst_excess(stronger: Rates, weaker: Rates) -> tuple[float, float | None]:
    """Largest stronger[eps] - weaker[eps] over the budgets both have, and that budget."""
    pairs = [
        (stronger[e] - weaker[e], e)
        for e in sorted(stronger)
        if e in weaker and not math.isnan(stronger[e] - weaker[e])
    ]
    return max(pairs) if pairs else (math.nan, None)


def _comparison(
    name: str, stronger: Rates, weaker: Rates, tolerance: float, pair: str, passed: str, failed: str
) -> Check:
    """A check that fails where `stronger` exceeds `weaker` by more than `tolerance` at some
    shared budget. `passed` and `failed` are the detail texts, formatted with excess, at (the
    budget), s and w (the two rates there, formatted)."""
    excess, at = _worst_excess(stronger, weaker)
    if at is None:
        return _not_measured(name, f"{pair} share no budget")
    ok = excess <= tolerance
    words = {"excess": _fmt(excess), "at": at, "s": _fmt(stronger[at]), "w": _fmt(weaker[at])}
    return Check(name, excess, ok, (passed if ok else failed).format(**words))


def _not_measured(name: str, why: str) -> Check:
    """A check the figures cannot decide: no evidence either way, so it does not fail."""
    return Check(name, math.nan, True, f"not measured: {why}")


# --- the checks, one function each -------------------------------------------------------


def check_gradient_zero(zero_fraction: float, n_correct: int, th: Thresholds = Thresholds()) -> Check:
    """Exactly-zero cross-entropy input gradients: a gradient attack cannot move there."""
    return Check(
        "gradient_zero",
        zero_fraction,
        zero_fraction <= th.zero_gradient,
        f"{_fmt(zero_fraction)} of {n_correct} correctly classified inputs have an exactly-zero "
        "cross-entropy input gradient",
    )


def check_softmax_saturated(saturated_fraction: float, th: Thresholds = Thresholds()) -> Check:
    """Softmax saturated at 1.0 in float32: what zeroes the gradient."""
    return Check(
        "softmax_saturated",
        saturated_fraction,
        saturated_fraction <= th.saturated,
        f"{_fmt(saturated_fraction)} of them have a softmax saturated at exactly 1.0 in float32",
    )


def check_iterative_vs_single_step(fgsm: Rates, pgd: Rates, th: Thresholds = Thresholds()) -> Check:
    """Iterative PGD explores a superset of FGSM's one step: losing to it means the gradient misleads."""
    return _comparison(
        "iterative_vs_single_step", fgsm, pgd, th.tolerance, "fgsm and pgd",
        "pgd at least as strong as fgsm at every eps (largest fgsm excess {excess} at eps {at})",
        "single-step fgsm beats iterative pgd: {s} vs {w} at eps {at}",
    )  # fmt: skip


def check_success_grows_with_eps(success: dict[str, Rates], th: Thresholds = Thresholds()) -> Check:
    """A larger budget contains every smaller one: no attack's success may fall as eps grows."""
    name = "success_grows_with_eps"
    drops = []
    for attack, rates in success.items():
        budgets = sorted(rates)
        drops += [(rates[a] - rates[b], attack, a, b) for a, b in zip(budgets, budgets[1:], strict=False)]
    drops = [d for d in drops if not math.isnan(d[0])]
    if not drops:
        return _not_measured(name, "no attack ran at two budgets")
    drop, attack, low, high = max(drops)
    ok = drop <= th.tolerance
    return Check(
        name,
        drop,
        ok,
        f"success grows with eps for {', '.join(success)} (largest drop {_fmt(drop)})"
        if ok
        else f"{attack} success falls from {_fmt(success[attack][low])} at eps {low} "
        f"to {_fmt(success[attack][high])} at eps {high}",
    )


def check_success_varies_with_eps(success: dict[str, Rates], th: Thresholds = Thresholds()) -> Check:
    """A white-box attack whose success stays flat from the smallest to the largest eps, below
    100%, is not limited by the budget but by its gradient."""
    name = "success_varies_with_eps"
    rises = [
        (rates[max(rates)] - rates[min(rates)], attack, min(rates), max(rates))
        for attack, rates in success.items()
        if len(rates) > 1 and not math.isnan(rates[max(rates)] - rates[min(rates)])
    ]
    if not rises:
        return _not_measured(name, "needs two budgets")
    below = [r for r in rises if success[r[1]][r[3]] < th.unbounded_success]
    if not below:  # every attack reaches about 100% at the largest budget
        rise = min(rises)[0]
        return Check(name, rise, True, f"every attack reaches {th.unbounded_success} by the largest eps")
    rise, attack, low, high = min(below)
    ok = rise >= th.flat_rise
    rates = success[attack]
    return Check(
        name,
        rise,
        ok,
        f"success rises with eps for {', '.join(success)} (smallest rise {_fmt(rise)}, {attack})"
        if ok
        else f"{attack} success stays flat: {_fmt(rates[low])} at eps {low}, "
        f"{_fmt(rates[high])} at eps {high}",
    )


def check_unbounded_reaches_100(success: float, median_l2: float, th: Thresholds = Thresholds()) -> Check:
    """With no budget any input can be changed into another class; less means the attack fails."""
    ok = success >= th.unbounded_success
    return Check(
        "unbounded_reaches_100",
        success,
        ok,
        f"unbounded cw (L2) success {_fmt(success)}, median L2 {_fmt(median_l2)}"
        + ("" if ok else f": below {th.unbounded_success}, the attack is failing"),
    )


def check_full_budget_reaches_100(pgd: float, cw: float, th: Thresholds = Thresholds()) -> Check:
    """At L-inf eps 1 the budget holds every input of another class: cross-entropy PGD must
    reach about 100% too (Carlini et al. 2019: success must reach 100% as eps grows)."""
    ok = pgd >= th.unbounded_success
    return Check(
        "full_budget_reaches_100",
        pgd,
        ok,
        f"cross-entropy pgd at eps {FULL_BUDGET:g} (the whole input range) succeeds on {_fmt(pgd)}"
        + ("" if ok else f", unbounded cw on {_fmt(cw)}: the gradient, not the budget, stops pgd"),
    )


def check_long_vs_default_pgd(
    default: Rates, long: Rates, how: str = "pgd-long", th: Thresholds = Thresholds()
) -> Check:
    """More steps and random restarts must not find much more: else the default attack had not
    converged, and its success understates what the budget allows."""
    return _comparison(
        "long_vs_default_pgd", long, default, th.more_effort_gain, "pgd-long and pgd",
        how + " adds {excess} to pgd at eps {at} ({s} vs {w})",
        how + " adds {excess} to pgd at eps {at} ({s} vs {w}): pgd has not converged",
    )  # fmt: skip


def check_noise_vs_white_box(noise: Rates, pgd: Rates, th: Thresholds = Thresholds()) -> Check:
    """Random noise within eps must not beat the white-box attack."""
    return _comparison(
        "noise_vs_white_box", noise, pgd, th.tolerance, "noise and pgd",
        "random noise is never above white-box pgd (largest excess {excess} at eps {at})",
        "random noise beats white-box pgd: {s} vs {w} at eps {at}",
    )  # fmt: skip


def check_black_box_transfer(
    transfer: Rates, pgd: Rates, surrogate: str, th: Thresholds = Thresholds()
) -> Check:
    """An attacker who knows less (transfer from a surrogate) should not do better."""
    return _comparison(
        "black_box_transfer", transfer, pgd, th.black_box_tolerance, "transfer and pgd",
        f"transfer from {surrogate} is never far above white-box pgd (largest excess {{excess}})",
        f"black-box transfer from {surrogate} beats white-box pgd: {{s}} vs {{w}} at eps {{at}}",
    )  # fmt: skip


def check_black_box_decision(
    within: Rates, pgd: Rates, n_inputs: int, th: Thresholds = Thresholds()
) -> Check:
    """A decision-based attack never sees a gradient: beating white-box PGD on the same inputs
    means the gradient misleads."""
    return _comparison(
        "black_box_decision", within, pgd, th.black_box_tolerance, "hsj and pgd",
        f"decision-based hsj is never far above white-box pgd on the same first {n_inputs} inputs "
        "(largest excess {excess})",
        f"gradient-free hsj beats white-box pgd on the same first {n_inputs} inputs: "
        "{s} vs {w} at eps {at}",
    )  # fmt: skip


def check_margin_vs_cross_entropy(dlr: Rates, pgd: Rates, th: Thresholds = Thresholds()) -> Check:
    """APGD on the difference-of-logits ratio, invariant to the logits' scale, far above
    cross-entropy PGD: the model is robust to one loss, not to the perturbation."""
    return _comparison(
        "margin_vs_cross_entropy", dlr, pgd, th.margin_gap, "apgd-dlr and pgd",
        "scale-invariant apgd-dlr is never far above cross-entropy pgd (largest excess {excess})",
        "scale-invariant apgd-dlr beats cross-entropy pgd: {s} vs {w} at eps {at}",
    )  # fmt: skip


def masking_checks(figures: Figures, thresholds: Thresholds = Thresholds()) -> list[Check]:
    """The checklist, in the order of results/diagnostics, from measured figures."""
    f, th = figures, thresholds
    return [
        check_gradient_zero(f.zero_fraction, f.n_correct, th),
        check_softmax_saturated(f.saturated_fraction, th),
        check_iterative_vs_single_step(f.fgsm, f.pgd, th),
        check_success_grows_with_eps(
            {"fgsm": f.fgsm, "pgd": f.pgd | {FULL_BUDGET: f.pgd_full_budget}, "transfer": f.transfer}, th
        ),
        check_success_varies_with_eps({"fgsm": f.fgsm, "pgd": f.pgd}, th),
        check_unbounded_reaches_100(f.cw_success, f.cw_median, th),
        check_full_budget_reaches_100(f.pgd_full_budget, f.cw_success, th),
        check_long_vs_default_pgd(f.pgd, f.pgd_long, f.long_pgd, th),
        check_noise_vs_white_box(f.noise, f.pgd | {FULL_BUDGET: f.pgd_full_budget}, th),
        check_black_box_transfer(f.transfer, f.pgd, f.surrogate, th),
        check_black_box_decision(f.decision, f.pgd_on_decision_inputs, f.n_decision, th),
        check_margin_vs_cross_entropy(f.apgd_dlr, f.pgd, th),
    ]


def verdict_of(checks: Sequence[Check]) -> tuple[bool, str]:
    """(any check failed, summary line) from the checks alone. The checks are structural signs:
    they explain a verdict, they never make one (`calibrated_verdict_of` makes it)."""
    failed = [c for c in checks if not c.passed]
    if not failed:
        return False, f"{NO_MASKING_VERDICT}: all {len(checks)} checks passed"
    evidence = "; ".join(c.detail for c in failed)
    return True, f"{MASKING_VERDICT} ({len(failed)} of {len(checks)} checks failed): {evidence}"


@dataclass(frozen=True)
class CalibratedVerdict:
    """The paired-test verdict of one model (evaluate.verdict) from its recorded attacks."""

    verdict: str  # masked, not-masked or inconclusive
    reason: str
    tests: list[EpsTest]

    @property
    def line(self) -> str:
        return f"{self.verdict}: {self.reason}"

    @property
    def largest_gap(self) -> float:
        return max((t.gap for t in self.tests), default=math.nan)

    def check(self) -> Check:
        """The verdict row of results/diagnostics: passed unless masked; value the largest gap."""
        return Check("verdict", self.largest_gap, self.verdict != "masked", self.line)


def calibrated_verdict_of(
    records: Sequence[dict[str, Any]],
    checks: Sequence[Check] = (),
    thresholds: VerdictThresholds = VerdictThresholds(),
) -> CalibratedVerdict:
    """The calibrated verdict from one model's robustness records (per-input results kept): at
    every eps where FGSM and PGD were recorded, cross-entropy gradient ascent on the outputs as
    given against the per-input worst case over every recorded attack. Failed `checks` are
    named in a masked verdict's reason, as its explanation."""
    tests = grid_tests(naive_and_worst_flags(records), thresholds)
    failed = [c.name for c in checks if not c.passed]
    explanation = f"signs: {', '.join(failed)}" if failed else ""
    verdict, reason = calibrated_verdict(tests, thresholds, explanation)
    return CalibratedVerdict(verdict, reason, tests)


def recalibrate_diagnostics(
    results_dir: str | Path, thresholds: VerdictThresholds = VerdictThresholds()
) -> list[tuple[str, str, str, str]]:
    """Rewrite the verdict row of every diagnosed model with the calibrated verdict of its
    recorded attacks; returns (dataset, model, verdict before, verdict after) per model whose
    row changed. The check rows stay as they are."""
    diagnostics = read_records(results_dir, "diagnostics")
    if diagnostics.empty:
        return []
    robustness = read_records(results_dir, "robustness", per_input=True)
    weights = diagnostics.get("weights_sha256", pd.Series(None, index=diagnostics.index))
    diagnostics = diagnostics.assign(network=weights.map(lambda w: w if isinstance(w, str) else ""))
    measured = robustness.get("weights_sha256", pd.Series(None, index=robustness.index))
    changed, rows = [], []
    for (dataset, model, network), group in diagnostics.groupby(["dataset", "model", "network"], sort=False):
        same = measured.isna() if not network else measured == network  # the same weights' attacks
        records = robustness[(robustness["dataset"] == dataset) & (robustness["model"] == model) & same]
        if records.empty:
            continue
        checks = [
            Check(r["check"], float(r["value"]), bool(r["passed"]), str(r["detail"]))
            for r in group.to_dict("records")
            if r["check"] != "verdict"
        ]
        found = calibrated_verdict_of(records.to_dict("records"), checks, thresholds)
        before = group.loc[group["check"] == "verdict", "detail"]
        old = str(before.iloc[0]) if not before.empty else ""
        if old == found.line:
            continue
        row = found.check()
        rows.append({"dataset": dataset, "model": model, "check": row.name, "value": row.value,
                     "passed": row.passed, "detail": row.detail,
                     **({"weights_sha256": network} if network else {})})  # fmt: skip
        changed.append((str(dataset), str(model), old, found.line))
    if rows:
        record_rows(results_dir, "diagnostics", rows)
    return changed


# --- measuring the figures ---------------------------------------------------------------


def attack_budgets(budgets: Sequence[float]) -> dict[str, list[float | None]]:
    """Where each diagnosis attack runs. The costly extras run where they decide a check:
    apgd-dlr and pgd-long at the middle budget (where success is neither 0 nor 1); pgd also at
    eps 1; noise at the largest budget (where it is strongest) and at eps 1, where it costs
    almost nothing and breaks every input, so the worst case at eps 1 does not rest on pgd
    alone; unbounded attacks once."""
    budgets = sorted(budgets)
    middle, largest = budgets[(len(budgets) - 1) // 2], budgets[-1]
    return {
        "fgsm": list(budgets),
        "pgd": [*sorted({*budgets, FULL_BUDGET})],
        "apgd-dlr": [middle],
        "pgd-long": [middle],
        "noise": [*sorted({largest, FULL_BUDGET})],
        "transfer": list(budgets),
        "cw": [None],
        "hsj": [None],
    }


def _row_of(record: dict[str, Any]) -> dict[str, Any]:
    """A robustness record read back as a row: trailing columns it lacks dropped, eps None
    when unbounded (as run_attack gives it)."""
    row = {
        k: v
        for k, v in record.items()
        if k in ROBUSTNESS_COLUMNS or not (isinstance(v, float) and math.isnan(v))
    }
    if isinstance(row["eps"], float) and math.isnan(row["eps"]):
        row["eps"] = None
    return row


def _outcome(row: dict[str, Any]) -> AttackOutcome:
    """The per-input results a row (fresh or recorded) carries."""
    per_input = row[PER_INPUT]
    dist = torch.tensor([math.inf if d is None else d for d in per_input["dist"]], dtype=torch.float64)
    return AttackOutcome(
        row["attack"],
        row["norm"],
        row["eps"],
        decode_flags(per_input["clean"]),
        decode_flags(per_input["broken"]),
        dist,
    )


def _reusable(
    records: pd.DataFrame, attack: str, digest: str, correct: torch.Tensor
) -> dict[float | None, dict[str, Any]]:
    """The recorded rows of `attack` (this model, dataset) comparable with a run now, by eps:
    same settings digest (settings, norm, seed, surrogate), same number of inputs, per-input
    results kept, and the same inputs classified correctly (the same model on the same inputs)."""
    if records.empty or "settings" not in records.columns:
        return {}
    found: dict[float | None, dict[str, Any]] = {}
    for record in records[(records["attack"] == attack) & (records["settings"] == digest)].to_dict("records"):
        per_input = record.get(PER_INPUT)
        if not isinstance(per_input, dict) or record["n"] != len(correct):
            continue
        if not torch.equal(decode_flags(per_input["clean"]), correct):
            continue
        row = _row_of(record)
        found[row["eps"]] = row
    return found


def success_among(outcome: AttackOutcome, broken: torch.Tensor, first: int | None = None) -> float:
    """Success rate of `broken` (per-input flags of `outcome`'s inputs) among the inputs it
    classified correctly, on all of them or on the `first` only: a rate on the same inputs as
    an attack that ran on a subset."""
    clean, broken = outcome.clean_correct[:first], broken[:first]
    n_correct = int(clean.sum())
    return int((broken & clean).sum()) / n_correct if n_correct else math.nan


def diagnose_model(
    model: str = "student",
    dataset: str = "digits",
    T: float | None = None,
    eps: Sequence[float] = DEFAULT_EPS,
    n: int | None = None,
    seed: int = 0,
    surrogate: str | None = None,
    settings: AttackSettings = AttackSettings(),
    thresholds: Thresholds = Thresholds(),
    fresh: bool = False,
    runs_dir: str | Path = "runs",
    results_dir: str | Path = "results",
    data_dir: str | Path = "data",
    device: str = "auto",
    progress: ProgressReporter = SILENT,
) -> Diagnosis:
    """Run the gradient-masking checklist on one model; record its rows in results/diagnostics.

    Attack rows already recorded for this model on the same inputs, with the settings digest a
    run would have now, are reused per budget (`fresh=True` runs them again); the others are run
    and recorded in results/robustness, and the model's per-input worst case is brought up to date.
    """
    get_dataset_spec(dataset)
    budgets = sorted(check_eps(eps))
    path, net, meta, torch_device = load_target(model, dataset, T, n, seed, runs_dir, device)
    sur = load_surrogate(surrogate, dataset, runs_dir, torch_device)
    settings = replace(settings, norm="linf", model_T=float(meta["T"]), surrogate=sur)
    results_dir = ensure_writable_dir(results_dir, "--results-dir")
    x, y = load_dataset(dataset, "test", data_dir)
    if n is not None:
        x, y = x[:n], y[:n]

    correct, zero, saturated = gradient_measurements(net, x, y, torch_device)
    identity = run_identity(path, meta)  # rows are bound to the weights they measured
    records = (
        pd.DataFrame()
        if fresh
        else read_records(results_dir, "robustness", per_input=True, runs_dir=runs_dir)
    )
    if not records.empty:
        records = records[(records["dataset"] == dataset) & (records["model"] == path.name)]
    if not records.empty and "weights_sha256" in records.columns:  # only rows of these weights (or legacy)
        measured = records["weights_sha256"]
        records = records[measured.isna() | (measured == meta["weights_sha256"])]
    rows: dict[str, dict[float | None, dict[str, Any]]] = {}
    ran = False
    for attack, wanted in attack_budgets(budgets).items():
        spec = ATTACKS[attack]
        digest = settings_digest(spec, settings, spec.row_norm(settings), seed)
        inputs = correct[: settings.decision_n] if spec.subset else correct
        found = _reusable(records, attack, digest, inputs)
        missing = [b for b in wanted if b not in found]
        if missing:
            new = [
                identity | row
                for row in run_attack(
                    net,
                    x,
                    y,
                    attack,
                    [b for b in missing if b is not None],
                    settings,
                    torch_device,
                    seed,
                    progress,
                )
            ]
            record_rows(results_dir, "robustness", new, runs_dir)
            found |= {row["eps"]: row for row in new}
            ran = True
        rows[attack] = {b: found[b] for b in wanted}
    if ran:
        record_worst_case(results_dir, dataset, path.name, runs_dir)

    outcome = {(a, b): _outcome(row) for a, by_eps in rows.items() for b, row in by_eps.items()}

    def rates(attack: str, among: Sequence[float | None] | None = None) -> Rates:
        return {
            b: success_among(outcome[attack, b], outcome[attack, b].broken)
            for b in rows[attack]
            if b is not None and (among is None or b in among)
        }

    decision = outcome["hsj", None]
    k = len(decision.clean_correct)
    long = ATTACKS["pgd-long"]
    figures = Figures(
        n_correct=int(correct.sum()),
        zero_fraction=_fraction(zero, correct),
        saturated_fraction=_fraction(saturated, correct),
        fgsm=rates("fgsm"),
        pgd=rates("pgd", budgets),
        pgd_full_budget=rates("pgd")[FULL_BUDGET],
        apgd_dlr=rates("apgd-dlr"),
        pgd_long=rates("pgd-long"),
        noise=rates("noise"),
        transfer=rates("transfer"),
        cw_success=float(rows["cw"][None]["success_rate"]),
        cw_median=float(rows["cw"][None]["median_dist"]),
        decision={b: success_among(decision, decision.within(b)) for b in budgets},
        pgd_on_decision_inputs={
            b: success_among(outcome["pgd", b], outcome["pgd", b].broken, first=k) for b in budgets
        },
        n_decision=k,
        surrogate=sur.name,
        long_pgd=f"pgd-long ({settings.long_pgd_steps} steps x {getattr(settings, long.restarts_setting)} "
        f"starts; pgd {settings.pgd_steps} x {settings.pgd_restarts})",
    )
    checks = masking_checks(figures, thresholds)
    recorded = read_records(results_dir, "robustness", per_input=True)
    recorded = recorded[(recorded["dataset"] == dataset) & (recorded["model"] == path.name)]
    calibrated = calibrated_verdict_of(recorded.to_dict("records"), checks)
    masking, verdict = calibrated.verdict == "masked", calibrated.line
    table = [*checks, calibrated.check()]
    record_rows(
        results_dir,
        "diagnostics",
        [
            {
                "dataset": dataset,
                "model": path.name,
                "check": c.name,
                "value": c.value,
                "passed": c.passed,
                "detail": c.detail,
                "weights_sha256": meta["weights_sha256"],
            }
            for c in table
        ],
    )
    return Diagnosis(
        path, dataset, checks, masking, verdict, [row for a in rows for row in rows[a].values()], calibrated
    )
