"""Jacobian-based Saliency Map Attack (JSMA), vectorised over the batch, in pure PyTorch.

Papernot, McDaniel, Jha, Fredrikson, Celik, Swami, "The Limitations of Deep Learning in
Adversarial Settings", IEEE EuroS&P 2016 (https://arxiv.org/abs/1511.07528).

Two variants, differing only in the function ``F`` whose Jacobian builds the saliency map:

* ``"f"`` (JSMA-F, Papernot's original): ``F`` is the softmax output at temperature 1.
* ``"z"`` (JSMA-Z, Carlini & Wagner, "Defensive Distillation is Not Robust to Adversarial
  Examples", 2016): ``F`` is the logits.

On a defensively distilled network evaluated at ``T = 1`` the softmax saturates, so the
Jacobian of the probabilities vanishes (often to exactly 0 in float32) and JSMA-F finds no
admissible pixel pair; JSMA-Z works from the logits and is unaffected.

Distance: L0 (the number of input features changed, reported as a fraction of all features).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["JSMAResult", "jsma", "jsma_all_targets"]

# Elements of one (n_features x n_features) pairwise tensor, summed over the inputs handled at
# once. The saliency step holds about two float32 tensors plus two bool tensors of this size
# (~10 bytes per element), so 2**26 elements keep it below ~0.7 GB.
_PAIR_BUDGET = 2**26


def _default_batch_size(n_features: int) -> int:
    return max(1, _PAIR_BUDGET // (n_features * n_features))


def _check_variant(variant: str) -> str:
    v = variant.lower()
    if v not in ("f", "z"):
        raise ValueError(f"variant must be 'f' (softmax) or 'z' (logits), got {variant!r}")
    return v


def _saliency_pairs(
    alpha: Tensor, beta: Tensor, domain: Tensor, increasing: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Best pixel pair per row of the pairwise saliency map.

    ``alpha``/``beta``: (B, n) per-feature derivatives of the target / the sum of the other
    outputs; ``domain``: (B, n) bool search domain. Returns ``p``, ``q`` (B,) int64 and
    ``found`` (B,) bool (False where no pair satisfies the sign conditions).
    """
    n = alpha.shape[1]
    inf = torch.tensor(math.inf, dtype=alpha.dtype, device=alpha.device)
    if not increasing:
        # Decreasing attack (theta < 0): conditions alpha < 0, beta > 0; flip signs so that
        # the same code applies (score alpha * |beta| is unchanged).
        alpha, beta = -alpha, -beta
    # Features outside the search domain poison every pair they are in.
    a = torch.where(domain, alpha, -inf)
    b = torch.where(domain, beta, inf)
    pa = a[:, :, None] + a[:, None, :]  # alpha_p + alpha_q, (B, n, n)
    pb = b[:, :, None] + b[:, None, :]  # beta_p + beta_q
    valid = pa > 0
    valid &= pb < 0
    valid.diagonal(dim1=1, dim2=2).fill_(False)  # p != q
    score = pa.mul_(pb.neg_())  # alpha * |beta| (in place: pa becomes the score)
    del pb
    # Valid scores are >= 0 (0 only through float underflow); invalid ones go below.
    score.masked_fill_(~valid, -1.0)
    del valid
    best, idx = score.view(score.shape[0], n * n).max(dim=1)
    p = torch.div(idx, n, rounding_mode="floor")
    q = idx - p * n
    return p, q, best >= 0


def _jsma_chunk(
    forward: Callable[[Tensor], Tensor],
    x: Tensor,
    target: Tensor,
    variant: str,
    max_iter: int,
    theta: float,
    clip_min: float,
    clip_max: float,
) -> tuple[Tensor, Tensor]:
    n = x.shape[0]
    shape = x.shape[1:]
    x_adv = x.detach().clone().reshape(n, -1)
    increasing = theta > 0
    domain = x_adv < clip_max if increasing else x_adv > clip_min
    active = torch.ones(n, dtype=torch.bool, device=x.device)
    success = torch.zeros(n, dtype=torch.bool, device=x.device)

    for it in range(max_iter + 1):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        last = it == max_iter
        with torch.set_grad_enabled(not last):
            xi = x_adv[idx].reshape(-1, *shape).requires_grad_(not last)
            logits = forward(xi)
            hit = logits.detach().argmax(dim=1) == target[idx]
            success[idx[hit]] = True
            if last:
                break
            out = logits.softmax(dim=1) if variant == "f" else logits
            onehot = torch.nn.functional.one_hot(target[idx], out.shape[1]).to(out.dtype)
            # Inputs are independent (model in eval mode), so the gradient of a batch sum
            # gives each input's own Jacobian row.
            (g_t,) = torch.autograd.grad((out * onehot).sum(), xi, retain_graph=True)
            (g_o,) = torch.autograd.grad((out * (1 - onehot)).sum(), xi)
        keep = ~hit
        alpha = g_t.reshape(idx.numel(), -1)[keep]
        beta = g_o.reshape(idx.numel(), -1)[keep]
        rows = idx[keep]
        active[idx[hit]] = False
        if rows.numel() == 0:
            continue
        p, q, found = _saliency_pairs(alpha, beta, domain[rows], increasing)
        # No admissible pair (e.g. vanished Jacobian): the attack on that input stops, failed.
        active[rows[~found]] = False
        rows, p, q = rows[found], p[found], q[found]
        for f in (p, q):
            x_adv[rows, f] = (x_adv[rows, f] + theta).clamp(clip_min, clip_max)
            domain[rows, f] = False

    return x_adv.reshape(x.shape), success


def jsma(
    forward: Callable[[Tensor], Tensor],
    x: Tensor,
    target: Tensor,
    *,
    variant: str = "f",
    gamma: float = 0.145,
    theta: float = 1.0,
    batch_size: int | None = None,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Targeted JSMA (Papernot et al. 2016, "The Limitations of Deep Learning in Adversarial
    Settings", https://arxiv.org/abs/1511.07528), vectorised over the batch.

    Distance Measure: L0.

    Each step computes, for every input still running, the Jacobian rows
    ``alpha = dF_t/dx`` and ``beta = d(sum_{j != t} F_j)/dx`` (two backward passes), builds the
    pairwise saliency map ``S(p, q) = (alpha_p + alpha_q) * |beta_p + beta_q|`` over all pairs
    ``p != q`` of the search domain with ``alpha_p + alpha_q > 0`` and ``beta_p + beta_q < 0``
    (signs flipped for ``theta < 0``), and moves the best pair by ``theta`` (clipped; with
    ``theta = 1`` both features go to ``clip_max``). Changed features leave the search domain,
    as do features already at ``clip_max`` (``clip_min`` for ``theta < 0``). An input stops
    when the model predicts ``target``, after ``floor(gamma * n_features / 2)`` pairs, or when
    no admissible pair is left (e.g. a vanished Jacobian); other inputs keep going.

    Arguments:
        forward (Callable): maps a batch ``(B, C, H, W)`` to logits ``(B, K)``. Put the model
            in eval mode first (the per-input gradients are taken of a batch sum).
        x (Tensor): inputs in ``[clip_min, clip_max]``.
        target (Tensor): target class per input.
        variant (str): ``"f"`` (Jacobian of the softmax at T=1, Papernot's JSMA-F) or ``"z"``
            (Jacobian of the logits, Carlini & Wagner's JSMA-Z). (Default: ``"f"``)
        gamma (float): maximum fraction of features changed. (Default: 0.145, as in the paper)
        theta (float): change per selected feature; +1 saturates to ``clip_max``. (Default: 1.0)
        batch_size (int, optional): inputs attacked at once; default keeps the
            ``(n_features x n_features)`` saliency tensors under ~0.7 GB
            (all of a digits batch, ~100 MNIST inputs).
        clip_min, clip_max (float): valid input range. (Default: 0.0, 1.0)

    Shape:
        - x: :math:`(N, C, H, W)` (any :math:`(N, *)` works); ``n_features = C*H*W``.
        - target: :math:`(N)` int64, :math:`0 \leq t < K`.
        - output: ``(x_adv, success, l0_fraction)``: ``x_adv`` :math:`(N, C, H, W)`;
          ``success`` :math:`(N)` bool (model predicts ``target`` on ``x_adv``);
          ``l0_fraction`` :math:`(N)` float, features changed / ``n_features``.

    Examples::
        >>> x_adv, ok, l0 = jsma(model, images, (labels + 1) % 10, variant="z")
    """
    v = _check_variant(variant)
    target = _check_jsma_inputs(x, target, gamma, theta)
    n, n_feat = x.shape[0], int(x[0].numel())
    max_iter = math.floor(gamma * n_feat / 2 + 1e-9)
    bs = batch_size if batch_size is not None else _default_batch_size(n_feat)
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {bs}")

    if n == 0:
        return x.detach().clone(), torch.zeros(0, dtype=torch.bool, device=x.device), x.new_zeros(0)
    advs: list[Tensor] = []
    oks: list[Tensor] = []
    for s in range(0, n, bs):
        a, ok = _jsma_chunk(
            forward, x[s : s + bs], target[s : s + bs], v, max_iter, theta, clip_min, clip_max
        )
        advs.append(a)
        oks.append(ok)
    x_adv = torch.cat(advs)
    success = torch.cat(oks)
    l0 = (x_adv != x.detach()).reshape(n, -1).sum(dim=1).to(x.dtype) / n_feat
    return x_adv, success, l0


def _check_jsma_inputs(x: Tensor, target: Tensor, gamma: float, theta: float) -> Tensor:
    """Check jsma's arguments; the targets as a flat int64 tensor on x's device."""
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    if theta == 0:
        raise ValueError("theta must be non-zero")
    if x.ndim < 2:
        raise ValueError(f"x must be batched (N, C, H, W), got shape {tuple(x.shape)}")
    target = target.to(device=x.device, dtype=torch.long).reshape(-1)
    if target.shape[0] != x.shape[0]:
        raise ValueError(f"target has {target.shape[0]} entries for {x.shape[0]} inputs")
    return target


@dataclass(frozen=True)
class JSMAResult:
    """Outcome of :func:`jsma_all_targets` (``N`` inputs, ``K`` classes).

    Attributes:
        targets: (N, K-1) int64, the other classes of each input, ascending.
        success: (N, K-1) bool, the model predicts the target on the adversarial input.
        l0_fraction: (N, K-1) float, fraction of features changed (also for failures).
        any_success: (N,) bool, at least one target reached.
        min_l0_fraction: (N,) float, smallest ``l0_fraction`` over the reached targets
            (NaN where none was reached).
        adversarials: (N, K-1, C, H, W) the adversarial inputs.
    """

    targets: Tensor
    success: Tensor
    l0_fraction: Tensor
    any_success: Tensor
    min_l0_fraction: Tensor
    adversarials: Tensor

    @property
    def success_rate(self) -> float:
        """Fraction of (input, target) pairs reached (the paper's success rate)."""
        return float(self.success.float().mean()) if self.success.numel() else float("nan")

    @property
    def mean_l0_fraction(self) -> float:
        """Mean fraction of features changed over the successful pairs (the paper's distortion)."""
        if not bool(self.success.any()):
            return float("nan")
        return float(self.l0_fraction[self.success].mean())


def jsma_all_targets(
    forward: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    variant: str = "f",
    gamma: float = 0.145,
    num_classes: int | None = None,
    theta: float = 1.0,
    batch_size: int | None = None,
) -> JSMAResult:
    r"""JSMA towards every other class, the protocol of Papernot et al. 2016 ("The Limitations
    of Deep Learning in Adversarial Settings", Sec. V): each input is attacked towards each of
    the ``K - 1`` classes other than its label; all ``N * (K-1)`` (input, target) pairs run as
    one flattened, vectorised batch (chunked by ``batch_size``).

    Distance Measure: L0.

    Arguments:
        forward (Callable): maps a batch to logits (model in eval mode).
        x (Tensor): inputs in [0, 1].
        y (Tensor): labels (the source classes, excluded from the targets).
        variant (str): ``"f"`` (softmax Jacobian) or ``"z"`` (logit Jacobian). (Default: ``"f"``)
        gamma (float): maximum fraction of features changed. (Default: 0.145)
        num_classes (int, optional): ``K``; inferred from one forward pass if omitted.
        theta (float): change per selected feature. (Default: 1.0)
        batch_size (int, optional): (input, target) pairs attacked at once; see :func:`jsma`.

    Shape:
        - x: :math:`(N, C, H, W)`.
        - y: :math:`(N)` int64.
        - output: :class:`JSMAResult` with per-pair fields of shape :math:`(N, K-1)` and
          per-input fields of shape :math:`(N)`.
    """
    y, k = _check_labels(forward, x, y, num_classes)
    n = x.shape[0]
    classes = torch.arange(k, device=x.device).expand(n, k)
    targets = classes[classes != y[:, None]].reshape(n, k - 1)
    x_rep = x.repeat_interleave(k - 1, dim=0)
    x_adv, ok, l0 = jsma(
        forward, x_rep, targets.reshape(-1), variant=variant, gamma=gamma, theta=theta, batch_size=batch_size
    )
    success = ok.reshape(n, k - 1)
    l0 = l0.reshape(n, k - 1)
    min_l0 = torch.where(success, l0, torch.full_like(l0, math.inf)).amin(dim=1)
    min_l0 = torch.where(torch.isinf(min_l0), torch.full_like(min_l0, math.nan), min_l0)
    return JSMAResult(
        targets=targets,
        success=success,
        l0_fraction=l0,
        any_success=success.any(dim=1),
        min_l0_fraction=min_l0,
        adversarials=x_adv.reshape(n, k - 1, *x.shape[1:]),
    )


def _check_labels(
    forward: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, num_classes: int | None
) -> tuple[Tensor, int]:
    """The labels as a flat int64 tensor on x's device, and the number of classes (from one
    forward pass when not given)."""
    y = y.to(device=x.device, dtype=torch.long).reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y has {y.shape[0]} entries for {x.shape[0]} inputs")
    if num_classes is None:
        if x.shape[0] == 0:
            raise ValueError("num_classes is required for an empty batch")
        with torch.no_grad():
            num_classes = int(forward(x[:1]).shape[1])
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if y.numel() and not bool(((y >= 0) & (y < num_classes)).all()):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    return y, num_classes
