"""Decision-based attacks: HopSkipJump (Chen et al. 2020), which queries only the predicted
label, so no gradient, masked or not, can mislead it."""

from __future__ import annotations

import os
from typing import Any

# Foolbox imports GitPython, which refuses to import without a git binary unless told to be quiet.
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
import eagerpy as ep  # noqa: E402  (Foolbox's tensor layer)
import foolbox as fb  # noqa: E402


class HopSkipJump(fb.attacks.HopSkipJumpAttack):
    """Foolbox's HopSkipJump (Chen et al. 2020), run on the inputs it can start from.

    HopSkipJump walks along the decision boundary from an adversarial starting point (blended
    uniform noise). Foolbox raises when a single input has none; here such an input is
    returned unchanged (not adversarial), as is an input already misclassified.
    """

    def run(
        self, model: Any, inputs: Any, criterion: Any, *, early_stop: float | None = None, **kwargs: Any
    ) -> Any:
        x, restore_type = ep.astensor_(inputs)
        criterion_ = fb.attacks.base.get_criterion(criterion)
        if kwargs.get("starting_points") is not None or not isinstance(
            criterion_, fb.criteria.Misclassification
        ):  # a targeted criterion, or starts given: Foolbox's own run
            return super().run(model, inputs, criterion, early_stop=early_stop, **kwargs)
        is_adversarial = fb.attacks.base.get_is_adversarial(criterion_, model)
        init = self.init_attack or fb.attacks.LinearSearchBlendedUniformNoiseAttack(steps=50)
        starts = init.run(model, x, criterion_, early_stop=early_stop)
        todo = (is_adversarial(starts).raw & ~is_adversarial(x).raw).nonzero().squeeze(1)
        result = x.raw.clone()
        if len(todo):
            labels = fb.criteria.Misclassification(criterion_.labels.raw[todo])
            result[todo] = super().run(
                model, x.raw[todo], labels, early_stop=early_stop, starting_points=starts.raw[todo]
            )
        return restore_type(ep.astensor(result))
