"""The bridge from our pure-PyTorch attacks (APGD, Square, noise, the AutoAttack cascade) to
Foolbox 3, so that they run through the same runner, batching, metrics and records as Foolbox's.

A subclass sets `norm` and `seed` and writes `attack(forward, x, y, eps, generator)` on inputs
scaled to [0, 1]; `run` unwraps Foolbox's tensors and bounds, and wraps the result back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
import eagerpy as ep  # noqa: E402
import foolbox as fb  # noqa: E402

Forward = Callable[[Tensor], Tensor]
T = TypeVar("T")


def unwrap(model: Any, inputs: Any, criterion: Any) -> tuple[Tensor, Tensor, Any, Forward, float, float]:
    """Raw torch inputs scaled to [0, 1], labels, restore_type, a [0, 1] forward, bounds."""
    x_ep, restore_type = ep.astensor_(inputs)
    criterion = fb.attacks.base.get_criterion(criterion)
    if not isinstance(criterion, fb.criteria.Misclassification):
        raise ValueError(f"only the Misclassification criterion is supported, got {criterion!r}")
    lower, upper = (float(b) for b in model.bounds)
    scale = upper - lower
    x = (x_ep.raw - lower) / scale
    y = criterion.labels.raw

    def forward(t: Tensor) -> Tensor:
        return model(ep.astensor(lower + scale * t)).raw

    return x, y, restore_type, forward, lower, scale


def seeded_generator(seed: int | None, like: Tensor) -> torch.Generator | None:
    """A generator on `like`'s device seeded with `seed` (None: torch's global generator)."""
    if seed is None:
        return None
    return torch.Generator(device=like.device).manual_seed(seed)


class TorchFixedEpsilonAttack(fb.attacks.base.FixedEpsilonAttack):
    """A fixed-budget attack written in PyTorch, run by Foolbox (L-inf or L2 by `norm`)."""

    norm: str = "linf"
    seed: int | None = 0

    @property
    def distance(self) -> fb.distances.Distance:
        return fb.distances.linf if self.norm == "linf" else fb.distances.l2

    def attack(
        self, forward: Forward, x: Tensor, y: Tensor, eps: float, generator: torch.Generator | None
    ) -> Tensor:
        """The adversarial inputs (in [0, 1]) for inputs x in [0, 1], labels y, budget eps."""
        raise NotImplementedError

    def run(self, model: Any, inputs: T, criterion: Any, *, epsilon: float, **kwargs: Any) -> T:
        fb.attacks.base.raise_if_kwargs(kwargs)
        x, y, restore_type, forward, lower, scale = unwrap(model, inputs, criterion)
        adv = self.attack(forward, x, y, epsilon / scale, seeded_generator(self.seed, x))
        result: T = restore_type(ep.astensor(lower + scale * adv))
        return result
