"""Training loops: the teacher at temperature T, and the loop the student shares with it."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import get_dataset_spec, load_dataset
from .errors import DefdistillError
from .models import build_model, get_arch_spec
from .progress import SILENT, ProgressReporter
from .runs import check_temperature, run_dir, run_name, save_run
from .runtime import library_versions, resolve_device, seed_everything

EVAL_BATCH = 1024


@dataclass(frozen=True)
class Recipe:
    """Optimiser settings. Adam, because SGD at a fixed learning rate does not train at T=100:
    the loss gradient shrinks by 1/T while Adam's step size does not depend on its scale."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0


RECIPES: dict[str, Recipe] = {"digits": Recipe()}


def recipe_for(dataset: str) -> Recipe:
    """The default training recipe of a dataset."""
    return RECIPES.get(dataset, Recipe(epochs=50, batch_size=128))


@dataclass
class RunResult:
    """A finished training run: where it lies, what its sidecar says, and notices for the user."""

    path: Path
    meta: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def check_positive_int(value: int, option: str) -> int:
    """Validate a count option (epochs, batch size, n)."""
    if not isinstance(value, int) or value <= 0:
        raise DefdistillError(f"{option} must be a positive integer, got {value}")
    return value


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


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn,
    recipe: Recipe,
    device: torch.device,
    seed: int,
    progress: ProgressReporter = SILENT,
    description: str = "training",
) -> list[float]:
    """Minimise `loss_fn(logits, targets[batch], y[batch])` with Adam; return the epoch losses.

    The data stay on the device as whole tensors; batches are index slices of a seeded
    permutation. Losses are summed on the device and read once an epoch (no per-batch sync).
    """
    model.to(device).train()
    x, y, targets = x.to(device), y.to(device), targets.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    n = len(x)
    epoch_losses = []
    with progress.task(description, recipe.epochs) as advance:
        for epoch in range(recipe.epochs):
            order = torch.randperm(n, generator=generator).to(device)
            total = torch.zeros((), device=device)
            for start in range(0, n, recipe.batch_size):
                idx = order[start : start + recipe.batch_size]
                loss = loss_fn(model(x[idx]), targets[idx], y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(idx)
            epoch_loss = total.item() / n
            if not math.isfinite(epoch_loss):
                raise DefdistillError(
                    f"the training loss became {epoch_loss} in epoch {epoch + 1}: "
                    "lower the learning rate or the temperature"
                )
            epoch_losses.append(epoch_loss)
            advance(1)
    model.eval()
    return epoch_losses


def temperature_cross_entropy(T: float) -> LossFn:
    """Cross-entropy of softmax(logits / T) against the hard labels."""

    def loss(logits: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits / T, labels)

    return loss


def base_meta(dataset: str, arch: str, role: str, T: float, seed: int, recipe: Recipe) -> dict[str, Any]:
    """The sidecar fields every run shares."""
    return {
        "dataset": dataset,
        "arch": arch,
        "role": role,
        "T": T,
        "seed": seed,
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "lr": recipe.lr,
        "optimizer": "adam",
    }


def finish_meta(meta: dict[str, Any], started: float, losses: list[float], test_acc: float) -> dict[str, Any]:
    """Add what is known once training ends."""
    return {
        **meta,
        "clean_acc": test_acc,
        "final_train_loss": losses[-1] if losses else None,
        "versions": library_versions(),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "command": " ".join(["defdistill", *sys.argv[1:]]) if sys.argv else "",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def train_teacher(
    dataset: str = "digits",
    T: float = 1.0,
    epochs: int | None = None,
    seed: int = 0,
    arch: str | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    runs_dir: str | Path = "runs",
    data_dir: str | Path = "data",
    device: str = "auto",
    progress: ProgressReporter = SILENT,
) -> RunResult:
    """Train a teacher with cross-entropy on softmax(z/T); save it as `teacher-T<T>`."""
    spec = get_dataset_spec(dataset)
    T = check_temperature(T)
    arch = arch or spec.default_arch
    get_arch_spec(arch)
    base = recipe_for(dataset)
    recipe = Recipe(
        epochs=check_positive_int(epochs, "--epochs") if epochs is not None else base.epochs,
        batch_size=check_positive_int(batch_size, "--batch-size") if batch_size is not None else base.batch_size,
        lr=lr if lr is not None else base.lr,
        weight_decay=base.weight_decay,
    )
    torch_device = resolve_device(device)
    x_train, y_train = load_dataset(dataset, "train", data_dir)
    x_test, y_test = load_dataset(dataset, "test", data_dir)

    started = time.perf_counter()
    seed_everything(seed)
    model = build_model(arch, spec.shape, spec.num_classes, spec.mean, spec.std)
    name = run_name("teacher", T)
    losses = fit(
        model, x_train, y_train, y_train, temperature_cross_entropy(T), recipe, torch_device, seed,
        progress, f"{dataset} {name}",
    )
    test_acc = accuracy(model, x_test, y_test, torch_device)
    meta = finish_meta(base_meta(dataset, arch, "teacher", T, seed, recipe), started, losses, test_acc)
    meta["teacher"] = None
    path = run_dir(runs_dir, dataset, name)
    meta = save_run(path, model.cpu(), meta)
    return RunResult(path, meta)
