"""The metrics every table reports, each defined once: success rate, robust accuracy, the
perturbation distances, their Wilson intervals, and the per-input worst case over attacks.

An input counts as broken by an ensemble of attacks when any one of them broke it
(AutoAttack's `robust_flags`): the largest per-attack rate is only a lower bound on that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..core.stats import wilson_interval

# How far a minimal perturbation may exceed eps and still count as within it (float32 slack).
WITHIN_EPS_SLACK = 1e-6


def perturbation_norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example norm of a perturbation batch: L-inf, L2, or L0 as the fraction of features changed."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l0":
        return (flat != 0).float().mean(1)
    raise ValueError(f"unknown norm {norm!r}")


def attack_metrics(
    clean_correct: torch.Tensor, is_adv: torch.Tensor, distances: torch.Tensor
) -> dict[str, float | int]:
    """The contract's metrics from per-input outcomes, with 95% Wilson intervals.

    success_rate: adversarial examples found among the inputs classified correctly
    (Papernot's adversarial sample success rate); robust_acc: inputs still correct after the
    attack over all n; median_dist and mean_dist: of the successful examples' perturbations.
    """
    clean_correct, is_adv = clean_correct.bool(), is_adv.bool()
    n = len(clean_correct)
    n_correct = int(clean_correct.sum())
    success = clean_correct & is_adv
    n_success = int(success.sum())
    n_robust = n_correct - n_success
    robust_lo, robust_hi = wilson_interval(n_robust, n)
    success_lo, success_hi = wilson_interval(n_success, n_correct)
    kept = distances[success].double()
    return {
        "n": n,
        "clean_acc": n_correct / n if n else math.nan,
        "robust_acc": n_robust / n if n else math.nan,
        "success_rate": n_success / n_correct if n_correct else math.nan,
        # quantile, not Tensor.median: the latter returns the lower of the two middle values
        "median_dist": float(kept.quantile(0.5)) if n_success else math.nan,
        "mean_dist": float(kept.mean()) if n_success else math.nan,
        "robust_acc_lo": robust_lo,
        "robust_acc_hi": robust_hi,
        "success_lo": success_lo,
        "success_hi": success_hi,
    }


@dataclass(frozen=True)
class AttackOutcome:
    """Per-input results behind one row: clean correctness, success and perturbation norm."""

    attack: str
    norm: str
    eps: float | None
    clean_correct: torch.Tensor
    is_adv: torch.Tensor
    distances: torch.Tensor

    @property
    def broken(self) -> torch.Tensor:
        """Inputs classified correctly and made adversarial."""
        return self.clean_correct.bool() & self.is_adv.bool()

    def within(self, eps: float) -> torch.Tensor:
        """The broken inputs whose perturbation is at most eps (for minimisation attacks)."""
        return self.broken & (self.distances <= eps + WITHIN_EPS_SLACK)

    def success_within(self, eps: float) -> float:
        """Success rate counting only adversarial examples of norm <= eps."""
        return float(attack_metrics(self.clean_correct, self.within(eps), self.distances)["success_rate"])


def ensemble_metrics(clean_correct: torch.Tensor, broken: Sequence[torch.Tensor]) -> dict[str, float | int]:
    """Robust accuracy and success of the per-input union of attacks (an input is robust only
    if it is classified correctly and no attack broke it), with Wilson intervals."""
    clean_correct = clean_correct.bool()
    union = torch.zeros_like(clean_correct)
    for flags in broken:
        union |= flags.bool()
    union &= clean_correct
    n, n_correct, n_broken = len(clean_correct), int(clean_correct.sum()), int(union.sum())
    robust_lo, robust_hi = wilson_interval(n_correct - n_broken, n)
    success_lo, success_hi = wilson_interval(n_broken, n_correct)
    return {
        "ensemble_robust_acc": (n_correct - n_broken) / n if n else math.nan,
        "ensemble_success": n_broken / n_correct if n_correct else math.nan,
        "ensemble_robust_lo": robust_lo,
        "ensemble_robust_hi": robust_hi,
        "ensemble_success_lo": success_lo,
        "ensemble_success_hi": success_hi,
    }


def encode_flags(flags: torch.Tensor) -> str:
    """Per-input booleans as a compact string of 0s and 1s (kept in records)."""
    return "".join("1" if f else "0" for f in flags.bool().tolist())


def decode_flags(text: str) -> torch.Tensor:
    """The inverse of `encode_flags`."""
    return torch.tensor([c == "1" for c in text], dtype=torch.bool)
