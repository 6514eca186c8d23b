"""Auto-PGD (APGD-CE, APGD-DLR, APGD-T) in pure PyTorch, with Foolbox 3 adapters.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020 (https://arxiv.org/abs/2003.01690). The update rule, the
step-size checkpoints, the random starts and the losses follow the authors' reference code
(``autoattack/autopgd_base.py`` of fra31/auto-attack) for the L-inf and L2 threat models.

Inputs live in [0, 1]; ``forward`` maps a batch of inputs to logits. Everything is vectorised
over the batch that the caller gives; the caller batches.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


from .adapter import Forward, TorchFixedEpsilonAttack  # noqa: E402

__all__ = ["APGD", "APGDT", "apgd_attack", "apgd_targeted", "dlr_loss", "dlr_targeted_loss"]

T = TypeVar("T")

NORMS = ("linf", "l2")
UNTARGETED_LOSSES = ("ce", "dlr")
TARGETED_LOSSES = ("ce-t", "dlr-t")
LOSSES = UNTARGETED_LOSSES + TARGETED_LOSSES


# --- losses -------------------------------------------------------------------------------


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference-of-logits-ratio loss, per input (to be maximised).

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` with ``pi`` the logits sorted in
    descending order. Invariant to shifting and (positive) scaling of the logits.

    Shape:
        - logits: (N, K), K >= 3. - y: (N,) int64. - return: (N,).
    """
    z_sorted, ind_sorted = logits.sort(dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    top_is_y = ind_sorted[:, -1] == y
    z_other = torch.where(top_is_y, z_sorted[:, -2], z_sorted[:, -1])
    return -(z_y - z_other) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


def dlr_targeted_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR loss, per input (to be maximised).

    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``.

    Shape:
        - logits: (N, K), K >= 4. - y, target: (N,) int64. - return: (N,).
    """
    z_sorted = logits.sort(dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + 1e-12)


def _loss_fn(loss: str) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    def ce(z: Tensor, y: Tensor, t: Tensor | None) -> Tensor:
        return torch.nn.functional.cross_entropy(z, y, reduction="none")

    def ce_t(z: Tensor, y: Tensor, t: Tensor | None) -> Tensor:
        assert t is not None
        return -torch.nn.functional.cross_entropy(z, t, reduction="none")

    def dlr(z: Tensor, y: Tensor, t: Tensor | None) -> Tensor:
        return dlr_loss(z, y)

    def dlr_t(z: Tensor, y: Tensor, t: Tensor | None) -> Tensor:
        assert t is not None
        return dlr_targeted_loss(z, y, t)

    table = {"ce": ce, "ce-t": ce_t, "dlr": dlr, "dlr-t": dlr_t}
    if loss not in table:
        raise ValueError(f"unknown loss {loss!r}: choose one of {', '.join(table)}")
    return table[loss]


# --- geometry -----------------------------------------------------------------------------


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def _normalize(v: Tensor, norm: str) -> Tensor:
    flat = v.flatten(1)
    n = flat.abs().amax(dim=1) if norm == "linf" else flat.norm(p=2, dim=1)
    return v / (_bcast(n, v) + 1e-12)


def _project(x: Tensor, v: Tensor, eps: float, norm: str) -> Tensor:
    """AutoAttack's projection: onto the eps-ball around x, then into [0, 1]."""
    if norm == "linf":
        return torch.clamp(torch.min(torch.max(v, x - eps), x + eps), 0.0, 1.0)
    d = v - x
    length = d.flatten(1).norm(p=2, dim=1)
    return torch.clamp(x + _normalize(d, "l2") * _bcast(length.clamp(max=eps), d), 0.0, 1.0)


def _random(shape: torch.Size, like: Tensor, generator: torch.Generator | None, gaussian: bool) -> Tensor:
    device = generator.device if generator is not None else like.device
    fn = torch.randn if gaussian else torch.rand
    return fn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def _check(eps: float, norm: str, steps: int, restarts: int, rho: float) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}: choose one of {', '.join(NORMS)}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps and restarts must be >= 1, got {steps} and {restarts}")
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"rho must lie in (0, 1], got {rho}")


# --- one run ------------------------------------------------------------------------------


def _random_start(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """AutoAttack's random start: L-inf uniform in [-1, 1]^d rescaled to sup-norm eps; L2 a
    Gaussian direction of length eps; then into [0, 1]."""
    t = _random(x.shape, x, generator, gaussian=norm == "l2")
    if norm == "linf":
        t = 2 * t - 1
    return torch.clamp(x + eps * _normalize(t, norm), 0.0, 1.0)


def _momentum_step(
    x: Tensor, x_adv: Tensor, x_prev: Tensor, grad: Tensor, step: Tensor, eps: float, norm: str, first: bool
) -> Tensor:
    """One APGD iterate: a gradient step of size `step` (the sign for L-inf, the normalised
    gradient for L2), projected, then momentum 0.75 toward it (1.0 on the first step), projected."""
    a = 1.0 if first else 0.75
    direction = grad.sign() if norm == "linf" else _normalize(grad, "l2")
    z = _project(x, x_adv + _bcast(step, x) * direction, eps, norm)
    return _project(x, x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), eps, norm)


class _BestLoss:
    """Per input, the point of highest loss so far and its gradient: where a step-size
    reduction restarts from."""

    def __init__(self, x: Tensor, grad: Tensor, loss: Tensor) -> None:
        self.x, self.grad, self.loss = x.clone(), grad.clone(), loss.clone()

    def update(self, x: Tensor, grad: Tensor, loss: Tensor) -> None:
        improved = loss > self.loss
        self.x = torch.where(_bcast(improved, x), x, self.x)
        self.grad = torch.where(_bcast(improved, x), grad, self.grad)
        self.loss = torch.where(improved, loss, self.loss)


class _StepSize:
    """APGD's step-size schedule: per-input steps from 2 eps, checked at checkpoints every k
    iterations (k from 0.22 steps, shrinking by 0.03 steps to at least 0.06 steps). At a
    checkpoint the step halves where the loss oscillated (it rose in at most rho * k of the
    iterations) or stalled (no halving last time and no better best loss since)."""

    def __init__(self, loss: Tensor, steps: int, eps: float, rho: float, dtype: torch.dtype) -> None:
        n, device = loss.shape[0], loss.device
        self.step = torch.full((n,), 2.0 * eps, dtype=dtype, device=device)  # the inputs' dtype
        self.k = max(int(0.22 * steps), 1)
        self.k_min = max(int(0.06 * steps), 1)
        self.k_decr = max(int(0.03 * steps), 1)
        self.rho = rho
        self.counter = 0
        self.n_increase = torch.zeros(n, dtype=torch.long, device=device)
        self.loss_prev = loss.clone()
        self.loss_best_last_check = loss.clone()
        self.reduced_last_check = torch.ones(n, dtype=torch.bool, device=device)

    def update(self, loss: Tensor, loss_best: Tensor) -> Tensor | None:
        """Count the iteration; at a checkpoint, the inputs whose step was halved (else None)."""
        self.n_increase += (loss > self.loss_prev).long()
        self.loss_prev = loss
        self.counter += 1
        if self.counter != self.k:
            return None
        oscillating = self.n_increase <= self.k * self.rho
        stalled = ~self.reduced_last_check & (self.loss_best_last_check >= loss_best)
        reduce = oscillating | stalled
        self.reduced_last_check = reduce
        self.loss_best_last_check = loss_best.clone()
        self.step = torch.where(reduce, self.step / 2.0, self.step)
        self.k = max(self.k - self.k_decr, self.k_min)
        self.counter = 0
        self.n_increase.zero_()
        return reduce


def _single_run(
    forward: Forward,
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    *,
    eps: float,
    norm: str,
    loss: str,
    steps: int,
    rho: float,
    success_is_target: bool,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """One APGD run from a random start; returns (adversarial points, success mask)."""
    loss_fn = _loss_fn(loss)
    x = x.detach()

    def evaluate(point: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with torch.enable_grad():
            p = point.detach().requires_grad_(True)
            logits = forward(p)
            losses = loss_fn(logits, y, target)
            (grad,) = torch.autograd.grad(losses.sum(), p)
        return logits.detach(), losses.detach(), grad.detach()

    def succeeded(logits: Tensor) -> Tensor:
        pred = logits.argmax(dim=1)
        if success_is_target:
            assert target is not None
            return pred == target
        return pred != y

    x_adv = _random_start(x, eps, norm, generator)
    logits, loss_cur, grad = evaluate(x_adv)
    success, found = succeeded(logits), x_adv.clone()  # the last adversarial point of each input
    best, schedule = _BestLoss(x_adv, grad, loss_cur), _StepSize(loss_cur, steps, eps, rho, x.dtype)
    x_prev = x_adv.clone()
    for i in range(steps):
        x_adv, x_prev = _momentum_step(x, x_adv, x_prev, grad, schedule.step, eps, norm, first=i == 0), x_adv
        logits, loss_cur, grad = evaluate(x_adv)
        hit = succeeded(logits)
        found = torch.where(_bcast(hit, x), x_adv, found)
        success = success | hit
        best.update(x_adv, grad, loss_cur)
        reduce = schedule.update(loss_cur, best.loss)
        if reduce is not None:  # halved steps restart from the best point
            x_adv = torch.where(_bcast(reduce, x), best.x, x_adv)
            grad = torch.where(_bcast(reduce, x), best.grad, grad)
    return found, success


def _clean_logits(forward: Forward, x: Tensor) -> Tensor:
    with torch.no_grad():
        return forward(x).detach()


# --- public functional API ----------------------------------------------------------------


def apgd_attack(
    forward: Forward,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    loss: str = "ce",
    steps: int = 100,
    restarts: int = 1,
    rho: float = 0.75,
    target: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """APGD (Croce & Hein 2020, https://arxiv.org/abs/2003.01690), L-inf or L2.

    Untargeted with ``loss`` "ce" (APGD-CE) or "dlr" (APGD-DLR): an input is broken when it is
    misclassified. Targeted with ``loss`` "dlr-t" or "ce-t" and ``target``: broken when it is
    classified as its target. Inputs already broken before the attack are returned unchanged;
    every restart runs only on the inputs not yet broken.

    Distance: L-inf (``norm="linf"``) or L2 (``norm="l2"``), at most ``eps``; inputs stay in [0, 1].

    Arguments:
        forward: maps a batch in [0, 1] to logits; must be differentiable.
        x: clean inputs in [0, 1]. y: true labels.
        eps: radius of the threat model. norm: "linf" or "l2".
        loss: "ce", "dlr" (untargeted) or "dlr-t", "ce-t" (targeted, need ``target``).
        steps: iterations per restart (default 100). restarts: random restarts (default 1).
        rho: the oscillation threshold of the step-size checkpoints (default 0.75).
        target: target labels of a targeted attack. generator: the random starts' generator.

    Shape:
        - x: (N, C, H, W) (any (N, ...)) float in [0, 1]. - y, target: (N,) int64.
        - return: (N, ...) like x: the adversarial inputs found, x itself where none was.
    """
    _check(eps, norm, steps, restarts, rho)
    targeted = loss in TARGETED_LOSSES
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}: choose one of {', '.join(LOSSES)}")
    if targeted and target is None:
        raise ValueError(f"loss {loss!r} is targeted: pass target=")
    if not targeted and target is not None:
        raise ValueError(f"loss {loss!r} is untargeted: use 'dlr-t' or 'ce-t' with target=")

    x = x.detach()
    adv = x.clone()
    pred = _clean_logits(forward, x).argmax(dim=1)
    active = pred != target if target is not None else pred == y
    run = functools.partial(
        _single_run, forward, eps=eps, norm=norm, loss=loss, steps=steps, rho=rho,
        success_is_target=targeted, generator=generator,
    )  # fmt: skip
    _restarts(run, x, y, target, adv, active, restarts)
    return adv


def _restarts(
    run: Callable[[Tensor, Tensor, Tensor | None], tuple[Tensor, Tensor]],
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    adv: Tensor,
    active: Tensor,
    restarts: int,
) -> None:
    """`restarts` runs, each on the inputs still `active` (unbroken); a broken input's point goes
    into `adv` and it leaves `active` (both updated in place)."""
    for _ in range(restarts):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            return
        adv_cur, ok = run(x[idx], y[idx], None if target is None else target[idx])
        adv[idx[ok]] = adv_cur[ok]
        active[idx[ok]] = False


def apgd_targeted(
    forward: Forward,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    rho: float = 0.75,
    n_target_classes: int = 9,
    loss: str = "dlr-t",
    generator: torch.Generator | None = None,
) -> Tensor:
    """APGD-T (Croce & Hein 2020, https://arxiv.org/abs/2003.01690): untargeted robustness by
    targeted runs.

    For each of the ``n_target_classes`` classes with the largest clean logits other than the
    true one, in that order, run APGD on the targeted loss ("dlr-t", or "ce-t") toward that
    class, each run only on the inputs not yet broken; an input is broken when misclassified
    (any wrong class, as in AutoAttack). Inputs misclassified before the attack are returned
    unchanged.

    Distance: L-inf or L2 (``norm``), at most ``eps``; inputs stay in [0, 1].

    Arguments:
        forward, x, y, eps, norm, steps, restarts, rho, generator: as in ``apgd_attack``;
        ``steps`` and ``restarts`` are per target class.
        n_target_classes: target classes tried (default 9; at most K - 1).
        loss: "dlr-t" (default, needs K >= 4 classes) or "ce-t".

    Shape:
        - x: (N, C, H, W) float in [0, 1]. - y: (N,) int64. - return: like x.
    """
    _check(eps, norm, steps, restarts, rho)
    if loss not in TARGETED_LOSSES:
        raise ValueError(f"APGD-T needs a targeted loss: choose one of {', '.join(TARGETED_LOSSES)}")
    x = x.detach()
    logits = _clean_logits(forward, x)
    n_classes = logits.shape[1]
    if loss == "dlr-t" and n_classes < 4:
        raise ValueError(f"the targeted DLR loss needs at least 4 classes, the model has {n_classes}")
    others = logits.scatter(1, y[:, None], -math.inf)
    order = others.argsort(dim=1, descending=True)

    adv = x.clone()
    active = logits.argmax(dim=1) == y
    run = functools.partial(
        _single_run, forward, eps=eps, norm=norm, loss=loss, steps=steps, rho=rho, success_is_target=False,
        generator=generator,
    )  # fmt: skip
    for j in range(min(n_target_classes, n_classes - 1)):
        if not active.any():
            break
        _restarts(run, x, y, order[:, j], adv, active, restarts)
    return adv


# --- Foolbox 3 adapters ---------------------------------------------------------------------


class APGD(TorchFixedEpsilonAttack):
    """APGD-CE / APGD-DLR (Croce & Hein 2020, https://arxiv.org/abs/2003.01690) for Foolbox 3.

    Distance: ``fb.distances.linf`` (norm "linf") or ``fb.distances.l2`` (norm "l2").

    Arguments (keyword-only):
        loss: "ce" (default) or "dlr". norm: "linf" (default) or "l2".
        steps: iterations per restart (default 100). restarts: random restarts (default 1).
        rho: step-size checkpoint threshold (default 0.75).
        seed: seed of the random starts, fresh for every epsilon (None: torch's global RNG).

    Shape:
        - inputs: (N, C, H, W) within the model's bounds. - labels: (N,).
        - ``attack(fmodel, inputs, labels, epsilons=[...])`` returns (raw, clipped, success).
    """

    def __init__(
        self,
        *,
        loss: str = "ce",
        norm: str = "linf",
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        seed: int | None = 0,
    ) -> None:
        if loss not in UNTARGETED_LOSSES:
            raise ValueError(f"unknown loss {loss!r}: choose one of {', '.join(UNTARGETED_LOSSES)}")
        _check(1.0, norm, steps, restarts, rho)
        self.loss = loss
        self.norm = norm
        self.steps = steps
        self.restarts = restarts
        self.rho = rho
        self.seed = seed

    def attack(
        self, forward: Forward, x: Tensor, y: Tensor, eps: float, generator: torch.Generator | None
    ) -> Tensor:
        return apgd_attack(
            forward, x, y, eps=eps, norm=self.norm, loss=self.loss, steps=self.steps, restarts=self.restarts,
            rho=self.rho, generator=generator,
        )  # fmt: skip


class APGDT(TorchFixedEpsilonAttack):
    """APGD-T (Croce & Hein 2020, https://arxiv.org/abs/2003.01690) for Foolbox 3: untargeted
    robustness by targeted-DLR runs toward the top ``n_target_classes`` other classes.

    Distance: ``fb.distances.linf`` (norm "linf") or ``fb.distances.l2`` (norm "l2").

    Arguments (keyword-only):
        norm: "linf" (default) or "l2". steps, restarts: per target class (default 100, 1).
        rho: step-size checkpoint threshold (default 0.75). n_target_classes: default 9.
        loss: "dlr-t" (default) or "ce-t". seed: as in ``APGD``.

    Shape:
        - inputs: (N, C, H, W) within the model's bounds. - labels: (N,).
        - ``attack(fmodel, inputs, labels, epsilons=[...])`` returns (raw, clipped, success).
    """

    def __init__(
        self,
        *,
        norm: str = "linf",
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        n_target_classes: int = 9,
        loss: str = "dlr-t",
        seed: int | None = 0,
    ) -> None:
        if loss not in TARGETED_LOSSES:
            raise ValueError(f"unknown loss {loss!r}: choose one of {', '.join(TARGETED_LOSSES)}")
        if n_target_classes < 1:
            raise ValueError(f"n_target_classes must be >= 1, got {n_target_classes}")
        _check(1.0, norm, steps, restarts, rho)
        self.norm = norm
        self.steps = steps
        self.restarts = restarts
        self.rho = rho
        self.n_target_classes = n_target_classes
        self.loss = loss
        self.seed = seed

    def attack(
        self, forward: Forward, x: Tensor, y: Tensor, eps: float, generator: torch.Generator | None
    ) -> Tensor:
        return apgd_targeted(
            forward, x, y, eps=eps, norm=self.norm, steps=self.steps, restarts=self.restarts, rho=self.rho,
            n_target_classes=self.n_target_classes, loss=self.loss, generator=generator,
        )  # fmt: skip
