"""Gradient attacks through Foolbox: FGSM, PGD on cross-entropy, on the Carlini-Wagner margin and
on logits / T, and PGD transferred from a surrogate model (Goodfellow et al. 2015; Madry et al.
2018; Carlini & Wagner 2017; Papernot et al. 2017)."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

import torch

# Foolbox imports GitPython, which refuses to import without a git binary unless told to be quiet.
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
import eagerpy as ep  # noqa: E402  (Foolbox's tensor layer)
import foolbox as fb  # noqa: E402


def _as_model(forward: Callable[[Any], Any]) -> fb.Model:
    """A forward function where Foolbox's `get_loss_fn` wants a Model: the loss it builds only
    calls it on the inputs, so wrapping the model's call (to keep or rescale its logits) is enough."""
    return cast(fb.Model, forward)


class FGSM(fb.attacks.FGSM):
    """Foolbox's FGSM, keeping the logits of its one forward pass in `clean_logits`.

    FGSM takes its single gradient at the clean inputs, so those logits are the clean
    predictions that `run_attack` needs: kept, they spare it a forward pass. The attack
    itself is Foolbox's, unchanged (same loss, same step, same adversarial examples).
    """

    clean_logits: torch.Tensor | None = None

    def get_loss_fn(self, model: Any, labels: Any) -> Callable[[Any], Any]:
        def keeping_logits(inputs: Any) -> Any:
            logits = model(inputs)
            self.clean_logits = logits.raw.detach()
            return logits

        return super().get_loss_fn(_as_model(keeping_logits), labels)


class MarginLinfPGD(fb.attacks.LinfPGD):
    """L-inf PGD ascending the Carlini-Wagner margin max_{i != y} z_i - z_y on the logits.

    Carlini & Wagner (2017) replace cross-entropy by this margin because it does not saturate:
    scaling the logits by T scales its gradient by T, where the cross-entropy gradient of a
    distilled network underflows to exactly zero. The sign step of L-inf PGD ignores the scale.
    """

    def get_loss_fn(self, model: Any, labels: Any) -> Callable[[Any], Any]:
        def margin(inputs: Any) -> Any:
            logits = model(inputs)
            true = (logits * ep.onehot_like(logits, labels)).sum(axis=-1)
            best_other = (logits - ep.onehot_like(logits, labels, value=ep.inf)).max(axis=-1)
            return (best_other - true).sum()

        return margin


class TemperatureLinfPGD(fb.attacks.LinfPGD):
    """L-inf PGD on the cross-entropy of logits / T (Carlini & Wagner 2016 on distillation).

    Dividing a network's logits by the temperature it was trained at undoes the scale that
    saturates its softmax at T=1, so the cross-entropy gradient no longer vanishes.
    """

    def __init__(self, *, T: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.T = float(T)

    def get_loss_fn(self, model: Any, labels: Any) -> Callable[[Any], Any]:
        def scaled(inputs: Any) -> Any:
            return model(inputs) / self.T

        return super().get_loss_fn(_as_model(scaled), labels)


class TransferAttack(fb.attacks.base.FixedEpsilonAttack):
    """Craft adversarial examples with `attack` on a surrogate model, judge them on the target.

    A black-box transfer attack (Papernot et al. 2017): it never queries the target's
    gradients. Foolbox's base class evaluates success on the model the attack is called with,
    which is the target.
    """

    def __init__(
        self, surrogate: fb.Model, attack: fb.attacks.base.FixedEpsilonAttack, identity: str = ""
    ) -> None:
        self.surrogate = surrogate
        self.attack = attack
        self.identity = identity  # the surrogate's weights and the attack's settings; "" disables the cache

    @property
    def distance(self) -> Any:
        return self.attack.distance

    def run(self, model: Any, inputs: Any, criterion: Any, *, epsilon: float, **kwargs: Any) -> Any:
        # The examples depend on the surrogate, the inputs, the labels, epsilon and the random
        # start, never on the target: attacking a second model on the same inputs (the demo's
        # three models, a sweep's teacher and student) reuses them. The generator state is part
        # of the key and is restored on a hit, so the numbers are those of crafting them again.
        x = ep.astensor(inputs)
        labels = fb.attacks.base.get_criterion(criterion)
        if not self.identity or kwargs or not isinstance(labels, fb.criteria.Misclassification):
            return self.attack.run(self.surrogate, inputs, criterion, epsilon=epsilon, **kwargs)
        device = x.raw.device
        key = _digest(self.identity, epsilon, x.raw, labels.labels.raw, _rng_state(device))
        if key in _TRANSFER_CACHE:
            adversarial, state_after = _TRANSFER_CACHE[key]
            _TRANSFER_CACHE.move_to_end(key)
            _set_rng_state(device, state_after)
            return ep.astensor(adversarial.clone())
        adversarial = self.attack.run(self.surrogate, inputs, criterion, epsilon=epsilon, **kwargs)
        _TRANSFER_CACHE[key] = (ep.astensor(adversarial).raw.detach().clone(), _rng_state(device))
        while len(_TRANSFER_CACHE) > TRANSFER_CACHE_SIZE:
            _TRANSFER_CACHE.popitem(last=False)
        return adversarial


TRANSFER_CACHE_SIZE = 256  # batches: 4 budgets x 64 batches of 500 inputs, a few MB for digits or MNIST
_TRANSFER_CACHE: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()


def _rng_state(device: torch.device) -> torch.Tensor:
    """The state of the generator a random start on `device` draws from."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.get_rng_state()


def _set_rng_state(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def _digest(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            part = part.detach().cpu().contiguous()
            digest.update(str((part.dtype, tuple(part.shape))).encode())
            digest.update(
                part.numpy().tobytes() if part.dtype != torch.bfloat16 else part.float().numpy().tobytes()
            )
        else:
            digest.update(repr(part).encode())
        digest.update(b"|")
    return digest.hexdigest()
