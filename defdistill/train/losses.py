"""Distillation methods, registered by name (the style of torchdistill's loss registry).

A method is a response (soft-label) loss on the logits, optionally plus a feature or relation
loss on an intermediate layer read through forward hooks (`register_forward_hook`), so the
models are never rewritten. Adding a method is adding a `register_method` entry.

- soft: Papernot et al. 2016, "Distillation as a Defense to Adversarial Perturbations against
  Deep Neural Networks" (soft labels at T only).
- hinton: Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a Neural Network".
- fitnets: Romero et al. 2015, "FitNets: Hints for Thin Deep Nets".
- at: Zagoruyko and Komodakis 2017, "Paying More Attention to Attention".
- rkd: Park et al. 2019, "Relational Knowledge Distillation".
- sp: Tung and Mori 2019, "Similarity-Preserving Knowledge Distillation".

Robust distillation (the student is trained on adversarial inputs it crafts against itself; the
objectives are in robust.py and run the model themselves, so `fit` calls them with the inputs):

- ard: Goldblum, Fowl, Feizi and Goldstein 2020, "Adversarially Robust Distillation" (T=30).
- rslad: Zi, Zhao, Ma and Jiang 2021, "Revisiting Adversarial Robustness Distillation: Robust Soft
  Labels Make Student Better" (the teacher's soft labels at T=1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DefdistillError
from ..models import penultimate_path
from .robust import ARD, RSLAD, Objective

PENULTIMATE = "penultimate"  # symbolic layer: the embedding the last linear layer reads


# --- the losses, as plain functions of tensors ----------------------------------------------


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    T: float,
    alpha: float = 1.0,
    t_squared: bool = True,
) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels).

    `batchmean` divides by the batch only (`mean` would also divide by the class count), and
    T^2 keeps the soft term's gradient independent of T (Hinton et al. 2015, section 2).
    `t_squared=False` drops that factor, as Papernot et al. (2016) and Carlini's reference code
    do (cross-entropy on the soft labels; its gradient equals the KL's).
    """
    soft = F.kl_div(
        F.log_softmax(student_logits / T, dim=1),
        F.log_softmax(teacher_logits / T, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (T * T if t_squared else 1.0)
    if alpha >= 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, labels)


def hint_loss(teacher_hint: torch.Tensor, regressed: torch.Tensor) -> torch.Tensor:
    """FitNets (Romero et al. 2015, eq. 3): 0.5 * ||u_h(x) - r(v_g(x))||^2, averaged over the batch."""
    return 0.5 * (teacher_hint - regressed).pow(2).flatten(1).sum(1).mean()


def attention_map(features: torch.Tensor, p: float = 2.0, size: Sequence[int] | None = None) -> torch.Tensor:
    """Zagoruyko and Komodakis 2017: mean over channels of |A|^p, flattened and L2-normalised.

    With `size`, the (H, W) map is average-pooled to that size first, so a student and a
    teacher with maps of different resolution can be compared.
    """
    if features.dim() != 4:
        raise DefdistillError(
            f"attention transfer needs (N, C, H, W) feature maps, got shape {tuple(features.shape)}: "
            "hook a convolutional layer (--layer) or use a convolutional student"
        )
    spatial = features.abs().pow(p).mean(1)
    if size is not None and tuple(spatial.shape[1:]) != tuple(size):
        height, width = size
        spatial = F.adaptive_avg_pool2d(spatial[:, None], (height, width))[:, 0]
    return F.normalize(spatial.flatten(1), dim=1)


def at_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Mean squared difference of the normalised attention maps (the authors' `at_loss`)."""
    teacher_map = attention_map(teacher_features, p)
    return (attention_map(student_features, p, teacher_features.shape[2:]) - teacher_map).pow(2).mean()


def pairwise_distances(embeddings: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distance matrix with an exact zero diagonal (whose sqrt gradient would be infinite)."""
    squared = embeddings.pow(2).sum(1)
    d2 = (squared[:, None] + squared[None, :] - 2.0 * embeddings @ embeddings.t()).clamp(min=eps)
    off_diagonal = 1.0 - torch.eye(len(embeddings), device=embeddings.device, dtype=embeddings.dtype)
    return d2.sqrt() * off_diagonal


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Park et al. 2019, eq. 4-5: Huber loss on pairwise distances, each normalised by its mean."""

    def normalised(e: torch.Tensor) -> torch.Tensor:
        d = pairwise_distances(e.flatten(1))
        return d / d[d > 0].mean()

    with torch.no_grad():
        t = normalised(teacher)
    return F.smooth_l1_loss(normalised(student), t)


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Park et al. 2019, eq. 6-7: Huber loss on the cosines of every angle e_i e_j e_k."""

    def cosines(e: torch.Tensor) -> torch.Tensor:
        e = e.flatten(1)
        unit = F.normalize(
            e[None, :, :] - e[:, None, :], p=2, dim=2
        )  # unit[i, j] = (e_j - e_i) / |.|, angles at vertex i
        return torch.bmm(unit, unit.transpose(1, 2)).flatten()

    with torch.no_grad():
        t = cosines(teacher)
    return F.smooth_l1_loss(cosines(student), t)


RKD_DISTANCE_WEIGHT = 25.0  # Park et al. 2019, section 4: lambda_RKD-D = 25, lambda_RKD-A = 50
RKD_ANGLE_WEIGHT = 50.0


def rkd_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """25 * distance loss + 50 * angle loss on the penultimate embeddings."""
    return RKD_DISTANCE_WEIGHT * rkd_distance_loss(student, teacher) + RKD_ANGLE_WEIGHT * rkd_angle_loss(
        student, teacher
    )


def similarity_matrix(features: torch.Tensor) -> torch.Tensor:
    """Tung and Mori 2019, eq. 2-3: the batch Gram matrix Q Q^T with L2-normalised rows."""
    q = features.flatten(1)
    return F.normalize(q @ q.t(), p=2, dim=1)


def sp_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Tung and Mori 2019, eq. 4: (1 / b^2) * ||G_T - G_S||_F^2."""
    b = len(student_features)
    diff = similarity_matrix(teacher_features) - similarity_matrix(student_features)
    return diff.pow(2).sum() / (b * b)


# --- hooks -----------------------------------------------------------------------------------


def resolve_layer(model: nn.Module, layer: str) -> str:
    """A module path of `model`; `penultimate` names the embedding before the last linear layer."""
    path = penultimate_path(model) if layer == PENULTIMATE else layer
    try:
        model.get_submodule(path)
    except AttributeError:
        known = ", ".join(name for name, _ in model.named_modules() if name) or "none"
        raise DefdistillError(f"the model has no layer {path!r}: pass --layer as one of {known}") from None
    return path


@contextmanager
def capture_outputs(model: nn.Module, paths: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks on the modules at `paths`; the dict holds each one's latest output."""
    outputs: dict[str, torch.Tensor] = {}

    def hook_for(path: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            outputs[path] = output

        return hook

    handles = [model.get_submodule(p).register_forward_hook(hook_for(p)) for p in paths]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


# --- the registry ------------------------------------------------------------------------------


class FeatureLoss(nn.Module):
    """A feature or relation term: forward(student_features, teacher_features) -> scalar."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.fn(student, teacher)


class HintLoss(nn.Module):
    """FitNets' hint loss through a learned regressor r, trained jointly with the student.

    r is a 1x1 convolution between feature maps (pooled to the teacher's size when the student's
    differ); for a student without spatial maps it is a linear layer onto the flattened hint.
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int]) -> None:
        super().__init__()
        self.teacher_shape = tuple(teacher_shape)
        if len(student_shape) == 3 and len(teacher_shape) == 3:
            self.regressor: nn.Module = nn.Conv2d(student_shape[0], teacher_shape[0], kernel_size=1)
            self.pool = tuple(student_shape[1:]) != tuple(teacher_shape[1:])
        else:
            self.regressor = nn.Linear(math.prod(student_shape), math.prod(teacher_shape))
            self.pool = False

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if isinstance(self.regressor, nn.Conv2d):
            regressed = self.regressor(student)
            if self.pool:
                _, height, width = self.teacher_shape
                regressed = F.adaptive_avg_pool2d(regressed, (height, width))
        else:
            regressed = self.regressor(student.flatten(1)).view(len(student), *self.teacher_shape)
        return hint_loss(teacher, regressed)


@dataclass(frozen=True)
class MethodSpec:
    """A distillation method: its response-loss mix, and its feature term if any.

    `build(student_shape, teacher_shape)` returns the feature term (shapes without the batch);
    `weight` multiplies it. `layer` is the module path hooked in both networks by default.
    A robust method has an `objective` instead, built as `objective(eps, steps, step_size, ...)`
    (robust.py), which crafts adversarial inputs against the student. `default_T` is the
    distillation temperature when none is given.
    """

    name: str
    description: str
    citation: str
    default_alpha: float
    layer: str | None = None
    weight: float = 0.0
    build: Callable[[Sequence[int], Sequence[int]], nn.Module] | None = None
    needs_spatial: bool = False
    objective: Callable[..., Objective] | None = None
    default_T: float = 100.0
    uses_T: bool = True  # False: the method's soft labels are at T=1 whatever --T says
    uses_alpha: bool = True

    @property
    def uses_features(self) -> bool:
        return self.build is not None

    @property
    def robust(self) -> bool:
        """Trains on adversarial inputs crafted against the student (robust.py)."""
        return self.objective is not None


METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a distillation method to the registry under `spec.name`."""
    METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    """Look a method up by name, with an error that lists the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise DefdistillError(
            f"unknown distillation method {name!r}: choose one of {', '.join(METHODS)}"
        ) from None


# Hinton et al. 2015 put most weight on the soft term; 0.9 / 0.1 is the usual split, and the one
# the feature methods' reference implementations (RepDistiller, mdistiller) pair their term with.
HINTON_ALPHA = 0.9

register_method(
    MethodSpec(
        "soft",
        "soft labels at T only (Papernot's defensive distillation): T^2 KL, no hard labels",
        "Papernot et al. 2016",
        default_alpha=1.0,
    )
)
register_method(
    MethodSpec(
        "hinton",
        "alpha * T^2 KL + (1 - alpha) * CE on the hard labels (alpha 0.9 by default)",
        "Hinton et al. 2015",
        default_alpha=HINTON_ALPHA,
    )
)
register_method(
    MethodSpec(
        "fitnets",
        "Hinton's loss + 0.5 ||hint - r(guided layer)||^2 on the conv trunk, r a learned 1x1 conv",
        "Romero et al. 2015",
        default_alpha=HINTON_ALPHA,
        layer="features",
        weight=1.0,
        build=HintLoss,
    )
)
register_method(
    MethodSpec(
        "at",
        "Hinton's loss + beta/2 * ||Q_S/|Q_S| - Q_T/|Q_T|||^2 on spatial attention maps (beta 1000)",
        "Zagoruyko and Komodakis 2017",
        default_alpha=HINTON_ALPHA,
        layer="features",
        weight=1000.0 / 2,  # beta / 2 with beta = 1e3, as in the authors' code
        build=lambda student_shape, teacher_shape: FeatureLoss(at_loss),
        needs_spatial=True,
    )
)
register_method(
    MethodSpec(
        "rkd",
        "Hinton's loss + 25 * distance + 50 * angle Huber losses on penultimate embeddings",
        "Park et al. 2019",
        default_alpha=HINTON_ALPHA,
        layer=PENULTIMATE,
        weight=1.0,
        build=lambda student_shape, teacher_shape: FeatureLoss(rkd_loss),
    )
)
register_method(
    MethodSpec(
        "sp",
        "Hinton's loss + gamma/b^2 ||G_T - G_S||_F^2 on row-normalised batch Gram matrices (gamma 3000)",
        "Tung and Mori 2019",
        default_alpha=HINTON_ALPHA,
        layer="features",
        weight=3000.0,
        build=lambda student_shape, teacher_shape: FeatureLoss(sp_loss),
    )
)

# Robust distillation: the objective's own defaults (robust.py), which follow each paper's code.
register_method(
    MethodSpec(
        "ard",
        f"alpha * T^2 KL(t(x)/T || s(x')/T) + (1 - alpha) CE(s(x), y), x' by PGD on the student's CE "
        f"(alpha {ARD.alpha:g}, T {ARD.T:g})",
        "Goldblum et al. 2020",
        default_alpha=ARD.alpha,
        objective=ARD,
        default_T=ARD.T,
    )
)
register_method(
    MethodSpec(
        "rslad",
        f"{RSLAD.robust_weight:.3g} KL(t(x) || s(x')) + {1 - RSLAD.robust_weight:.3g} KL(t(x) || s(x)), "
        "the teacher's soft labels at T=1, x' by PGD on that KL",
        "Zi et al. 2021",
        default_alpha=1.0,
        objective=RSLAD,
        default_T=1.0,
        uses_T=False,
        uses_alpha=False,
    )
)


class DistillationObjective(nn.Module):
    """The loss `fit` minimises: response loss on the logits + weight * feature term.

    The student's hooked features arrive through `student_outputs`, the dict that
    `capture_outputs` fills during the student's forward pass; the teacher's come with the
    batch's targets (`{"logits": ..., "features": ...}`, precomputed and cached).
    """

    def __init__(
        self,
        T: float,
        alpha: float,
        feature_loss: nn.Module | None = None,
        weight: float = 0.0,
        student_layer: str | None = None,
        student_outputs: dict[str, torch.Tensor] | None = None,
        t_squared: bool = True,
    ) -> None:
        super().__init__()
        if feature_loss is not None and student_layer is None:
            raise ValueError("a feature loss needs the student layer whose outputs it reads")
        self.T, self.alpha, self.weight, self.t_squared = T, alpha, weight, t_squared
        self.feature_loss = feature_loss
        self.student_layer = student_layer
        self.student_outputs = student_outputs if student_outputs is not None else {}

    def forward(
        self, logits: torch.Tensor, targets: dict[str, torch.Tensor] | torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        teacher_logits = targets["logits"] if isinstance(targets, dict) else targets
        loss = distillation_loss(logits, teacher_logits, labels, self.T, self.alpha, self.t_squared)
        if self.feature_loss is None or self.student_layer is None:  # (both or neither: __init__)
            return loss
        if not isinstance(targets, dict):
            raise TypeError("a feature loss needs the teacher's features: targets {'logits', 'features'}")
        student_features = self.student_outputs[self.student_layer]
        return loss + self.weight * self.feature_loss(student_features, targets["features"])
