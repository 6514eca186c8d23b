"""Architecture registry. Every model takes images in [0, 1] and returns logits at T=1.

Normalisation is the model's first layer, so attacks and their epsilon bounds work in the
same [0, 1] pixel space a reader imagines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .errors import DefdistillError


class Normalize(nn.Module):
    """(x - mean) / std per channel; mean and std are saved with the weights."""

    mean: torch.Tensor  # buffers: typed here, since register_buffer does not tell mypy
    std: torch.Tensor

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class _ChannelsLastMaxPool(torch.autograd.Function):
    """Max-pooling computed in channels-last layout, returned (values and argmax indices) in the
    input's layout; the backward is PyTorch's own, from those indices."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, *options: object) -> torch.Tensor:
        out, indices = torch.ops.aten.max_pool2d_with_indices(
            x.contiguous(memory_format=torch.channels_last), *options
        )
        indices = indices.contiguous()
        ctx.save_for_backward(x, indices)
        ctx.options = options  # type: ignore[attr-defined]
        return out.contiguous()

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        x, indices = ctx.saved_tensors  # type: ignore[attr-defined]
        options = ctx.options  # type: ignore[attr-defined]
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), x, *options, indices)
        return (grad_x, *([None] * len(options)))


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d whose CPU kernel runs in channels-last layout: the same maxima, the same
    gradient (PyTorch's backward, from the same argmax indices), in the same NCHW layout out.

    PyTorch's NCHW pooling kernel on the CPU costs about 0.3 us per feature map, so on small maps
    it takes as long as the convolutions: on a digits batch of 120 (64 maps of 8x8) 2.4 ms, against
    0.13 ms channels-last (tests/test_performance.py checks values and gradients are identical).
    Other devices, and a pooling asked for its indices, use PyTorch's kernel as it is.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or self.return_indices:
            return super().forward(x)
        options = (self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
        if torch.is_grad_enabled() and x.requires_grad:
            return _ChannelsLastMaxPool.apply(x, *options)
        return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), *options).contiguous()


class ImageClassifier(nn.Module):
    """normalize -> features -> classifier; `features` is where feature-based methods hook."""

    def __init__(self, normalize: Normalize, features: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)))


@dataclass(frozen=True)
class ArchSpec:
    """A named architecture: how to build it for a given input shape and class count."""

    name: str
    description: str
    build: Callable[[tuple[int, int, int], int], tuple[nn.Module, nn.Module]]


ARCHITECTURES: dict[str, ArchSpec] = {}


def register_arch(name: str, description: str):
    """Decorator: register a function (shape, num_classes) -> (features, classifier)."""

    def decorate(build: Callable[[tuple[int, int, int], int], tuple[nn.Module, nn.Module]]):
        ARCHITECTURES[name] = ArchSpec(name, description, build)
        return build

    return decorate


def get_arch_spec(name: str) -> ArchSpec:
    """Look an architecture up by name, with an error that lists the known ones."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise DefdistillError(
            f"unknown architecture {name!r}: choose one of {', '.join(ARCHITECTURES)}"
        ) from None


def build_model(
    arch: str,
    shape: tuple[int, int, int],
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> ImageClassifier:
    """Instantiate a registered architecture for inputs of `shape` (C, H, W)."""
    features, classifier = get_arch_spec(arch).build(shape, num_classes)
    return ImageClassifier(Normalize(mean, std), features, classifier)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _flat_size(features: nn.Module, shape: tuple[int, int, int]) -> int:
    with torch.no_grad():
        return features(torch.zeros(1, *shape)).flatten(1).shape[1]


@register_arch("digits-cnn", "two 3x3 conv (32, 64), max-pool, FC 128, dropout; for 8x8 digits")
def _digits_cnn(shape: tuple[int, int, int], num_classes: int) -> tuple[nn.Module, nn.Module]:
    features = nn.Sequential(
        nn.Conv2d(shape[0], 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        MaxPool2d(2),
    )
    classifier = nn.Sequential(
        nn.Flatten(),
        nn.Linear(_flat_size(features, shape), 128),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(128, num_classes),
    )
    return features, classifier


def _papernot_net(
    shape: tuple[int, int, int], num_classes: int, convs: tuple[int, int, int, int], fc: int
) -> tuple[nn.Module, nn.Module]:
    c1, c2, c3, c4 = convs
    features = nn.Sequential(
        nn.Conv2d(shape[0], c1, 3),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3),
        nn.ReLU(),
        MaxPool2d(2),
        nn.Conv2d(c2, c3, 3),
        nn.ReLU(),
        nn.Conv2d(c3, c4, 3),
        nn.ReLU(),
        MaxPool2d(2),
    )
    # Table II of the paper gives a dropout rate of 0.5 for the fully connected layers, so both
    # hidden ones have it; Carlini's reference code, training the same network, has it after
    # the first only. Dropout has no parameters, so both readings count the same parameters.
    classifier = nn.Sequential(
        nn.Flatten(),
        nn.Linear(_flat_size(features, shape), fc),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(fc, fc),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(fc, num_classes),
    )
    return features, classifier


@register_arch(
    "papernot-mnist",
    "Papernot et al. 2016, Table 1 (MNIST): conv 32, 32, pool, conv 64, 64, pool, FC 200, 200",
)
def _papernot_mnist(shape: tuple[int, int, int], num_classes: int) -> tuple[nn.Module, nn.Module]:
    return _papernot_net(shape, num_classes, (32, 32, 64, 64), 200)


@register_arch(
    "papernot-cifar10",
    "Papernot et al. 2016, Table 1 (CIFAR-10): conv 64, 64, pool, conv 128, 128, pool, FC 256, 256",
)
def _papernot_cifar10(shape: tuple[int, int, int], num_classes: int) -> tuple[nn.Module, nn.Module]:
    return _papernot_net(shape, num_classes, (64, 64, 128, 128), 256)


# --- students smaller than the digits teacher (compression studies) -----------------------


def _small_cnn(
    shape: tuple[int, int, int], num_classes: int, channels: tuple[int, int], fc: int
) -> tuple[nn.Module, nn.Module]:
    c1, c2 = channels
    features = nn.Sequential(
        nn.Conv2d(shape[0], c1, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        MaxPool2d(2),
    )
    classifier = nn.Sequential(
        nn.Flatten(),
        nn.Linear(_flat_size(features, shape), fc),
        nn.ReLU(),
        nn.Linear(fc, num_classes),
    )
    return features, classifier


@register_arch("digits-cnn-small", "digits-cnn at half width: conv 16, 32, max-pool, FC 64 (1/4 the size)")
def _digits_cnn_small(shape: tuple[int, int, int], num_classes: int) -> tuple[nn.Module, nn.Module]:
    return _small_cnn(shape, num_classes, (16, 32), 64)


@register_arch("digits-cnn-tiny", "conv 8, 16, max-pool, FC 32 (about 1/15 of digits-cnn)")
def _digits_cnn_tiny(shape: tuple[int, int, int], num_classes: int) -> tuple[nn.Module, nn.Module]:
    return _small_cnn(shape, num_classes, (8, 16), 32)


@register_arch("digits-mlp", "no convolutions: FC 128, FC 64 on the flattened image")
def _digits_mlp(shape: tuple[int, int, int], num_classes: int) -> tuple[nn.Module, nn.Module]:
    features = nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], 128), nn.ReLU())
    classifier = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, num_classes))
    return features, classifier


def penultimate_path(model: nn.Module) -> str:
    """Module path whose output is the embedding the last linear layer reads.

    Dropout is skipped: in training mode its output is a noisy copy of the embedding, and
    relational losses (RKD) should compare the embedding itself.
    """
    named = [(name, module) for name, module in model.named_modules() if name.startswith("classifier.")]
    last_linear = max((i for i, (_, m) in enumerate(named) if isinstance(m, nn.Linear)), default=None)
    if last_linear is None:
        raise DefdistillError("the model's classifier has no linear layer: it has no penultimate embedding")
    for name, module in reversed(named[:last_linear]):
        if not isinstance(module, nn.Dropout):
            return name
    return "features"


EVAL_BATCH = 1024


def predict_logits(
    model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = EVAL_BATCH
) -> torch.Tensor:
    """Logits (T=1) of `model` on `x`, on the CPU, computed in eval mode without autograd."""
    model.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            outputs.append(model(x[start : start + batch_size].to(device)).float().cpu())
    return torch.cat(outputs) if outputs else torch.empty(0)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    """Fraction of `x` that `model` classifies as `y`."""
    return (predict_logits(model, x, device).argmax(1) == y).float().mean().item()
