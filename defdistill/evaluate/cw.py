"""Carlini & Wagner's L2 attack (2017, "Towards Evaluating the Robustness of Neural Networks"):
a minimal perturbation found by Adam on tanh variables and a search over the constant c, with a
margin loss on the logits, which distillation cannot saturate.

Foolbox's `L2CarliniWagnerAttack` is the reference: the same tanh change of variables, Adam, loss,
abort-early rule and success test, step for step (with `search_factor=None`, a scalar initial
constant and no further searches, this class finds what Foolbox finds). What it adds is a search
over c that keeps going for the inputs it has not converged on, because no fixed constant fits
every model: the margin term scales with the logits, which distillation at T makes about T times
larger, while the distance term does not.

- `initial_const="linear"`: each input starts at the constant of its linearised problem,
  c = 2 m / ||grad m||^2 (m the clean margin z_y - max_{i != y} z_i + confidence): the smallest c
  at which minimising c * max(m, 0) + ||delta||^2 on the tangent plane reaches the boundary. It
  scales as 1 / (logit scale), so a student with logits 100 times larger starts 100 times lower.
- `search_factor=f`: c is multiplied by f while no adversarial example was found, divided by f
  while every constant tried succeeded, and bisected geometrically once bracketed (Foolbox
  multiplies by 10, halves the upper bound, and bisects arithmetically: from a constant 100
  times too large, three halvings never come near).
- `max_binary_search_steps`: after the first `binary_search_steps` searches (on every input),
  the inputs not converged (no adversarial example yet, no constant that failed yet, or a
  bracket wider than `bracket`) get further searches, on those inputs only, up to this many in
  all. Each input keeps the smallest adversarial perturbation found over every search.

An input the model already misclassifies is returned unchanged; one whose search failed is
returned as itself (Foolbox returns an all-zero image there, which its success check then
classifies: usually a misclassification counted as a success at the image's own norm).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

# Foolbox imports GitPython, which refuses to import without a git binary unless told to be quiet.
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
import eagerpy as ep  # noqa: E402  (Foolbox's tensor layer)
import foolbox as fb  # noqa: E402
import torch  # noqa: E402
from foolbox.attacks.base import get_criterion, raise_if_kwargs, verify_input_bounds  # noqa: E402

LINEAR_CONST = "linear"
FOOLBOX_CONST_CAP = 1e10  # Foolbox's last search (of 10 or more) retries the upper bound, capped


@dataclass
class SearchStats:
    """What the last call did: searches and model evaluations (forward + backward) per input."""

    searches: torch.Tensor  # (N,) binary-search steps run on each input (0: already misclassified)
    evaluations: int  # Adam steps summed over inputs: the attack's cost in gradient evaluations
    lower: torch.Tensor  # (N,) the largest constant that failed (0 if none)
    upper: torch.Tensor  # (N,) the smallest constant that succeeded (inf if none)


class L2CarliniWagner(fb.attacks.L2CarliniWagnerAttack):
    """Carlini-Wagner L2 with a per-input search over c that continues where it has not converged.

    Foolbox's arguments keep their meaning; `initial_const` may also be "linear" (per input, from
    the clean margin and its gradient). `search_factor` (None: Foolbox's rule), `bracket` and
    `max_binary_search_steps` (default: `binary_search_steps`, no further searches) are described
    in the module's docstring.
    """

    def __init__(
        self,
        binary_search_steps: int = 9,
        steps: int = 10000,
        stepsize: float = 1e-2,
        confidence: float = 0,
        initial_const: float | str = 1e-3,
        abort_early: bool = True,
        *,
        search_factor: float | None = None,
        max_binary_search_steps: int | None = None,
        bracket: float | None = None,
    ) -> None:
        if initial_const != LINEAR_CONST and not (
            isinstance(initial_const, (int, float)) and initial_const > 0
        ):
            raise ValueError(f"initial_const must be positive or {LINEAR_CONST!r}, got {initial_const!r}")
        if search_factor is not None and not search_factor > 1:
            raise ValueError(f"search_factor must be above 1, got {search_factor}")
        if bracket is None:  # one step of the search: a success and a failure next to each other
            bracket = 2.0 if search_factor is None else search_factor * (1 + 1e-6)
        if not bracket > 1:
            raise ValueError(f"bracket must be above 1, got {bracket}")
        super().__init__(binary_search_steps, steps, stepsize, confidence, 1e-3, abort_early)
        self.initial_const = initial_const  # type: ignore[assignment]
        self.search_factor = search_factor
        self.bracket = bracket
        self.max_binary_search_steps = max(
            binary_search_steps, max_binary_search_steps or binary_search_steps
        )
        self.stats: SearchStats | None = None
        self.clean_logits: torch.Tensor | None = None

    # --- the driver ---------------------------------------------------------------------------

    def run(
        self, model: Any, inputs: Any, criterion: Any, *, early_stop: float | None = None, **kwargs: Any
    ) -> Any:
        raise_if_kwargs(kwargs)
        x_ep, restore_type = ep.astensor_(inputs)
        criterion_ = get_criterion(criterion)
        verify_input_bounds(x_ep, model)
        if isinstance(criterion_, fb.criteria.Misclassification):
            targeted, classes = False, criterion_.labels.raw
        elif isinstance(criterion_, fb.criteria.TargetedMisclassification):
            targeted, classes = True, criterion_.target_classes.raw
        else:
            raise ValueError("unsupported criterion")
        x = x_ep.raw
        n = len(x)
        if classes.shape != (n,):
            raise ValueError(f"expected labels of shape ({n},), got {tuple(classes.shape)}")
        bounds = model.bounds

        def forward(z: torch.Tensor) -> torch.Tensor:
            return model(z)  # Foolbox's model: torch in, torch out, differentiable

        consts, done = self._initial_consts(forward, x, classes, targeted)
        lower = torch.zeros(n, dtype=torch.float64, device=x.device)
        upper = torch.full((n,), math.inf, dtype=torch.float64, device=x.device)
        best = x.clone()
        best_norm = torch.full((n,), math.inf, device=x.device)
        best_norm[done] = 0.0  # already adversarial: returned unchanged
        searches = torch.zeros(n, dtype=torch.long, device=x.device)
        evaluations = 0

        def search(rows: torch.Tensor, last: bool) -> None:
            nonlocal evaluations
            c = consts[rows]
            if last:  # Foolbox: in the last of 10 or more searches, retry the upper bound
                c = torch.minimum(upper[rows], torch.full_like(c, FOOLBOX_CONST_CAP))
            found, adv, norm, used = self._minimise(forward, bounds, x[rows], classes[rows], targeted, c)
            evaluations += used
            closer = norm < best_norm[rows]
            best[rows[closer]] = adv[closer]
            best_norm[rows[closer]] = norm[closer]
            upper[rows] = torch.where(found, torch.minimum(upper[rows], c), upper[rows])
            lower[rows] = torch.where(found, lower[rows], torch.maximum(lower[rows], c))
            consts[rows] = self._next_consts(c, lower[rows], upper[rows])
            searches[rows] += 1

        todo = (~done).nonzero().squeeze(1)
        legacy_last = self.search_factor is None and self.binary_search_steps >= 10
        for step in range(self.binary_search_steps):
            if len(todo):
                search(todo, legacy_last and step == self.binary_search_steps - 1)
        while True:
            open_ = (~done) & (searches < self.max_binary_search_steps) & ~self._converged(lower, upper)
            rows = open_.nonzero().squeeze(1)
            if not len(rows):
                break
            search(rows, False)
        self.stats = SearchStats(searches.cpu(), evaluations, lower.cpu(), upper.cpu())
        failed = torch.isinf(best_norm)
        return restore_type(ep.astensor(torch.where(failed.view(-1, *([1] * (x.ndim - 1))), x, best)))

    def _converged(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """Inputs whose constant is bracketed within a factor `bracket` (found, and one failed)."""
        return torch.isfinite(upper) & (lower > 0) & (upper <= self.bracket * lower)

    def _next_consts(self, c: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        unbounded = torch.isinf(upper)
        if self.search_factor is None:  # Foolbox: x10 until found, then the midpoint of [lower, upper]
            return torch.where(unbounded, c * 10, (lower + upper) / 2)
        f = self.search_factor
        bisect = torch.sqrt(lower * torch.where(unbounded, lower, upper))
        return torch.where(unbounded, c * f, torch.where(lower == 0, upper / f, bisect))

    def _initial_consts(
        self, forward: Any, x: torch.Tensor, classes: torch.Tensor, targeted: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the first constant of each input, float64; whether it is already adversarial)."""
        linear = self.initial_const == LINEAR_CONST
        with torch.enable_grad():
            z = x.detach().clone().requires_grad_(linear)
            logits = forward(z)
            margin = _margin(logits, classes, targeted) + self.confidence
            grad = torch.autograd.grad(margin.sum(), z)[0] if linear else None
        self.clean_logits = logits.detach()  # run_attack reads the clean predictions from here
        done = _is_adversarial(self.clean_logits, classes, targeted, self.confidence)
        if grad is None:
            same = torch.full((len(x),), float(self.initial_const), dtype=torch.float64, device=x.device)
            return same, done
        squared = grad.flatten(1).double().square().sum(1)
        consts = 2 * margin.detach().double().clamp(min=0) / squared
        fallback = torch.full_like(consts, 1e-3)  # a zero gradient or margin: Foolbox's default
        return torch.where(torch.isfinite(consts) & (consts > 0), consts, fallback), done

    # --- one binary-search step: Foolbox's inner loop, on some of the inputs -------------------

    def _minimise(
        self,
        forward: Any,
        bounds: Any,
        x: torch.Tensor,
        classes: torch.Tensor,
        targeted: bool,
        consts: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Adam on tanh variables at constants `consts`: (found, best adversarial, its L2 norm or
        inf, the number of per-input gradient evaluations), as Foolbox's inner loop does it."""
        low, high = bounds
        centre, half = (low + high) / 2, (high - low) / 2
        w = torch.atanh((x - centre) / half * 0.999999)
        reconstructed = torch.tanh(w) * half + centre
        c = consts.to(torch.float32)
        delta = torch.zeros_like(w)
        m, v = torch.zeros_like(w), torch.zeros_like(w)
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        n = len(x)
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        best = x.clone()
        best_norm = torch.full((n,), math.inf, device=x.device)
        every = math.ceil(self.steps / 10)
        previous = math.inf
        used = 0
        for step in range(self.steps):
            with torch.enable_grad():
                delta.requires_grad_(True)
                perturbed = torch.tanh(w + delta) * half + centre
                logits = forward(perturbed)
                margin = (_margin(logits, classes, targeted) + self.confidence).clamp(min=0)
                loss = (margin * c).sum() + (perturbed - reconstructed).flatten(1).square().sum()
                (gradient,) = torch.autograd.grad(loss, delta)
            used += n
            with torch.no_grad():
                t = step + 1
                m.mul_(beta1).add_(gradient, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
                m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
                delta = delta.detach() - self.stepsize * m_hat / (v_hat.sqrt() + eps)
                if self.abort_early and step % every == 0:
                    if not loss.item() <= 0.9999 * previous:
                        break  # no progress over the last tenth of the steps
                    previous = loss.item()
                perturbed, logits = perturbed.detach(), logits.detach()
                adversarial = _is_adversarial(logits, classes, targeted, self.confidence)
                found |= adversarial
                norms = (perturbed - x).flatten(1).norm(dim=-1)
                better = adversarial & (norms < best_norm)
                best[better] = perturbed[better]
                best_norm = torch.where(better, norms, best_norm)
        return found, best, best_norm, used


def _margin(logits: torch.Tensor, classes: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Foolbox's CW margin: z_y - max_{i != y} z_i (untargeted), max_{i != t} z_i - z_t (targeted)."""
    rows = torch.arange(len(logits), device=logits.device)
    own = torch.nn.functional.one_hot(classes, logits.shape[-1]).bool()
    other = logits.masked_fill(own, -math.inf).argmax(-1)
    if targeted:
        return logits[rows, other] - logits[rows, classes]
    return logits[rows, classes] - logits[rows, other]


def _is_adversarial(
    logits: torch.Tensor, classes: torch.Tensor, targeted: bool, confidence: float
) -> torch.Tensor:
    """Foolbox's success test with its confidence shift of the class's logit."""
    if confidence:
        shift = torch.nn.functional.one_hot(classes, logits.shape[-1]).to(logits.dtype) * confidence
        logits = logits - shift if targeted else logits + shift
    predicted = logits.argmax(-1)
    return predicted == classes if targeted else predicted != classes
