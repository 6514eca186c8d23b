"""DP-SGD (Abadi et al. 2016) through Opacus: a teacher with a differential-privacy guarantee.

Each step samples a Poisson batch (every example independently with rate q = batch / n), clips
each example's gradient to L2 norm `max_grad_norm`, adds Gaussian noise of standard deviation
`noise_multiplier * max_grad_norm` to the sum and divides by the expected batch size. The noise
multiplier is the smallest that keeps the whole run within (epsilon, delta) under Opacus' RDP
accountant (Mironov 2017), which also reports the epsilon actually spent. Per-example norms come
from Opacus' ghost clipping (Li et al. 2022): for linear layers ||g_i|| = ||a_i|| ||delta_i||,
then one reweighted backward pass; the same clipped gradients as materialising them, about 8x
faster for an MLP on one CPU core.

Opacus is an optional dependency (`pip install 'defdistill[privacy]'`), imported when a DP
model is trained.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import DefdistillError

ACCOUNTANT = "rdp"


@dataclass(frozen=True)
class DPRecipe:
    """DP-SGD settings; Adam on the privatised gradients (post-processing keeps the guarantee)."""

    epsilon: float
    delta: float = 1e-5
    epochs: int = 30
    batch_size: int = 256  # the expected Poisson batch
    lr: float = 4e-3
    max_grad_norm: float = 1.0


@dataclass(frozen=True)
class DPResult:
    """What the accountant says about a finished DP-SGD run."""

    epsilon: float  # spent, as the RDP accountant computes it (<= the target)
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    accountant: str = ACCOUNTANT

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _opacus() -> Any:
    try:
        import opacus
    except ImportError as exc:
        raise DefdistillError(
            "differential privacy needs Opacus, which is not installed: pip install 'defdistill[privacy]'"
        ) from exc
    return opacus


@functools.lru_cache(maxsize=64)
def noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier the RDP accountant allows for the budget (a search, cached:
    every pipeline of a study asks the same question)."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps,
            accountant=ACCOUNTANT,
        )
    )  # fmt: skip


def check_dp_recipe(recipe: DPRecipe, n: int) -> None:
    """A budget the accountant can meet: epsilon > 0, 0 < delta < 1/n, batch <= n."""
    if not recipe.epsilon > 0:
        raise DefdistillError(f"--dp-epsilon must be > 0, got {recipe.epsilon}")
    if not 0 < recipe.delta < 1.0 / n:
        raise DefdistillError(f"delta must lie in (0, 1/n) = (0, {1.0 / n:.2g}), got {recipe.delta}")
    if not 0 < recipe.batch_size <= n:
        raise DefdistillError(f"the DP batch size must lie in [1, {n}], got {recipe.batch_size}")


def train_dp_sgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: DPRecipe, seed: int, device: torch.device
) -> DPResult:
    """Train `model` in place with DP-SGD on (x, y) at (recipe.epsilon, recipe.delta)."""
    # Opacus warns that the inputs need no gradient (true, harmless) and, for short runs, that the
    # optimal RDP order is the largest it tries (the bound is then slightly loose, never violated).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return _train_dp_sgd(model, x, y, recipe, seed, device)


def _train_dp_sgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: DPRecipe, seed: int, device: torch.device
) -> DPResult:
    _opacus()
    from opacus.accountants import RDPAccountant
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

    n = len(y)
    check_dp_recipe(recipe, n)
    q = recipe.batch_size / n
    steps = max(1, round(recipe.epochs / q))
    sigma = noise_multiplier(recipe.epsilon, recipe.delta, q, steps)
    model.to(device).train()
    wrapped = GradSampleModuleFastGradientClipping(
        model, max_grad_norm=recipe.max_grad_norm, use_ghost_clipping=True
    )
    noise = torch.Generator(device=device).manual_seed(seed + 1)
    optimizer = DPOptimizerFastGradientClipping(
        torch.optim.Adam(wrapped.parameters(), lr=recipe.lr),
        noise_multiplier=sigma,
        max_grad_norm=recipe.max_grad_norm,
        expected_batch_size=recipe.batch_size,
        generator=noise,
    )
    criterion = DPLossFastGradientClipping(wrapped, optimizer, nn.CrossEntropyLoss(reduction="mean"))
    accountant = RDPAccountant()
    optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=q))
    sampler = torch.Generator().manual_seed(seed)
    x, y = x.to(device), y.to(device)
    _steps(wrapped, optimizer, criterion, accountant, x, y, q, steps, sigma, sampler)
    wrapped._close()  # removes Opacus' hooks and per-sample state: `model` is a plain module again
    model.eval()
    return DPResult(
        epsilon=float(accountant.get_epsilon(recipe.delta)),
        delta=recipe.delta,
        noise_multiplier=sigma,
        sample_rate=q,
        steps=steps,
    )


def _steps(
    wrapped: Any, optimizer: Any, criterion: Any, accountant: Any, x: torch.Tensor, y: torch.Tensor,
    q: float, steps: int, sigma: float, sampler: torch.Generator,
) -> None:  # fmt: skip
    """The DP-SGD steps: a Poisson batch each, clipped and noised by the DP optimizer."""
    for _ in range(steps):
        chosen = (torch.rand(len(y), generator=sampler) < q).nonzero().squeeze(1).to(x.device)
        if len(chosen) == 0:  # an empty Poisson batch is a step too: account for it
            accountant.step(noise_multiplier=sigma, sample_rate=q)
            continue
        loss = criterion(wrapped(x[chosen]), y[chosen])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
