"""What a model is, read before it is attacked: outputs, randomness, gradients.

A model handed to the audit may return probabilities instead of logits, answer differently to
the same input (a randomised defence), or have gradients that are None, NaN or exactly zero
(Athalye, Carlini & Wagner 2018: shattered, stochastic and vanishing gradients). Each small
function here reads one of these from measured outputs and returns a `Finding`; the wrappers
turn the model into what honest attacks need: the log of its probabilities, the expectation
over its randomness (AutoAttack's `rand` version), gradients an attack can step along, and
gradients taken through a surrogate (BPDA).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DefdistillError

GRADIENT_STATES = ("ok", "zero", "none", "nan")
OUTPUT_KINDS = ("logits", "probabilities")
PROBABILITY_TOLERANCE = 1e-4  # |row sum - 1| for outputs read as probabilities
TINY = 1e-30  # the floor under a probability before its log: keeps -inf out of the attacks


@dataclass(frozen=True)
class Finding:
    """One recorded check of the audit: its name, whether it passed, and what was measured."""

    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


# --- reading the outputs ----------------------------------------------------------------------


def check_output_shape(outputs: Any, n: int, num_classes: int, dataset: str = "the dataset") -> Finding:
    """The outputs of n inputs must be a float tensor (n, num_classes); else one clear error."""
    if not isinstance(outputs, Tensor):
        raise DefdistillError(
            f"the model returned {type(outputs).__name__}, not a tensor of class scores (N, {num_classes})"
        )
    if tuple(outputs.shape) != (n, num_classes):
        raise DefdistillError(
            f"the model maps {n} inputs to outputs of shape {tuple(outputs.shape)}; {dataset} has "
            f"{num_classes} classes, so it must return ({n}, {num_classes}) class scores"
        )
    if not outputs.is_floating_point():
        raise DefdistillError(f"the model returned {outputs.dtype} outputs, not float class scores")
    return Finding("output_shape", True, f"outputs of shape (N, {num_classes}), one score per class")


def looks_like_probabilities(outputs: Tensor, tolerance: float = PROBABILITY_TOLERANCE) -> bool:
    """Non-negative rows that each sum to 1: the model returns probabilities, not logits."""
    outputs = outputs.detach().double()
    return bool((outputs >= 0).all()) and bool(((outputs.sum(1) - 1).abs() <= tolerance).all())


def output_kind_finding(probabilities: bool) -> Finding:
    """Probabilities weaken every cross-entropy attack that reads them as logits; recorded, and
    the honest attacks read their log instead."""
    if probabilities:
        return Finding(
            "outputs_are_logits",
            False,
            "outputs are probabilities (non-negative rows summing to 1): attacks read their log",
        )
    return Finding("outputs_are_logits", True, "outputs are logits (not rows of probabilities)")


def is_randomized(first: Tensor, second: Tensor) -> bool:
    """Two calls on the same inputs that differ: the model draws randomness at every call."""
    return not torch.equal(first.detach(), second.detach())


def randomized_finding(randomized: bool, draws: int, judge_draws: int | None = None) -> Finding:
    if randomized:
        judged = judge_draws or draws
        return Finding(
            "deterministic",
            False,
            f"two identical calls differ: the model is randomised; gradient attacks use expectation "
            f"over transformation ({draws} draws) and its decision is the mean softmax over {judged} "
            "draws, the same draws for the clean input and every adversarial example",
        )
    return Finding("deterministic", True, "two identical calls give identical outputs")


# --- gradients ------------------------------------------------------------------------------


def input_gradients(model: nn.Module, x: Tensor, y: Tensor) -> Tensor | None:
    """Per-input gradient of the cross-entropy on the outputs as given (None when the outputs
    are not differentiable with respect to the inputs)."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        try:
            out = model(xg)
        except RuntimeError as exc:
            raise DefdistillError(f"the model failed on its inputs: {exc}") from None
        if not isinstance(out, Tensor) or not out.requires_grad:
            return None
        loss = F.cross_entropy(out.float(), y, reduction="sum")
        try:
            (grad,) = torch.autograd.grad(loss, xg, allow_unused=True)
        except RuntimeError:
            return None
    return None if grad is None else grad.detach()


def gradient_state(grad: Tensor | None, most: float = 0.5) -> tuple[str, float]:
    """("ok" | "zero" | "none" | "nan", fraction of inputs in that state): None when there is
    no gradient; NaN or exactly zero when more than `most` of the inputs have it so."""
    if grad is None:
        return "none", 1.0
    flat = grad.flatten(1)
    nan = (~torch.isfinite(flat)).any(1).float().mean().item()
    zero = (flat == 0).all(1).float().mean().item()
    if nan > most:
        return "nan", nan
    if zero > most:
        return "zero", zero
    return "ok", 1.0 - max(nan, zero)


def gradient_finding(state: str, fraction: float) -> Finding:
    words = {
        "ok": f"input gradients are finite and non-zero on {fraction:.2f} of the inputs",
        "zero": f"the cross-entropy input gradient is exactly zero on {fraction:.2f} of the inputs",
        "none": "the outputs carry no gradient with respect to the inputs",
        "nan": f"the input gradient is NaN or infinite on {fraction:.2f} of the inputs",
    }
    return Finding("gradients_usable", state == "ok", words[state])


def saturated_fraction(logits: Tensor, correct: Tensor) -> float:
    """Of the correctly classified inputs, the fraction whose softmax is exactly 1.0 in float32."""
    saturated = F.softmax(logits.detach().float(), dim=1).amax(1) == 1.0
    return float(saturated[correct].float().mean()) if bool(correct.any()) else 0.0


# --- wrappers -------------------------------------------------------------------------------


class LogProbabilities(nn.Module):
    """The log of a model's probabilities: logits up to a shift, which every attack accepts."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).clamp_min(TINY).log()


class Expectation(nn.Module):
    """A randomised model's expectation: log of the mean softmax over `draws` calls.

    Its gradient is the gradient of the expected probabilities (expectation over
    transformation, Athalye et al. 2018), and its argmax is the decision read from the mean
    softmax; AutoAttack's `rand` version averages 20 draws. With `seed`, every call makes the
    same draws (common random numbers: the global generator is seeded inside a forked RNG
    state, which is left as it was), so equal inputs get equal decisions and two inputs are
    compared under the same randomness: the judge of a randomised model.
    """

    def __init__(self, model: nn.Module, draws: int, seed: int | None = None) -> None:
        super().__init__()
        if draws < 1:
            raise ValueError(f"draws must be >= 1, got {draws}")
        self.model, self.draws, self.seed = model, draws, seed

    def _mean_softmax(self, x: Tensor) -> Tensor:
        total = F.softmax(self.model(x), dim=1)
        for _ in range(self.draws - 1):
            total = total + F.softmax(self.model(x), dim=1)
        return total / self.draws

    def forward(self, x: Tensor) -> Tensor:
        if self.seed is None:
            probs = self._mean_softmax(x)
        else:
            devices = [x.device.index or 0] if x.is_cuda else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed)
                probs = self._mean_softmax(x)
        return probs.clamp_min(TINY).log()


class _CleanGradient(torch.autograd.Function):
    """Identity forward; backward replaces NaN and infinities by zero."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


class GradientGuard(nn.Module):
    """A model every gradient attack can run on: NaN gradients read as zero, and outputs that
    carry no gradient get a zero one, so an attack reports what such gradients give instead of
    failing or stepping to NaN. Values are the model's, unchanged."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad:
            x = _CleanGradient.apply(x)
        out = self.model(x)
        if x.requires_grad and not out.requires_grad:
            out = out.detach() + 0.0 * x.flatten(1).sum(1, keepdim=True)
        return out


class SurrogateGradient(nn.Module):
    """BPDA (Athalye et al. 2018): the model's outputs on the way forward, the surrogate's
    gradient on the way back. An attack on it steps along the surrogate's gradient and judges
    success on the model itself."""

    def __init__(self, model: nn.Module, surrogate: nn.Module) -> None:
        super().__init__()
        self.model, self.surrogate = model, surrogate

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            value = self.model(x).float()
        approx = self.surrogate(x).float()
        return approx + (value - approx).detach()
