"""Random noise within the budget: the floor every attack must beat.

If k random corners of the L-inf ball (or k random points on the L2 sphere) already change the
prediction of an undefended network, a budget says nothing about robustness (Carlini et al.
2019: "random noise should not beat the white-box attack", and a budget at which it breaks the
undefended model is too large to be informative).
"""

from __future__ import annotations

import os
from typing import Any

import torch

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

from .adapter import Forward, TorchFixedEpsilonAttack  # noqa: E402


def random_noise_attack(
    forward: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    draws: int = 100,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Best of `draws` random perturbations of size eps: L-inf corners x + eps * (+/-1) per
    feature, or L2 points x + eps * u with u uniform on the unit sphere; clipped to [0, 1].

    Returns, per input, the first draw that is misclassified, else the last draw. Shapes:
    x (N, C, H, W) in [0, 1], y (N,). `forward` maps inputs to logits; it is called without
    gradients, so the attack never sees one.
    """
    adversarial = x.clone()
    found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    with torch.no_grad():
        for _ in range(draws):
            todo = ~found
            if not todo.any():
                break
            xs = x[todo]
            if norm == "linf":
                signs = torch.randint(0, 2, xs.shape, generator=generator, device=x.device)
                delta = eps * (2 * signs.to(x.dtype) - 1)
            else:
                direction = torch.randn(xs.shape, generator=generator, device=x.device, dtype=x.dtype)
                delta = eps * direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            candidate = (xs + delta).clamp(0, 1)
            hit = forward(candidate).argmax(1) != y[todo]
            adversarial[todo] = candidate
            index = todo.nonzero().squeeze(1)
            found[index[hit]] = True
    return adversarial


class RandomNoise(TorchFixedEpsilonAttack):
    """`random_noise_attack` for Foolbox 3 (keyword-only: norm, draws, seed)."""

    def __init__(self, *, norm: str = "linf", draws: int = 100, seed: int | None = 0) -> None:
        if norm not in ("linf", "l2"):
            raise ValueError(f"random noise supports linf and l2, not {norm!r}")
        if draws < 1:
            raise ValueError(f"draws must be >= 1, got {draws}")
        self.norm, self.draws, self.seed = norm, draws, seed

    def attack(
        self, forward: Forward, x: torch.Tensor, y: torch.Tensor, eps: float, generator: Any
    ) -> torch.Tensor:
        return random_noise_attack(
            forward, x, y, eps=eps, norm=self.norm, draws=self.draws, generator=generator
        )
