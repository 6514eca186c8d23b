"""The calibrated gradient-masking verdict: a paired test on the same inputs at every budget.

"Masked" means that the robustness the usual gradient attacks report (FGSM and cross-entropy
PGD) is higher than the per-input worst case over every attack by more than chance. At each
eps the inputs fall in four cells; only the discordant ones inform (McNemar): `b` inputs the
naive attacks leave standing but some attack breaks, `c` the reverse (zero when the worst case
includes the naive attacks, as here). The one-sided exact test asks whether b exceeds c by
more than chance; Holm's correction holds the family-wise error over the eps grid at alpha;
an effect below `min_effect` (absolute robust accuracy) is not called masking however
significant. "Not masked" needs the reverse evidence at every eps: the one-sided upper
confidence bound of the gap below `min_effect` (an intersection-union test: each eps at
level alpha, no correction needed). Anything else is inconclusive, with the number of inputs
that would settle it.

Structural signs (a saturated softmax, zero gradients, flat success as eps grows) explain a
verdict; they never make one alone. Everything here is a pure function of per-input flags.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from ..core.stats import clopper_pearson_upper, mcnemar_one_sided

VERDICTS = ("masked", "not-masked", "inconclusive")


@dataclass(frozen=True)
class VerdictThresholds:
    """alpha: family-wise error of the masking test (Holm over the eps grid) and the level of
    each equivalence bound; min_effect: the smallest gap, in absolute robust accuracy, that
    counts as masking (and the margin a gap must be shown to stay under)."""

    alpha: float = 0.05
    min_effect: float = 0.05


@dataclass(frozen=True)
class EpsTest:
    """The paired comparison of naive and worst-case robustness at one eps."""

    eps: float
    n: int
    naive_robust: int  # inputs the naive attacks leave standing
    worst_robust: int  # inputs no attack breaks
    discordant: int  # standing under the naive attacks, broken by another (b)
    reverse: int  # broken by the naive attacks, standing in the worst case (c; 0 by construction)
    p_value: float  # one-sided exact McNemar, b > c
    p_holm: float = math.nan  # Holm-adjusted over the grid
    upper: float = math.nan  # one-sided upper confidence bound of the gap

    @property
    def gap(self) -> float:
        """Naive minus worst-case robust accuracy."""
        return (self.discordant - self.reverse) / self.n if self.n else math.nan

    def as_dict(self) -> dict[str, float | int]:
        return {
            "eps": self.eps, "n": self.n, "naive_robust": self.naive_robust,
            "worst_robust": self.worst_robust, "discordant": self.discordant, "reverse": self.reverse,
            "gap": self.gap, "gap_upper": self.upper, "p_value": self.p_value, "p_holm": self.p_holm,
        }  # fmt: skip


def paired_test(
    eps: float,
    naive_robust: torch.Tensor,
    worst_robust: torch.Tensor,
    th: VerdictThresholds = VerdictThresholds(),
) -> EpsTest:
    """The test at one eps from per-input robust flags (same inputs, same order)."""
    naive, worst = naive_robust.bool(), worst_robust.bool()
    if naive.shape != worst.shape:
        raise ValueError(f"flags of different inputs: {tuple(naive.shape)} and {tuple(worst.shape)}")
    b = int((naive & ~worst).sum())
    c = int((~naive & worst).sum())
    n = len(naive)
    upper = clopper_pearson_upper(b, n, 1 - th.alpha) if n else math.nan
    return EpsTest(
        float(eps), n, int(naive.sum()), int(worst.sum()), b, c, mcnemar_one_sided(b, c), upper=upper
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (monotone, capped at 1), in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def grid_tests(
    flags: dict[float, tuple[torch.Tensor, torch.Tensor]], th: VerdictThresholds = VerdictThresholds()
) -> list[EpsTest]:
    """`paired_test` at every eps of {eps: (naive robust flags, worst-case robust flags)}, with
    Holm-adjusted p-values."""
    tests = [paired_test(e, naive, worst, th) for e, (naive, worst) in sorted(flags.items())]
    adjusted = holm([t.p_value for t in tests])
    return [replace(t, p_holm=p) for t, p in zip(tests, adjusted, strict=True)]


def masked_at(test: EpsTest, th: VerdictThresholds = VerdictThresholds()) -> bool:
    """Significant after Holm, and at least the minimum effect."""
    return test.p_holm < th.alpha and test.gap >= th.min_effect


def excluded_at(test: EpsTest, th: VerdictThresholds = VerdictThresholds()) -> bool:
    """A gap of min_effect or more is ruled out at this eps."""
    return test.upper < th.min_effect


def inputs_needed(test: EpsTest, m: int, th: VerdictThresholds = VerdictThresholds()) -> int:
    """About how many inputs would settle an undecided eps, if the observed gap held: enough
    discordant pairs for significance after Holm when the gap is at least min_effect, else
    enough inputs for the exact upper bound of the gap to fall below min_effect."""
    gap = max(test.gap, 0.0)
    if gap >= th.min_effect:  # p = 2^-b below alpha / m at b = log2(m / alpha)
        return math.ceil(math.log2(max(m, 1) / th.alpha) / gap)
    n = max(test.n, 1)
    while n < 10**8 and clopper_pearson_upper(math.ceil(gap * n), n, 1 - th.alpha) >= th.min_effect:
        n = math.ceil(n * 1.1)
    return n


def calibrated_verdict(
    tests: Sequence[EpsTest], th: VerdictThresholds = VerdictThresholds(), explanation: str = ""
) -> tuple[str, str]:
    """(verdict, one-sentence reason) from the grid's tests. `explanation` (structural signs
    measured elsewhere) is appended to a masked verdict's reason; it never changes the verdict."""
    if not tests:
        return "inconclusive", "no budget was tested"
    masked = [t for t in tests if masked_at(t, th)]
    if masked:
        t = max(masked, key=lambda t: t.gap)
        where = ", ".join(f"{t.eps:g}" for t in masked)
        reason = (
            f"FGSM and cross-entropy PGD overstate robustness: at eps {t.eps:g} they leave "
            f"{t.naive_robust / t.n:.3f} of the inputs standing but the per-input worst case only "
            f"{t.worst_robust / t.n:.3f} ({t.discordant} of {t.n} inputs broken only by other attacks, "
            f"Holm p = {t.p_holm:.2g}; masked at eps {where})"
        )
        return "masked", reason + (f"; {explanation}" if explanation else "")
    if all(excluded_at(t, th) for t in tests):
        t = max(tests, key=lambda t: t.upper)
        return "not-masked", (
            f"at every eps the naive attacks find what the worst case finds, within {th.min_effect:g}: "
            f"the largest gap is {max(x.gap for x in tests):.3f} and its upper "
            f"{1 - th.alpha:.0%} bound {t.upper:.3f} (eps {t.eps:g}, n = {t.n})"
        )
    undecided = [t for t in tests if not excluded_at(t, th)]
    t = max(undecided, key=lambda t: t.gap)
    need = max(inputs_needed(u, len(tests), th) for u in undecided)
    if t.gap >= th.min_effect:
        status = f"a gap of {t.gap:.3f} at eps {t.eps:g} is not significant (Holm p = {t.p_holm:.2g})"
    else:
        status = (
            f"the gap at eps {t.eps:g} ({t.gap:.3f}, upper bound {t.upper:.3f}) neither reaches "
            f"{th.min_effect:g} significantly nor is ruled out"
        )
    return "inconclusive", f"{status}: about {need} inputs (now {t.n}) would settle it"
