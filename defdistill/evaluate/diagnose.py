"""Is a model robust, or are its gradients masked? The checks of Carlini et al. (2019).

Carlini, Athalye, Papernot et al. 2019, "On Evaluating Adversarial Robustness", list the signs
that an evaluation measures a broken attack rather than a robust model; Carlini & Wagner (2016,
2017) showed that defensive distillation passes a naive evaluation through exactly these
(its softmax saturates at T=1, so cross-entropy gradients vanish). `diagnose_model` measures
each sign on one model, runs the attacks it needs (reusing rows already recorded for the same
inputs), writes results/diagnostics.{csv,md} and ends with a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..checks import check_eps
from ..core.fileio import ensure_writable_dir
from ..core.progress import SILENT, ProgressReporter
from ..data.registry import get_dataset_spec, load_dataset
from ..store.tables import read_records, record_rows
from .attacks import (
    ATTACKS,
    DEFAULT_EPS,
    AttackOutcome,
    AttackSettings,
    load_surrogate,
    load_target,
    run_attack,
)

# The attacks the checks compare; all but `hsj` are reused from recorded rows when present.
DIAGNOSIS_ATTACKS = ("fgsm", "pgd", "pgd-margin", "transfer", "cw", "hsj")
MASKING_VERDICT = "robustness is likely gradient masking"
NO_MASKING_VERDICT = "no sign of gradient masking found"


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
    tolerance: float = 0.05  # iterative vs single-step; success growing with eps
    black_box_tolerance: float = 0.1  # black-box success above white-box
    unbounded_success: float = 0.95  # an unbounded attack must reach about 100%
    margin_gap: float = 0.2  # margin-loss PGD above cross-entropy PGD at one eps


@dataclass(frozen=True)
class Check:
    """One row of results/diagnostics: a measurement, whether it passed, and why."""

    name: str
    value: float
    passed: bool
    detail: str


@dataclass
class Diagnosis:
    """What `diagnose_model` measured, concluded and recorded."""

    model_path: Path
    dataset: str
    checks: list[Check]
    masking: bool
    verdict: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # the attack rows the checks read


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


def _worst_excess(stronger: dict[float, float], weaker: dict[float, float]) -> tuple[float, float | None]:
    """Largest stronger[eps] - weaker[eps] over the budgets both have, and that budget."""
    pairs = [
        (stronger[e] - weaker[e], e)
        for e in sorted(stronger)
        if e in weaker and not math.isnan(stronger[e] - weaker[e])
    ]
    return max(pairs) if pairs else (math.nan, None)


def masking_checks(
    success: dict[str, dict[float, float]],
    zero_fraction: float,
    saturated_fraction: float,
    n_correct: int,
    cw: dict[str, Any],
    decision: AttackOutcome,
    surrogate: str,
    thresholds: Thresholds = Thresholds(),
) -> list[Check]:
    """The checklist from measured figures. `success[attack][eps]` are success rates."""
    th = thresholds
    checks = [
        Check(
            "gradient_zero",
            zero_fraction,
            zero_fraction <= th.zero_gradient,
            f"{_fmt(zero_fraction)} of {n_correct} correctly classified inputs have an exactly-zero "
            "cross-entropy input gradient",
        ),
        Check(
            "softmax_saturated",
            saturated_fraction,
            saturated_fraction <= th.saturated,
            f"{_fmt(saturated_fraction)} of them have a softmax saturated at exactly 1.0 in float32",
        ),
    ]

    excess, at = _worst_excess(success["fgsm"], success["pgd"])
    detail = (
        f"pgd at least as strong as fgsm at every eps (largest fgsm excess {_fmt(excess)} at eps {at})"
        if excess <= th.tolerance
        else f"single-step fgsm beats iterative pgd: {_fmt(success['fgsm'][at])} vs "
        f"{_fmt(success['pgd'][at])} at eps {at}"
    )
    checks.append(Check("iterative_vs_single_step", excess, excess <= th.tolerance, detail))

    drops = []
    for attack in ("fgsm", "pgd", "pgd-margin", "transfer"):
        budgets = sorted(success[attack])
        drops += [
            (success[attack][a] - success[attack][b], attack, a, b)
            for a, b in zip(budgets, budgets[1:], strict=False)
        ]
    drop, attack, low, high = max(drops) if drops else (math.nan, None, None, None)
    detail = (
        f"success grows with eps for fgsm, pgd, pgd-margin and transfer (largest drop {_fmt(drop)})"
        if drop <= th.tolerance
        else f"{attack} success falls from {_fmt(success[attack][low])} at eps {low} "
        f"to {_fmt(success[attack][high])} at eps {high}"
    )
    checks.append(Check("success_grows_with_eps", drop, drop <= th.tolerance, detail))

    rate = cw["success_rate"]
    checks.append(
        Check(
            "unbounded_reaches_100",
            rate,
            rate >= th.unbounded_success,
            f"unbounded cw (L2) success {_fmt(rate)}, median L2 {_fmt(cw['median_dist'])}"
            + (
                ""
                if rate >= th.unbounded_success
                else f": below {th.unbounded_success}, the attack is failing"
            ),
        )
    )

    excess, at = _worst_excess(success["transfer"], success["pgd"])
    ok = excess <= th.black_box_tolerance
    checks.append(
        Check(
            "black_box_transfer",
            excess,
            ok,
            f"transfer from {surrogate} is never far above white-box pgd (largest excess {_fmt(excess)})"
            if ok
            else f"black-box transfer from {surrogate} beats white-box pgd: "
            f"{_fmt(success['transfer'][at])} vs {_fmt(success['pgd'][at])} at eps {at}",
        )
    )

    within = {e: decision.success_within(e) for e in success["pgd"]}
    excess, at = _worst_excess(within, success["pgd"])
    ok = excess <= th.black_box_tolerance
    n_decision = len(decision.clean_correct)
    checks.append(
        Check(
            "black_box_decision",
            excess,
            ok,
            f"decision-based hsj (first {n_decision} inputs) is never far above white-box pgd "
            f"(largest excess {_fmt(excess)})"
            if ok
            else f"gradient-free hsj beats white-box pgd: {_fmt(within[at])} (first {n_decision} inputs) "
            f"vs {_fmt(success['pgd'][at])} at eps {at}",
        )
    )

    excess, at = _worst_excess(success["pgd-margin"], success["pgd"])
    ok = excess <= th.margin_gap
    checks.append(
        Check(
            "margin_vs_cross_entropy",
            excess,
            ok,
            f"margin-loss pgd is never far above cross-entropy pgd (largest excess {_fmt(excess)})"
            if ok
            else f"margin-loss pgd beats cross-entropy pgd: "
            f"{_fmt(success['pgd-margin'][at])} vs {_fmt(success['pgd'][at])} at eps {at}",
        )
    )
    return checks


def verdict_of(checks: Sequence[Check]) -> tuple[bool, str]:
    """(masking, verdict line) from the checks: any failed check is evidence of masking."""
    failed = [c for c in checks if not c.passed]
    if not failed:
        return False, f"{NO_MASKING_VERDICT}: all {len(checks)} checks passed"
    evidence = "; ".join(c.detail for c in failed)
    return True, f"{MASKING_VERDICT} ({len(failed)} of {len(checks)} checks failed): {evidence}"


def _recorded(
    results_dir: Path,
    dataset: str,
    model: str,
    attack: str,
    budgets: Sequence[float | None],
    n: int,
    surrogate: str,
) -> list[dict[str, Any]] | None:
    """The recorded rows of one attack on these n inputs and budgets, or None if any is missing."""
    frame = read_records(results_dir, "robustness")
    if frame.empty:
        return None
    frame = frame[(frame["dataset"] == dataset) & (frame["model"] == model) & (frame["attack"] == attack)]
    frame = frame[frame["n"] == n]
    if ATTACKS[attack].uses_surrogate:
        frame = frame[frame["surrogate"] == surrogate] if "surrogate" in frame.columns else frame.iloc[0:0]
    rows = []
    for budget in budgets:
        match = frame[frame["eps"].isna()] if budget is None else frame[(frame["eps"] - budget).abs() < 1e-9]
        if match.empty:
            return None
        rows.append(match.iloc[0].to_dict())
    return rows


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

    Attack rows already recorded for the same model, n and budgets are reused (`fresh=True`
    runs them again); missing ones are run and recorded in results/robustness as well.
    """
    get_dataset_spec(dataset)
    budgets = sorted(check_eps(eps))
    path, net, meta, torch_device = load_target(model, dataset, T, n, seed, runs_dir, device)
    sur = load_surrogate(surrogate, dataset, runs_dir, torch_device)
    settings = replace(settings, model_T=float(meta["T"]), surrogate=sur)
    results_dir = ensure_writable_dir(results_dir, "--results-dir")
    x, y = load_dataset(dataset, "test", data_dir)
    if n is not None:
        x, y = x[:n], y[:n]

    correct, zero, saturated = gradient_measurements(net, x, y, torch_device)
    identity = {"dataset": dataset, "model": path.name, "role": meta["role"], "T": float(meta["T"])}
    rows: dict[str, list[dict[str, Any]]] = {}
    outcomes: list[AttackOutcome] = []
    for attack in DIAGNOSIS_ATTACKS:
        spec = ATTACKS[attack]
        wanted: list[float | None] = list(budgets) if spec.bounded else [None]
        # the decision-based check needs per-input distances, which records do not keep
        found = (
            None
            if fresh or attack == "hsj"
            else _recorded(results_dir, dataset, path.name, attack, wanted, len(x), sur.name)
        )
        if found is None:
            found = [
                identity | row
                for row in run_attack(
                    net,
                    x,
                    y,
                    attack,
                    budgets,
                    settings,
                    torch_device,
                    seed,
                    progress,
                    outcomes=outcomes if attack == "hsj" else None,
                )
            ]
            record_rows(results_dir, "robustness", found)
        rows[attack] = found

    success = {
        a: {r["eps"]: float(r["success_rate"]) for r in rows[a]}
        for a in DIAGNOSIS_ATTACKS
        if ATTACKS[a].bounded
    }
    checks = masking_checks(
        success,
        _fraction(zero, correct),
        _fraction(saturated, correct),
        int(correct.sum()),
        rows["cw"][0],
        outcomes[0],
        sur.name,
        thresholds,
    )
    masking, verdict = verdict_of(checks)
    failed = sum(not c.passed for c in checks)
    table = [*checks, Check("verdict", float(failed), not masking, verdict)]
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
            }
            for c in table
        ],
    )
    return Diagnosis(path, dataset, checks, masking, verdict, [r for a in DIAGNOSIS_ATTACKS for r in rows[a]])
