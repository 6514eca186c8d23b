"""AutoAttack's standard cascade (Croce & Hein 2020): APGD-CE, then APGD-T (targeted DLR over
the 9 top other classes), then Square (5,000 queries), each on the inputs still standing.

FAB-T, the third member of the reference cascade, is not included: no implementation of it is
available here. The reference evaluations find it rarely breaks an input that APGD-T left
standing; the rows record the cascade that ran (`AUTOATTACK_VERSION`).
"""

from __future__ import annotations

import os
from typing import Any

import torch

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

from .adapter import Forward, TorchFixedEpsilonAttack  # noqa: E402
from .apgd import apgd_attack, apgd_targeted  # noqa: E402
from .square import square_attack  # noqa: E402

AUTOATTACK_VERSION = "standard: apgd-ce, apgd-t (9 targets), square; no fab-t"


def autoattack(
    forward: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    n_target_classes: int = 9,
    square_queries: int = 5000,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run the cascade; return per input the adversarial example of the first attack that found
    one (the input itself where none did). Shapes: x (N, C, H, W) in [0, 1], y (N,)."""
    adversarial = x.clone()

    def standing() -> torch.Tensor:
        with torch.no_grad():
            return forward(adversarial).argmax(1) == y

    stages = (
        lambda xs, ys: apgd_attack(forward, xs, ys, eps=eps, norm=norm, loss="ce", steps=steps,
                                   generator=generator),
        lambda xs, ys: apgd_targeted(forward, xs, ys, eps=eps, norm=norm, steps=steps,
                                     n_target_classes=n_target_classes, generator=generator),
        lambda xs, ys: square_attack(forward, xs, ys, eps=eps, norm=norm, n_queries=square_queries,
                                     generator=generator),
    )  # fmt: skip
    for stage in stages:
        todo = standing()
        if not todo.any():
            break
        adversarial[todo] = stage(x[todo], y[todo]).detach()
    return adversarial


class AutoAttack(TorchFixedEpsilonAttack):
    """`autoattack` for Foolbox 3 (keyword-only: norm, steps, n_target_classes, square_queries, seed)."""

    def __init__(
        self,
        *,
        norm: str = "linf",
        steps: int = 100,
        n_target_classes: int = 9,
        square_queries: int = 5000,
        seed: int | None = 0,
    ) -> None:
        self.norm, self.steps, self.n_target_classes = norm, steps, n_target_classes
        self.square_queries, self.seed = square_queries, seed

    def attack(
        self, forward: Forward, x: torch.Tensor, y: torch.Tensor, eps: float, generator: Any
    ) -> torch.Tensor:
        return autoattack(
            forward, x, y, eps=eps, norm=self.norm, steps=self.steps, n_target_classes=self.n_target_classes,
            square_queries=self.square_queries, generator=generator,
        )  # fmt: skip
