"""Carlini & Wagner's L2 attack (2017, "Towards Evaluating the Robustness of Neural Networks")
through Foolbox: a minimal perturbation found by Adam on tanh variables and a binary search
over the constant c, with a margin loss on the logits, which distillation cannot saturate."""

from __future__ import annotations

import os
from typing import Any

# Foolbox imports GitPython, which refuses to import without a git binary unless told to be quiet.
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
import eagerpy as ep  # noqa: E402  (Foolbox's tensor layer)
import foolbox as fb  # noqa: E402


class L2CarliniWagner(fb.attacks.L2CarliniWagnerAttack):
    """Foolbox's Carlini-Wagner L2 attack, returning the input itself where its search failed.

    Foolbox starts its best adversarials at all-zero images and returns those for inputs it
    never made adversarial; its success check then classifies a black image, which a model
    usually misclassifies, so a failed search counted as a success at the image's own norm.
    Carlini's reference code returns the original input instead: never adversarial for a
    correctly classified input. A genuine minimal adversarial is never exactly all zero.
    """

    def run(
        self, model: Any, inputs: Any, criterion: Any, *, early_stop: float | None = None, **kwargs: Any
    ) -> Any:
        found = super().run(model, inputs, criterion, early_stop=early_stop, **kwargs)
        (x, adv), restore_type = ep.astensors_(inputs, found)
        failed = ep.flatten(adv, start=1).abs().max(axis=-1) == 0
        return restore_type(ep.where(failed.reshape((-1,) + (1,) * (x.ndim - 1)), x, adv))
