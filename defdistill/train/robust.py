"""Adversarial-training and robust-distillation objectives, in pure PyTorch.

Every objective is a frozen dataclass called once per batch by the training loop::

    loss = objective(model, xb, targets_b, yb)
    loss.backward()
    optimizer.step()

``model`` is in train mode, ``xb`` is a float batch in [0, 1] of shape (B, C, H, W), ``yb`` the int64
labels and ``targets_b`` a per-example tensor: the labels for the adversarial-training objectives
(:class:`PGDAdversarialTraining`, :class:`TRADES`, which ignore it and use ``yb``) and the teacher's
logits on the clean ``xb`` for the robust-distillation objectives (:class:`ARD`, :class:`RSLAD`; the
teacher is not needed in the loop).

Contract of every objective:

* the adversarial examples are crafted with ``torch.autograd.grad`` w.r.t. the input only, so no
  parameter ``.grad`` is left behind by the crafting;
* the model is put in the mode the method's reference code crafts in (``craft_mode``, overridable),
  and is in train mode when the objective returns (also on an exception), the returned loss having been
  computed in train mode;
* the returned loss is a scalar with a graph to the model's parameters.

Training must not depend on the evaluation layer, so this module carries its own small L-inf PGD,
:func:`pgd_examples`, and imports nothing from ``defdistill``.

Which reference behaviour is followed (the implementations were read, not copied):

* PGD-AT (Madry et al. 2018): ``MadryLab/cifar10_challenge`` crafts with the training-mode graph, and
  so do the usual PyTorch ports and the ARD code below: ``craft_mode="train"`` (batch-norm uses batch
  statistics while crafting, and its running statistics see the intermediate PGD batches).
* TRADES (Zhang et al. 2019): ``yaodongyu/TRADES`` ``trades_loss`` calls ``model.eval()`` while crafting
  and ``model.train()`` before the loss: ``craft_mode="eval"``.
* ARD (Goldblum et al. 2020): ``goldblum/AdversariallyRobustDistillation`` ``main.py`` crafts with
  ``AttackPGD`` after ``net.train()`` (CE on the true labels, uniform random start): ``craft_mode="train"``.
* RSLAD (Zi et al. 2021): ``zibojia/RSLAD`` ``rslad_loss.py`` ``rslad_inner_loss`` calls
  ``model.eval()`` while crafting (KL to the teacher's soft labels, 0.001 * N(0, 1) start):
  ``craft_mode="eval"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ADVERSARIAL_METHODS",
    "ARD",
    "DEFAULT_BUDGETS",
    "ROBUST_DISTILLATION",
    "RSLAD",
    "TRADES",
    "Objective",
    "PGDAdversarialTraining",
    "check_budget",
    "default_budget",
    "pgd_examples",
]

CraftMode = Literal["train", "eval"]
KLReduction = Literal["batchmean", "mean"]
CraftLoss = Literal["ce", "kl"] | Callable[[Tensor, Tensor], Tensor]
Start = Literal["uniform", "normal", "none"]


class Objective(Protocol):
    """What the training loop needs from a training objective.

    ``needs_inputs = True`` tells ``defdistill.train.loop.fit`` to call it as
    ``objective(model, xb, targets_b, yb)`` rather than ``loss_fn(model(xb), targets_b, yb)``.
    """

    needs_inputs: ClassVar[bool]

    def __call__(self, model: nn.Module, x: Tensor, targets: Tensor, labels: Tensor) -> Tensor: ...

    def describe(self) -> dict[str, float | int | str]: ...


# --------------------------------------------------------------------------------------------- budgets


def check_budget(eps: float, steps: int, step_size: float, beta: float | None = None) -> None:
    """Validate an L-inf attack budget; raise ``ValueError`` with a one-line message on a bad value.

    Args:
        eps: radius of the L-inf ball, in input units (inputs live in [0, 1]); must be in [0, 1].
        steps: number of PGD steps; an integer >= 1.
        step_size: size of each sign step; finite and > 0.
        beta: TRADES' robust-term weight, when given; finite and >= 0.
    """
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be a number in [0, 1] (inputs are in [0, 1]), got {eps!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if (
        isinstance(step_size, bool)
        or not isinstance(step_size, int | float)
        or not math.isfinite(step_size)
        or step_size <= 0
    ):
        raise ValueError(f"step_size must be a finite number > 0, got {step_size!r}")
    if beta is not None and (
        isinstance(beta, bool) or not isinstance(beta, int | float) or not math.isfinite(beta) or beta < 0
    ):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")


def _madry_step(eps: float, steps: int) -> float:
    """Madry et al.'s rule of thumb: a step of 2.5 * eps / steps lets PGD cross the ball and back."""
    return 2.5 * eps / steps


DEFAULT_BUDGETS: dict[str, tuple[float, int, float]] = {
    # 8x8 inputs, trained in seconds: few steps, Madry's 2.5 * eps / steps step.
    "digits": (0.1, 5, _madry_step(0.1, 5)),
    # Madry et al. 2018's MNIST recipe.
    "mnist": (0.3, 40, 0.01),
    # The usual Fashion-MNIST budget eps = 0.1, with Madry's step rule over 20 steps.
    "fashion-mnist": (0.1, 20, _madry_step(0.1, 20)),
    # Madry/TRADES/ARD/RSLAD's CIFAR-10 training budget.
    "cifar10": (8 / 255, 10, 2 / 255),
}
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}


def default_budget(dataset: str) -> tuple[float, int, float]:
    """The default L-inf training budget ``(eps, steps, step_size)`` of a dataset.

    digits (0.1, 5, 0.05); mnist (0.3, 40, 0.01), Madry et al. 2018; fashion-mnist (0.1, 20, 0.0125);
    cifar10 (8/255, 10, 2/255). Raises ``ValueError`` for an unknown dataset.
    """
    key = dataset.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DEFAULT_BUDGETS:
        raise ValueError(f"no default budget for dataset {dataset!r}; known: {', '.join(DEFAULT_BUDGETS)}")
    return DEFAULT_BUDGETS[key]


def _check_craft_mode(craft_mode: str) -> None:
    if craft_mode not in ("train", "eval"):
        raise ValueError(f"craft_mode must be 'train' or 'eval', got {craft_mode!r}")


def _check_kl_reduction(kl_reduction: str) -> None:
    if kl_reduction not in ("batchmean", "mean"):
        raise ValueError(f"kl_reduction must be 'batchmean' or 'mean', got {kl_reduction!r}")


def _check_unit(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def _check_logits(targets: Tensor, labels: Tensor, method: str) -> None:
    if not targets.is_floating_point() or targets.dim() != 2 or targets.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{method} needs the teacher's logits (float, shape (B, classes)) as targets, "
            f"got {targets.dtype} of shape {tuple(targets.shape)}"
        )


# ------------------------------------------------------------------------------------------------- PGD


def _kl(student_logits: Tensor, reference_logits: Tensor, reduction: str, temperature: float = 1.0) -> Tensor:
    """KL(softmax(reference / T) || softmax(student / T)).

    ``"batchmean"`` is the divergence averaged over the batch (the papers' formulas); ``"mean"``
    averages over batch x classes, i.e. divides it by the number of classes as the ARD and RSLAD
    reference code does (``nn.KLDivLoss()`` / ``torch.mean`` of the element-wise terms).
    """
    return F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.softmax(reference_logits / temperature, dim=1),
        reduction=reduction,
    )


def pgd_examples(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float,
    loss: CraftLoss = "ce",
    start: Start = "uniform",
    generator: torch.Generator | None = None,
) -> Tensor:
    """L-inf projected gradient ascent (Madry et al. 2018) on a loss of ``model``; returns x' (detached).

    Starting from ``x`` plus ``start`` noise, take ``steps`` sign steps of ``step_size`` up the loss,
    each followed by projection onto {x' : |x' - x|_inf <= eps} ∩ [0, 1]^d. Gradients are taken with
    ``torch.autograd.grad`` w.r.t. the input only, so no parameter ``.grad`` is touched. The model's mode
    is left as it is: the caller chooses train or eval mode for the crafting.

    Args:
        model: maps (B, ...) inputs to (B, classes) logits.
        x: clean inputs in [0, 1].
        target: what the loss compares the logits with: int64 labels for ``loss="ce"``; reference logits
            (the model's own on x for TRADES, a teacher's for RSLAD) for ``loss="kl"``.
        eps, steps, step_size: the budget (see :func:`check_budget`).
        loss: ``"ce"`` cross-entropy with the labels (Madry, ARD); ``"kl"``
            KL(softmax(target) || softmax(model(x'))) (TRADES, RSLAD); or a callable
            ``(logits, target) -> scalar``. Built-in losses are summed over the batch, as in the
            references (under sign steps the reduction does not change x').
        start: ``"uniform"`` x + U(-eps, eps) (Madry); ``"normal"`` x + 0.001 * N(0, 1) (TRADES, RSLAD);
            ``"none"`` x itself. The start is projected onto the feasible set like every iterate.
        generator: draws the random start (deterministic with a seeded generator); the global RNG if None.
    """
    check_budget(eps, steps, step_size)
    if start not in ("uniform", "normal", "none"):
        raise ValueError(f"start must be 'uniform', 'normal' or 'none', got {start!r}")
    if isinstance(loss, str) and loss not in ("ce", "kl"):
        raise ValueError(f"loss must be 'ce', 'kl' or a callable, got {loss!r}")
    x0 = x.detach()
    target = target.detach()
    lower = torch.clamp(x0 - eps, min=0.0)
    upper = torch.clamp(x0 + eps, max=1.0)

    if start == "none":
        x_adv = x0.clone()
    else:
        noise_device = generator.device if generator is not None else x0.device
        if start == "uniform":
            noise = torch.rand(x0.shape, generator=generator, dtype=x0.dtype, device=noise_device)
            noise = (2.0 * noise - 1.0) * eps
        else:
            noise = 0.001 * torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=noise_device)
        x_adv = torch.min(torch.max(x0 + noise.to(x0.device), lower), upper)

    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x_adv)
            if loss == "ce":
                objective = F.cross_entropy(logits, target, reduction="sum")
            elif loss == "kl":
                objective = _kl(logits, target, "sum")
            else:
                assert callable(loss)
                objective = loss(logits, target)
            (grad,) = torch.autograd.grad(objective, [x_adv])
        x_adv = torch.min(torch.max(x_adv.detach() + step_size * grad.sign(), lower), upper)
    return x_adv.detach()


def _craft(
    model: nn.Module,
    craft_mode: CraftMode,
    x: Tensor,
    target: Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float,
    loss: CraftLoss,
    start: Start,
) -> Tensor:
    """Run :func:`pgd_examples` with the model in ``craft_mode``; the model is in train mode afterwards."""
    try:
        model.train(craft_mode == "train")
        return pgd_examples(
            model, x, target, eps=eps, steps=steps, step_size=step_size, loss=loss, start=start
        )
    finally:
        model.train()


# ----------------------------------------------------------------------------------- teachers' methods


@dataclass(frozen=True)
class PGDAdversarialTraining:
    """PGD adversarial training: Madry et al., "Towards Deep Learning Models Resistant to Adversarial
    Attacks", ICLR 2018.

    Optimises min_theta E[ max_{|x' - x|_inf <= eps} CE(f_theta(x'), y) ]: the inner max by L-inf PGD on
    the cross-entropy with the true labels (uniform random start, sign steps, projection onto the eps
    ball ∩ [0, 1]); the returned loss is the batch-mean CE on x' only, as in Madry's code.

    Args:
        eps, steps, step_size: the L-inf budget (see :func:`check_budget`, :func:`default_budget`).
        random_start: start PGD from x + U(-eps, eps) (Madry) rather than x.
        craft_mode: mode the model crafts in; ``"train"`` as in Madry's reference code.

    ``targets`` is ignored (the labels are used).
    """

    needs_inputs: ClassVar[bool] = True  # fit calls it with the model and the inputs
    eps: float
    steps: int
    step_size: float
    random_start: bool = True
    craft_mode: CraftMode = "train"

    def __post_init__(self) -> None:
        check_budget(self.eps, self.steps, self.step_size)
        _check_craft_mode(self.craft_mode)

    def __call__(self, model: nn.Module, x: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
        x_adv = _craft(
            model,
            self.craft_mode,
            x,
            labels,
            eps=self.eps,
            steps=self.steps,
            step_size=self.step_size,
            loss="ce",
            start="uniform" if self.random_start else "none",
        )
        return F.cross_entropy(model(x_adv), labels)

    def describe(self) -> dict[str, float | int | str]:
        return {
            "method": "pgd",
            "paper": "Madry et al. 2018",
            "eps": self.eps,
            "steps": self.steps,
            "step_size": self.step_size,
            "random_start": int(self.random_start),
            "craft_mode": self.craft_mode,
        }


@dataclass(frozen=True)
class TRADES:
    """TRADES: Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy",
    ICML 2019; follows the reference ``trades_loss`` (github yaodongyu/TRADES).

    Optimises CE(f(x), y) + beta * KL(f(x) || f(x')) where x' maximises KL(f(x) || f(x')) within the
    eps ball: PGD from x + 0.001 * N(0, 1), sign steps, projection and clamp to [0, 1], crafted in eval
    mode against the (fixed) clean prediction. In the loss both f(x) and f(x') are in train mode and the
    gradient flows through both sides of the KL, which is ``batchmean`` (sum / batch size). The clean
    logits are computed once (the reference computes them twice; identical unless the net has dropout).
    With ``beta == 0`` no example is crafted and the loss is exactly CE on the clean inputs.

    Args:
        eps, steps, step_size: the L-inf budget (see :func:`check_budget`).
        beta: weight of the robust (KL) term; 6.0 is the paper's CIFAR-10/MNIST choice (1/lambda).
        craft_mode: mode the model crafts in; ``"eval"`` as in the reference.

    ``targets`` is ignored (the labels are used).
    """

    needs_inputs: ClassVar[bool] = True  # fit calls it with the model and the inputs
    eps: float
    steps: int
    step_size: float
    beta: float = 6.0
    craft_mode: CraftMode = "eval"

    def __post_init__(self) -> None:
        check_budget(self.eps, self.steps, self.step_size, self.beta)
        _check_craft_mode(self.craft_mode)

    def __call__(self, model: nn.Module, x: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
        if self.beta == 0:
            model.train()
            return F.cross_entropy(model(x), labels)
        model.train(self.craft_mode == "train")
        try:
            with torch.no_grad():
                clean_reference = model(x)
        finally:
            model.train()
        x_adv = _craft(
            model,
            self.craft_mode,
            x,
            clean_reference,
            eps=self.eps,
            steps=self.steps,
            step_size=self.step_size,
            loss="kl",
            start="normal",
        )
        clean_logits = model(x)
        natural = F.cross_entropy(clean_logits, labels)
        robust = _kl(model(x_adv), clean_logits, "batchmean")
        return natural + self.beta * robust

    def describe(self) -> dict[str, float | int | str]:
        return {
            "method": "trades",
            "paper": "Zhang et al. 2019",
            "eps": self.eps,
            "steps": self.steps,
            "step_size": self.step_size,
            "beta": self.beta,
            "craft_mode": self.craft_mode,
        }


# ----------------------------------------------------------------------------------- students' methods


@dataclass(frozen=True)
class ARD:
    """Adversarially Robust Distillation: Goldblum, Fowl, Feizi & Goldstein, AAAI 2020; follows the
    reference ``main.py`` (github goldblum/AdversariallyRobustDistillation).

    Optimises alpha * T^2 * KL(softmax(t(x) / T) || softmax(s(x') / T)) + (1 - alpha) * CE(s(x), y),
    with t(x) the teacher's logits on the clean x (given as ``targets``) and x' crafted against the
    student by L-inf PGD on CE(s(x'), y) with the true labels (uniform random start, sign steps), in
    train mode, as the reference's ``AttackPGD`` does.

    Args:
        eps, steps, step_size: the L-inf budget (see :func:`check_budget`).
        T: distillation temperature (reference default 30).
        alpha: weight of the distillation term (the reference's command-line default is 1.0).
        kl_reduction: ``"batchmean"`` the KL of the paper's formula (default); ``"mean"`` the reference
            code's ``nn.KLDivLoss()`` scale, the same KL divided by the number of classes.
        craft_mode: mode the student crafts in; ``"train"`` as in the reference.
    """

    needs_inputs: ClassVar[bool] = True  # fit calls it with the model and the inputs
    eps: float
    steps: int
    step_size: float
    T: float = 30.0
    alpha: float = 0.95
    kl_reduction: KLReduction = "batchmean"
    craft_mode: CraftMode = "train"

    def __post_init__(self) -> None:
        check_budget(self.eps, self.steps, self.step_size)
        if isinstance(self.T, bool) or not isinstance(self.T, int | float) or not 0 < self.T < math.inf:
            raise ValueError(f"T must be a finite number > 0, got {self.T!r}")
        _check_unit("alpha", self.alpha)
        _check_kl_reduction(self.kl_reduction)
        _check_craft_mode(self.craft_mode)

    def __call__(self, model: nn.Module, x: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
        _check_logits(targets, labels, "ARD")
        teacher_logits = targets.detach()
        x_adv = _craft(
            model, self.craft_mode, x, labels, eps=self.eps, steps=self.steps, step_size=self.step_size,
            loss="ce", start="uniform",
        )  # fmt: skip
        distill = _kl(model(x_adv), teacher_logits, self.kl_reduction, self.T)
        loss = self.alpha * self.T * self.T * distill
        if self.alpha < 1:
            loss = loss + (1.0 - self.alpha) * F.cross_entropy(model(x), labels)
        return loss

    def describe(self) -> dict[str, float | int | str]:
        return {
            "method": "ard",
            "paper": "Goldblum et al. 2020",
            "eps": self.eps,
            "steps": self.steps,
            "step_size": self.step_size,
            "T": self.T,
            "alpha": self.alpha,
            "kl_reduction": self.kl_reduction,
            "craft_mode": self.craft_mode,
        }


@dataclass(frozen=True)
class RSLAD:
    """Robust Soft Label Adversarial Distillation: Zi, Zhao, Ma & Jiang, "Revisiting Adversarial
    Robustness Distillation: Robust Soft Labels Make Student Better", ICCV 2021; follows the reference
    ``rslad_loss.py`` and ``resnet18_rslad_cifar10.py`` (github zibojia/RSLAD).

    The robust soft labels are the teacher's clean softmax p_t = softmax(t(x)) (T = 1; teacher logits
    given as ``targets``). x' maximises KL(p_t || softmax(s(x'))) by L-inf PGD from x + 0.001 * N(0, 1)
    (sign steps, projection, clamp), crafted in eval mode. Optimises

        robust_weight * KL(p_t || s(x')) + (1 - robust_weight) * KL(p_t || s(x)),

    with the reference's robust_weight = 5/6. The labels are not used.

    Args:
        eps, steps, step_size: the L-inf budget (see :func:`check_budget`).
        robust_weight: weight of the adversarial KL term (5/6 in the paper and code).
        kl_reduction: ``"batchmean"`` the KL (default); ``"mean"`` the reference code's scale, which
            averages the element-wise terms over batch x classes (the KL divided by the number of classes).
        craft_mode: mode the student crafts in; ``"eval"`` as in the reference.
    """

    needs_inputs: ClassVar[bool] = True  # fit calls it with the model and the inputs
    eps: float
    steps: int
    step_size: float
    robust_weight: float = 5.0 / 6.0
    kl_reduction: KLReduction = "batchmean"
    craft_mode: CraftMode = "eval"

    def __post_init__(self) -> None:
        check_budget(self.eps, self.steps, self.step_size)
        _check_unit("robust_weight", self.robust_weight)
        _check_kl_reduction(self.kl_reduction)
        _check_craft_mode(self.craft_mode)

    def __call__(self, model: nn.Module, x: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
        _check_logits(targets, labels, "RSLAD")
        teacher_logits = targets.detach()
        x_adv = _craft(
            model, self.craft_mode, x, teacher_logits, eps=self.eps, steps=self.steps,
            step_size=self.step_size, loss="kl", start="normal",
        )  # fmt: skip
        robust = _kl(model(x_adv), teacher_logits, self.kl_reduction)
        natural = _kl(model(x), teacher_logits, self.kl_reduction)
        return self.robust_weight * robust + (1.0 - self.robust_weight) * natural

    def describe(self) -> dict[str, float | int | str]:
        return {
            "method": "rslad",
            "paper": "Zi et al. 2021",
            "eps": self.eps,
            "steps": self.steps,
            "step_size": self.step_size,
            "robust_weight": self.robust_weight,
            "kl_reduction": self.kl_reduction,
            "craft_mode": self.craft_mode,
        }


# ---------------------------------------------------------------------------------------------- registry

#: Adversarial training methods for teachers (or any model trained on labels).
ADVERSARIAL_METHODS: dict[str, Callable[..., Objective]] = {
    "pgd": PGDAdversarialTraining,
    "trades": TRADES,
}

#: Robust distillation methods for students (``targets`` = the teacher's clean logits).
ROBUST_DISTILLATION: dict[str, Callable[..., Objective]] = {
    "ard": ARD,
    "rslad": RSLAD,
}
