"""Square Attack (score-based black-box, L-inf and L2) in pure PyTorch, with a Foolbox 3 adapter.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020 (https://arxiv.org/abs/1912.00049). Follows the authors'
reference code (max-andr/square-attack and ``autoattack/square.py`` of fra31/auto-attack): margin
loss on the logits, AutoAttack's schedule of the square size ``p`` rescaled to the query budget,
vertical-stripe initialisation (L-inf) or the tiled-square initialisation (L2), the best point
kept per input. Square positions and signs are drawn per input; only the inputs not yet broken
are queried. ``forward`` is only ever called under ``torch.no_grad()``.
"""

from __future__ import annotations

import math
import os
from typing import TypeVar

import torch
from torch import Tensor

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


from .adapter import Forward, TorchFixedEpsilonAttack  # noqa: E402

__all__ = ["Square", "margin_loss", "p_selection", "square_attack"]

T = TypeVar("T")
NORMS = ("linf", "l2")


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """``z_y - max_{i != y} z_i`` per input: positive while correctly classified (to be minimised).

    Shape:
        - logits: (N, K). - y: (N,) int64. - return: (N,).
    """
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_other = logits.scatter(1, y[:, None], -math.inf).amax(dim=1)
    return z_y - z_other


def p_selection(p_init: float, it: int, n_queries: int) -> float:
    """AutoAttack's schedule of the fraction of pixels a square covers, rescaled to ``n_queries``."""
    it = int(it / n_queries * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64)):
        if it <= bound:
            return p_init / div
    if it <= 6000:
        return p_init / 128
    if it <= 8000:
        return p_init / 256
    return p_init / 512


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


class _Rng:
    """Draws on ``generator``'s device, then moves to ``device``."""

    def __init__(self, generator: torch.Generator | None, device: torch.device) -> None:
        self.generator = generator
        self.device = device
        self.src = generator.device if generator is not None else device

    def signs(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        bits = torch.randint(0, 2, shape, generator=self.generator, device=self.src)
        return (2 * bits - 1).to(device=self.device, dtype=dtype)

    def ints(self, high: int, n: int) -> Tensor:
        """n integers uniform in [0, high]."""
        return torch.randint(0, high + 1, (n,), generator=self.generator, device=self.src).to(self.device)

    def coins(self, n: int) -> Tensor:
        return torch.randint(0, 2, (n,), generator=self.generator, device=self.src).to(self.device).bool()


def _window(vh: Tensor, vw: Tensor, s: int, h: int, w: int) -> Tensor:
    """(n, 1, h, w) masks of the s x s squares whose top-left corners are (vh, vw)."""
    rows = torch.arange(h, device=vh.device)
    cols = torch.arange(w, device=vw.device)
    in_h = (rows[None, :] >= vh[:, None]) & (rows[None, :] < vh[:, None] + s)
    in_w = (cols[None, :] >= vw[:, None]) & (cols[None, :] < vw[:, None] + s)
    return (in_h[:, :, None] & in_w[:, None, :])[:, None]


def _eta_rectangles(a: int, b: int) -> Tensor:
    delta = torch.zeros(a, b, dtype=torch.float64)
    ca, cb = a // 2, b // 2
    for k in range(max(a // 2 + 1, b // 2 + 1)):
        delta[max(ca - k, 0) : min(ca - k + 2 * k + 1, a), max(cb - k, 0) : min(cb - k + 2 * k + 1, b)] += (
            1.0 / (k + 1) ** 2
        )
    return delta / delta.pow(2).sum().sqrt().clamp_min(1e-30)


def _eta(s: int) -> Tensor:
    """The L2 square pattern of the reference code: two opposite-sign bumps, unit L2 norm."""
    delta = torch.zeros(s, s, dtype=torch.float64)
    delta[: s // 2] = _eta_rectangles(s // 2, s)
    delta[s // 2 :] = -_eta_rectangles(s - s // 2, s)
    return delta / delta.pow(2).sum().sqrt()


def _place(pattern: Tensor, vh: Tensor, vw: Tensor, h: int, w: int) -> Tensor:
    """(n, h, w): the (n, s, s) patterns placed at (vh, vw), zero elsewhere."""
    s = pattern.shape[-1]
    rows = torch.arange(h, device=vh.device)
    cols = torch.arange(w, device=vw.device)
    lr = (rows[None, :] - vh[:, None]).clamp(0, s - 1)
    lc = (cols[None, :] - vw[:, None]).clamp(0, s - 1)
    n = pattern.shape[0]
    placed = pattern[torch.arange(n, device=vh.device)[:, None, None], lr[:, :, None], lc[:, None, :]]
    return placed * _window(vh, vw, s, h, w)[:, 0]


def _l2(v: Tensor) -> Tensor:
    return v.flatten(1).norm(p=2, dim=1)


def _run_linf(
    forward: Forward, x: Tensor, y: Tensor, eps: float, n_queries: int, p_init: float, rng: _Rng
) -> tuple[Tensor, Tensor]:
    n, c, h, w = x.shape
    x_best = torch.clamp(x + eps * rng.signs((n, c, 1, w), x.dtype), 0.0, 1.0)
    margin_min = margin_loss(forward(x_best), y)
    loss_min = margin_min.clone()
    for i in range(n_queries - 1):
        idx = (margin_min > 0).nonzero().squeeze(1)
        m = idx.numel()
        if m == 0:
            break
        x_cur, x_best_cur = x[idx], x_best[idx]
        p = p_selection(p_init, i, n_queries)
        s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)
        mask = _window(rng.ints(h - s, m), rng.ints(w - s, m), s, h, w)
        signs = rng.signs((m, c, 1, 1), x.dtype)
        x_new = torch.clamp(torch.where(mask, x_cur + eps * signs, x_best_cur), 0.0, 1.0)
        # as the reference code: redraw the signs where the square would not change the point
        for _ in range(10):
            same = (x_new == x_best_cur).flatten(1).all(dim=1)
            if not bool(same.any()):
                break
            signs = torch.where(_bcast(same, signs), rng.signs((m, c, 1, 1), x.dtype), signs)
            x_new = torch.clamp(torch.where(mask, x_cur + eps * signs, x_best_cur), 0.0, 1.0)
        margin = margin_loss(forward(x_new), y[idx])
        improved = (margin < loss_min[idx]) | (margin <= 0)
        loss_min[idx] = torch.where(improved, margin, loss_min[idx])
        margin_min[idx] = torch.where(improved, margin, margin_min[idx])
        x_best[idx] = torch.where(_bcast(improved, x_new), x_new, x_best_cur)
    return x_best, margin_min <= 0


def _normalize_l2(v: Tensor) -> Tensor:
    return v / (_bcast(_l2(v), v) + 1e-12)


def _run_l2(
    forward: Forward, x: Tensor, y: Tensor, eps: float, n_queries: int, p_init: float, rng: _Rng
) -> tuple[Tensor, Tensor]:
    n, c, h, w = x.shape
    # initialisation: a grid of s x s squares (s = h // 5) of the eta pattern, random sign each
    delta_init = torch.zeros_like(x)
    s0 = max(h // 5, 1)
    start = (h - s0 * 5) // 2
    eta0 = _eta(s0).to(device=x.device, dtype=x.dtype)
    for r in range(start, h - s0 + 1, s0):
        for q in range(start, w - s0 + 1, s0):
            delta_init[:, :, r : r + s0, q : q + s0] += eta0 * rng.signs((n, c, 1, 1), x.dtype)
    x_best = torch.clamp(x + _normalize_l2(delta_init) * eps, 0.0, 1.0)
    margin_min = margin_loss(forward(x_best), y)
    loss_min = margin_min.clone()
    for i in range(n_queries - 1):
        idx = (margin_min > 0).nonzero().squeeze(1)
        m = idx.numel()
        if m == 0:
            break
        x_cur, x_best_cur = x[idx], x_best[idx]
        delta = x_best_cur - x_cur
        p = p_selection(p_init, i, n_queries)
        s = max(int(round(math.sqrt(p * h * w))), 3)
        if s % 2 == 0:
            s += 1
        s = min(s, h, w)
        vh, vw = rng.ints(h - s, m), rng.ints(w - s, m)
        vh2, vw2 = rng.ints(h - s, m), rng.ints(w - s, m)
        mask1 = _window(vh, vw, s, h, w)
        mask2 = _window(vh2, vw2, s, h, w)
        norm_window_1 = (delta * mask1).pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()  # (m, c, 1, 1)
        norm_image = _bcast(_l2(delta), delta)
        norm_windows = _bcast(_l2(delta * (mask1 | mask2)), delta)

        eta = _eta(s).to(device=x.device, dtype=x.dtype)
        pattern = torch.where(_bcast(rng.coins(m), eta[None]), eta.t()[None], eta[None]).expand(m, s, s)
        new = _place(pattern, vh, vw, h, w)[:, None] * rng.signs((m, c, 1, 1), x.dtype)
        new = new + delta * mask1 / (1e-12 + norm_window_1)
        new_norm = new.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
        budget = ((eps**2 - norm_image**2).clamp_min(0.0) / c + norm_windows**2).sqrt()
        new = new / (1e-12 + new_norm) * budget
        delta = torch.where(mask2, torch.zeros_like(delta), delta)
        delta = torch.where(mask1, new, delta)
        x_new = torch.clamp(x_cur + _normalize_l2(delta) * eps, 0.0, 1.0)

        margin = margin_loss(forward(x_new), y[idx])
        improved = (margin < loss_min[idx]) | (margin <= 0)
        loss_min[idx] = torch.where(improved, margin, loss_min[idx])
        margin_min[idx] = torch.where(improved, margin, margin_min[idx])
        x_best[idx] = torch.where(_bcast(improved, x_new), x_new, x_best_cur)
    return x_best, margin_min <= 0


def square_attack(
    forward: Forward,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    n_queries: int = 5000,
    p_init: float = 0.8,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Square Attack (Andriushchenko et al. 2020, https://arxiv.org/abs/1912.00049), untargeted.

    Random search on the margin loss ``z_y - max_{i != y} z_i``, using only the logits: no
    gradients (``forward`` runs under ``torch.no_grad()``). An input is broken when misclassified;
    inputs misclassified before the attack are returned unchanged and broken inputs are no longer
    queried.

    Distance: L-inf (``norm="linf"``) or L2 (``norm="l2"``), at most ``eps``; inputs stay in [0, 1].

    Arguments:
        forward: maps a batch in [0, 1] to logits. x: clean inputs in [0, 1]. y: true labels.
        eps: radius of the threat model. norm: "linf" or "l2".
        n_queries: queries per input, the initial one included (default 5000).
        p_init: initial fraction of the pixels a square covers (default 0.8).
        generator: the random search's generator (deterministic results on CPU).

    Shape:
        - x: (N, C, H, W) float in [0, 1]. - y: (N,) int64.
        - return: (N, C, H, W): the adversarial inputs found, x itself where none was.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}: choose one of {', '.join(NORMS)}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")
    if not 0.0 < p_init <= 1.0:
        raise ValueError(f"p_init must lie in (0, 1], got {p_init}")
    if x.dim() != 4:
        raise ValueError(f"expected inputs shaped (N, C, H, W), got {tuple(x.shape)}")
    x = x.detach()
    rng = _Rng(generator, x.device)
    with torch.no_grad():
        adv = x.clone()
        idx = (forward(x).argmax(dim=1) == y).nonzero().squeeze(1)
        if idx.numel() > 0:
            run = _run_linf if norm == "linf" else _run_l2
            adv_cur, ok = run(forward, x[idx], y[idx], eps, n_queries, p_init, rng)
            adv[idx[ok]] = adv_cur[ok]
    return adv


class Square(TorchFixedEpsilonAttack):
    """Square Attack (Andriushchenko et al. 2020, https://arxiv.org/abs/1912.00049) for Foolbox 3.

    Distance: ``fb.distances.linf`` (norm "linf") or ``fb.distances.l2`` (norm "l2").

    Arguments (keyword-only):
        norm: "linf" (default) or "l2". n_queries: queries per input (default 5000).
        p_init: initial square size fraction (default 0.8).
        seed: seed of the random search, fresh for every epsilon (None: torch's global RNG).

    Shape:
        - inputs: (N, C, H, W) within the model's bounds. - labels: (N,).
        - ``attack(fmodel, inputs, labels, epsilons=[...])`` returns (raw, clipped, success).
    """

    def __init__(
        self, *, norm: str = "linf", n_queries: int = 5000, p_init: float = 0.8, seed: int | None = 0
    ) -> None:
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}: choose one of {', '.join(NORMS)}")
        if n_queries < 1:
            raise ValueError(f"n_queries must be >= 1, got {n_queries}")
        self.norm = norm
        self.n_queries = n_queries
        self.p_init = p_init
        self.seed = seed

    def attack(
        self, forward: Forward, x: Tensor, y: Tensor, eps: float, generator: torch.Generator | None
    ) -> Tensor:
        return square_attack(
            forward,
            x,
            y,
            eps=eps,
            norm=self.norm,
            n_queries=self.n_queries,
            p_init=self.p_init,
            generator=generator,
        )
