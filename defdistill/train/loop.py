"""Training loops: the teacher at temperature T, and the loop the student shares with it."""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeGuard, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import (
    check_budget_options,
    check_choice,
    check_num_workers,
    check_positive_int,
    check_seed,
    check_temperature,
)
from ..core.distributed import (
    World,
    all_reduce_sum,
    barrier,
    current_world,
    launched_world,
    rank_seed,
    session,
)
from ..core.fileio import ensure_writable_dir
from ..core.progress import SILENT, ProgressReporter
from ..core.runtime import derive_seed, library_versions, resolve_device, seed_everything
from ..data.registry import get_dataset_spec, load_dataset
from ..errors import DefdistillError
from ..models import accuracy, build_model, get_arch_spec
from ..store.checkpoint import TrainingCheckpoint
from ..store.runs import SURROGATE_NAME, check_not_finished, run_dir, run_name, save_run
from .robust import ADVERSARIAL_METHODS, TRADES, Objective, check_budget, default_budget

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class Recipe:
    """Optimiser settings of a training run: a named preset of RECIPES, with the user's overrides.

    Adam is the default: SGD at a fixed learning rate does not train at T=100 from a random
    initialisation (the loss gradient shrinks by 1/T, while Adam's step does not depend on its
    scale). The paper's SGD recipes get there from a warm start instead: `warmup_epochs_at_T1`
    ordinary epochs (cross-entropy at T=1) before training at T; see `warm_start`.
    """

    epochs: int = 30  # at T, after the warm-up epochs
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # one of OPTIMIZERS
    momentum: float = 0.0  # SGD only
    nesterov: bool = False
    lr_decay: float = 1.0  # the learning rate is multiplied by this each epoch after decay_delay epochs
    momentum_decay: float = 1.0  # likewise the momentum
    decay_delay: int = 0
    warmup_epochs_at_T1: int = 0
    # Hinton et al. multiply the soft term by T^2 so its gradient does not shrink with T; Papernot
    # et al. and Carlini's code train the student with plain cross-entropy on the soft labels.
    # Under plain SGD the factor matters: T^2 = 10^4 at T=100 multiplies the step by as much.
    t_squared: bool = True
    name: str = "custom"


# Papernot, McDaniel, Wu, Jha and Swami, "Distillation as a Defense to Adversarial Perturbations
# against Deep Neural Networks", IEEE S&P 2016, Table II (training parameters), as we read it:
#                      MNIST   CIFAR-10
#   learning rate      0.1     0.01 (decay 0.95)
#   momentum           0.5     0.9 (decay 0.5)
#   decay delay        -       10 epochs
#   dropout (FC)       0.5     0.5        (in the architectures, models.py)
#   batch size         128     128
#   epochs             50      50
# The table does not say how the decays apply. We read them as per-epoch factors once the
# 10-epoch delay has passed (lr 0.01 * 0.95^k, momentum 0.9 * 0.5^k after k decays); that
# reading is ours, and the momentum is near zero within a few epochs of the delay under it.
# The warm start (one ordinary epoch at T=1) is from Carlini's reference code
# (nn_robust_attacks, train_models.py), not from the paper, which does not say how its
# networks were initialised at high T.
RECIPES: dict[str, Recipe] = {
    "digits": Recipe(name="digits"),
    "papernot-mnist": Recipe(
        epochs=50, batch_size=128, lr=0.1, optimizer="sgd", momentum=0.5,
        warmup_epochs_at_T1=1, t_squared=False, name="papernot-mnist",
    ),
    "papernot-cifar10": Recipe(
        epochs=50, batch_size=128, lr=0.01, optimizer="sgd", momentum=0.9, lr_decay=0.95,
        momentum_decay=0.5, decay_delay=10, warmup_epochs_at_T1=1, t_squared=False, name="papernot-cifar10",
    ),
}  # fmt: skip
DATASET_RECIPES = {
    "digits": "digits",
    "mnist": "papernot-mnist",
    "fashion-mnist": "papernot-mnist",
    "cifar10": "papernot-cifar10",
}


def get_recipe(name: str) -> Recipe:
    """A named preset, with an error that lists the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise DefdistillError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}") from None


def recipe_for(dataset: str) -> Recipe:
    """The default training recipe of a dataset (the paper's for MNIST-like data and CIFAR-10)."""
    return RECIPES[DATASET_RECIPES.get(dataset, "digits")]


def recipe_settings(recipe: Recipe) -> dict[str, Any]:
    """Every setting of a recipe, for run metadata and checkpoint compatibility checks."""
    settings = {f.name: getattr(recipe, f.name) for f in fields(recipe) if f.name != "name"}
    return {"recipe": recipe.name, **settings}


def schedule(recipe: Recipe, epoch: int) -> tuple[float, float]:
    """Learning rate and momentum of `epoch` (0-based): the base values for the first
    `decay_delay` epochs, then multiplied by `lr_decay` and `momentum_decay` once per epoch."""
    decays = max(0, epoch + 1 - max(recipe.decay_delay, 1))
    return recipe.lr * recipe.lr_decay**decays, recipe.momentum * recipe.momentum_decay**decays


def make_optimizer(params: list[nn.Parameter], recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimiser over `params`."""
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
        )  # fmt: skip
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise DefdistillError(f"unknown optimizer {recipe.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")


@dataclass
class RunResult:
    """A finished training run: where it lies, what its sidecar says, and notices for the user."""

    path: Path
    meta: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def make_recipe(
    dataset: str,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    recipe: str | None = None,
) -> Recipe:
    """The dataset's recipe (or the preset named `recipe`) with the user's overrides, each validated."""
    base = get_recipe(recipe) if recipe is not None else recipe_for(dataset)
    bad_lr = isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0
    if lr is not None and bad_lr:
        raise DefdistillError(f"the learning rate must be a finite number > 0, got {lr}")
    return replace(
        base,
        epochs=base.epochs if epochs is None else check_positive_int(epochs, "--epochs"),
        batch_size=base.batch_size if batch_size is None else check_positive_int(batch_size, "--batch-size"),
        lr=base.lr if lr is None else float(lr),
    )


def training_checkpoint(
    path: Path,
    role: str,
    dataset: str,
    arch: str,
    T: float,
    seed: int,
    recipe: Recipe,
    resume: bool,
    **extra: Any,
) -> tuple[TrainingCheckpoint, list[str]]:
    """The run's per-epoch checkpoint, checked before any heavy work when resuming."""
    config = {
        "role": role, "dataset": dataset, "arch": arch, "T": T, "seed": seed,
        **{k: v for k, v in recipe_settings(recipe).items() if k not in ("epochs", "recipe")}, **extra,
    }  # fmt: skip
    checkpoint = TrainingCheckpoint(path, config, resume)
    notes = []
    if resume and checkpoint.exists():
        done = checkpoint.read_meta(recipe.epochs)["epoch"]
        notes.append(f"resuming {path.name} after epoch {done} of {recipe.epochs}")
    elif resume:
        notes.append(f"no checkpoint in {path}: nothing to resume, training {path.name} from the first epoch")
    return checkpoint, notes


LossFn = Callable[[torch.Tensor, Any, torch.Tensor], torch.Tensor]


def needs_inputs(loss_fn: object) -> TypeGuard[Objective]:
    """Whether `fit` calls `loss_fn(model, xb, targets, yb)` (an objective that runs the model
    itself, as adversarial training crafts its inputs: train.robust) instead of
    `loss_fn(model(xb), targets, yb)`. Such an objective says so with `needs_inputs = True`."""
    return bool(getattr(loss_fn, "needs_inputs", False))


def _to_device(targets: torch.Tensor | dict[str, torch.Tensor], device: torch.device) -> Any:
    # non_blocking: from pinned memory (the DataLoader path on CUDA) the copy overlaps compute
    if isinstance(targets, dict):
        return {k: v.to(device, non_blocking=True) for k, v in targets.items()}
    return targets.to(device, non_blocking=True)


def _take(targets: torch.Tensor | dict[str, torch.Tensor], idx: torch.Tensor) -> Any:
    if isinstance(targets, dict):
        return {k: v[idx] for k, v in targets.items()}
    return targets[idx]


AMP_CHOICES = ("auto", "on", "off")


def resolve_amp(amp: str | bool | None, device: torch.device) -> str | None:
    """The mixed-precision dtype training uses on `device` ("float16", "bfloat16") or None.

    `auto` (and None) turns it on for CUDA only: float16 autocast with a gradient scaler, which
    tensor cores run several times faster than float32. `on` also allows bfloat16 on the CPU
    (a gain only on CPUs with bf16 instructions). Attacks and evaluation never autocast: a
    rounded gradient is a weaker attack, and a weaker attack reports robustness that is not there.
    """
    if isinstance(amp, bool):
        amp = "on" if amp else "off"
    amp = amp or "auto"
    if amp not in AMP_CHOICES:
        raise DefdistillError(f"unknown --amp {amp!r}: choose one of {', '.join(AMP_CHOICES)}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type == "cuda":
        return "float16"
    if device.type == "cpu":
        return "bfloat16"
    raise DefdistillError(f"--amp on is supported on CUDA and the CPU, not {device.type}: pass --amp off")


class _BatchSampler:
    """The batches of the current epoch, in order; `fit` refills it before each epoch, so the
    DataLoader's persistent workers serve the seeded order of the in-memory path."""

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _IndexedTensors(torch.utils.data.Dataset):
    """Whole tensors, indexed a batch at a time (the sampler yields index tensors)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | dict[str, torch.Tensor]):
        self.x, self.y, self.targets = x, y, targets

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        return self.x[idx], self.y[idx], _take(self.targets, idx)


def _rank_share(batch: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    """This rank's equal part of a global batch; the remainder (< size examples) is dropped, so
    DDP's average of the ranks' mean gradients is the mean gradient of the kept examples."""
    share = len(batch) // size
    return batch[rank * share : (rank + 1) * share]


@dataclass
class _Feeder:
    """DataLoader workers that gather each epoch's batches from host memory (`num_workers` > 0):
    `fit` hands the epoch's batches to the sampler, the loader yields the gathered tensors."""

    sampler: _BatchSampler
    loader: torch.utils.data.DataLoader


def _feeder(
    x: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor | dict[str, torch.Tensor],
    device: torch.device,
    num_workers: int,
    seed: int,
) -> _Feeder | None:
    """The DataLoader path for `num_workers` > 0; None for whole tensors on the device."""
    if num_workers == 0:
        return None
    sampler = _BatchSampler()
    loader = torch.utils.data.DataLoader(
        _IndexedTensors(x, y, targets), sampler=sampler, batch_size=None, num_workers=num_workers,
        pin_memory=device.type == "cuda", persistent_workers=True,
        generator=torch.Generator().manual_seed(seed),  # not the global RNG, which dropout draws from
    )  # fmt: skip
    return _Feeder(sampler, loader)


class _Stepper:
    """One optimisation step: the model (DDP-wrapped under torchrun) and either an objective
    that runs it (`needs_inputs`) or a loss on its logits, the optimiser, and the precision
    (float16 autocast with a gradient scaler, bfloat16 autocast, or float32)."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn | Objective,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        amp: str | None,
    ) -> None:
        self.model, self.optimizer, self.device = model, optimizer, device
        self.objective: Objective | None = loss_fn if needs_inputs(loss_fn) else None
        # not an objective that runs the model: a loss on its logits
        self.loss_fn: LossFn = cast(LossFn, loss_fn)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "float16")
        self.autocast_dtype: torch.dtype | None = getattr(torch, amp) if amp else None

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, tb: Any) -> torch.Tensor:
        """One step on a batch; its (mean) loss."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.objective is not None:
            loss = self.objective(self.model, xb, tb, yb)
            loss.backward()
            self.optimizer.step()
        elif self.autocast_dtype is None:
            loss = self.loss_fn(self.model(xb), tb, yb)
            loss.backward()
            self.optimizer.step()
        else:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                loss = self.loss_fn(self.model(xb), tb, yb)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)  # skipped, and the scale lowered, when a gradient overflowed
            self.scaler.update()
        return loss


def _distributed(
    model: nn.Module, loss_fn: LossFn | Objective, device: torch.device
) -> tuple[nn.Module, LossFn | Objective]:
    """The model, and a loss with trained parameters (FitNets' regressor), wrapped in
    DistributedDataParallel, which averages their gradients over the ranks."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    # A 1-channel conv's gradient comes in another (equally valid) memory layout than the
    # bucket's: DDP copies it and warns about speed once per process, which says nothing here.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    trained_loss = isinstance(loss_fn, nn.Module) and any(p.requires_grad for p in loss_fn.parameters())
    return DDP(model, device_ids=ids), DDP(loss_fn, device_ids=ids) if trained_loss else loss_fn


def _set_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe, epoch: int) -> None:
    """The recipe's learning rate (and momentum, where the optimiser has one) for `epoch`."""
    lr, momentum = schedule(recipe, epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
        if "momentum" in group:
            group["momentum"] = momentum


def _epoch_batches(
    n: int, batch_size: int, generator: torch.Generator, device: torch.device | None, world: World
) -> list[torch.Tensor]:
    """The epoch's batches of indices: a seeded permutation (moved to `device` once, when the
    data sit there), cut into batches, each split between the ranks under torchrun."""
    order = torch.randperm(n, generator=generator)
    if device is not None:
        order = order.to(device)  # one copy, then slices: no per-batch transfer
    batches = [order[s : s + batch_size] for s in range(0, n, batch_size)]
    if world.distributed:
        batches = [b for b in (_rank_share(b, world.rank, world.size) for b in batches) if len(b)]
    return batches


def _epoch_loss(
    step: _Stepper, stream: Iterable[tuple[torch.Tensor, torch.Tensor, Any]], device: torch.device
) -> float:
    """One epoch of steps; the mean loss over its examples (over every rank), read once."""
    total = torch.zeros((), device=device)
    count = 0
    for xb, yb, tb in stream:
        loss = step(xb, yb, tb)
        total += loss.detach().float() * len(yb)
        count += len(yb)
    summed = all_reduce_sum(torch.stack([total, torch.tensor(float(count), device=device)]))
    return summed[0].item() / max(summed[1].item(), 1.0)


def _check_finite(epoch_loss: float, epoch: int, checkpoint: TrainingCheckpoint | None) -> None:
    """Stop on a NaN or Inf epoch loss, saying where the last good state is kept."""
    if math.isfinite(epoch_loss):
        return
    kept = ""
    if checkpoint is not None and epoch:
        kept = f"; the state after epoch {epoch} is kept in {checkpoint.directory}"
    raise DefdistillError(
        f"the training loss became {epoch_loss} in epoch {epoch + 1}: lower the learning rate "
        f"or the temperature (no finished run was replaced{kept})"
    )


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor | dict[str, torch.Tensor],
    loss_fn: LossFn | Objective,
    recipe: Recipe,
    device: torch.device,
    seed: int,
    progress: ProgressReporter = SILENT,
    description: str = "training",
    checkpoint: TrainingCheckpoint | None = None,
    amp: str | None = None,
    num_workers: int = 0,
) -> list[float]:
    """Minimise `loss_fn(logits, targets[batch], y[batch])` with the recipe's optimiser and
    learning-rate schedule; return the epoch losses. An objective marked `needs_inputs`
    (train.robust: adversarial training, robust distillation) is called as
    `loss_fn(model, x[batch], targets[batch], y[batch])` instead; it trains in float32 on one
    process (no `amp`, no torchrun).

    By default the data go to the device as whole tensors and batches are index slices of a
    seeded permutation; with `num_workers` > 0, DataLoader workers gather the same batches
    from host memory (pinned on CUDA) instead, for data that should not sit on the device:
    the weights are the same either way. Losses are summed on the device and read once an
    epoch (no per-batch sync). `targets` may be a dict of per-example tensors (teacher logits
    and features), each sliced alike. A `loss_fn` that is an nn.Module with parameters
    (FitNets' regressor) is trained too. `amp` is a dtype name from `resolve_amp`.

    Under torchrun (distributed.session) every global batch is split evenly between the
    ranks and the gradients are averaged by DistributedDataParallel; only rank 0 writes the
    checkpoint.

    With a `checkpoint`, the state after each finite epoch (weights, optimiser, generators) is
    saved there; with `checkpoint.resume`, training continues from the saved epoch and ends with
    the weights an uninterrupted run would have (on the same device). A NaN or Inf epoch loss
    stops training with the last good checkpoint left in place.
    """
    world = current_world()
    check_num_workers(num_workers)
    if needs_inputs(loss_fn):
        check_adversarial_execution(amp, world)
    model.to(device).train()
    n = len(y)
    if num_workers == 0:
        x, y, targets = x.to(device), y.to(device), _to_device(targets, device)
    params = list(model.parameters())
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(device).train()
        params += list(loss_fn.parameters())
    optimizer = make_optimizer(params, recipe)
    generator = torch.Generator().manual_seed(seed)
    modules = {"model": model, **({"loss": loss_fn} if isinstance(loss_fn, nn.Module) else {})}
    epoch_losses: list[float] = []
    first_epoch = 0
    if checkpoint is not None and checkpoint.resume and checkpoint.exists():
        first_epoch, epoch_losses = checkpoint.load(modules, optimizer, generator, device, recipe.epochs)
    step_model, step_loss = model, loss_fn
    if world.distributed:  # after the resume, so every rank starts from the checkpoint's weights
        step_model, step_loss = _distributed(model, loss_fn, device)
    step = _Stepper(step_model, step_loss, optimizer, device, amp)
    feeder = _feeder(x, y, targets, device, num_workers, seed)
    shown = progress if world.is_main else SILENT
    with shown.task(description, recipe.epochs) as advance:
        advance(first_epoch)
        for epoch in range(first_epoch, recipe.epochs):
            _set_schedule(optimizer, recipe, epoch)
            if world.distributed:
                torch.manual_seed(rank_seed(seed, epoch, world.rank))
            batches = _epoch_batches(n, recipe.batch_size, generator, None if feeder else device, world)
            epoch_loss = _epoch_loss(step, _stream(batches, x, y, targets, feeder, device), device)
            _check_finite(epoch_loss, epoch, checkpoint)
            epoch_losses.append(epoch_loss)
            if checkpoint is not None:
                if world.is_main:
                    checkpoint.save(epoch + 1, epoch_losses, modules, optimizer, generator, device)
                barrier()
            advance(1)
    model.eval()
    return epoch_losses


def _stream(
    batches: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor | dict[str, torch.Tensor],
    feeder: _Feeder | None,
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, Any]]:
    """The epoch's (inputs, labels, targets) batches: index slices of the tensors on the device,
    or what the feeder's workers gathered, moved there."""
    if feeder is None:
        return ((x[idx], y[idx], _take(targets, idx)) for idx in batches)
    feeder.sampler.batches = batches
    return (
        (_to_device(xb, device), _to_device(yb, device), _to_device(tb, device))
        for xb, yb, tb in feeder.loader
    )


def check_adversarial_execution(amp: str | None, world: World) -> None:
    """Adversarial training and robust distillation run in float32 on one process: crafting
    under autocast takes rounded input gradients (a weaker inner attack, a model that looks more
    robust than it is), and DDP's gradient hooks do not expect the crafting's extra forwards."""
    if amp:
        raise DefdistillError(
            f"adversarial training crafts its examples in float32, not {amp}: "
            "pass --amp off (auto is off for it)"
        )
    if world.distributed:
        raise DefdistillError(
            f"adversarial training runs in one process, not {world.size} under torchrun: "
            "launch it without torchrun"
        )


# --- adversarial training (Madry et al. 2018; TRADES, Zhang et al. 2019): objectives in robust.py ---

ADV_RUN_SUFFIX = {"pgd": "pgdat", "trades": "trades"}  # teacher-T1-pgdat, teacher-T1-trades
MADRY_STEP_FACTOR = 2.5  # step = 2.5 * eps / steps: PGD can cross the ball and come back


def resolve_budget(
    dataset: str,
    eps: float | None = None,
    steps: int | None = None,
    step_size: float | None = None,
    beta: float | None = None,
) -> tuple[float, int, float]:
    """The L-inf training budget (eps, steps, step size): the dataset's default (robust.default_budget:
    digits 0.1, 5 steps, 0.05; mnist 0.3, 40, 0.01; fashion-mnist 0.1, 20, 0.0125; cifar10 8/255,
    10, 2/255) with the user's overrides. Without a step size, a changed eps or step count takes
    Madry's 2.5 * eps / steps. Every value is checked (`beta` too, when given)."""
    try:
        default_eps, default_steps, default_step = default_budget(dataset)
    except ValueError as exc:
        if eps is None or steps is None or step_size is None:
            raise DefdistillError(f"{exc}: pass --adv-eps, --adv-steps and --adv-step-size") from None
        default_eps, default_steps, default_step = eps, steps, step_size
    eps = default_eps if eps is None else eps
    steps = default_steps if steps is None else steps
    if step_size is None:
        same = (eps, steps) == (default_eps, default_steps)
        usable = isinstance(eps, (int, float)) and 0 < eps <= 1 and isinstance(steps, int) and steps >= 1
        step_size = MADRY_STEP_FACTOR * eps / steps if usable and not same else default_step
    check_budget_options(check_budget, eps, steps, step_size, beta)
    return float(eps), int(steps), float(step_size)


def adversarial_objective(
    method: str,
    dataset: str,
    eps: float | None = None,
    steps: int | None = None,
    step_size: float | None = None,
    beta: float | None = None,
) -> Objective:
    """The adversarial-training objective `method` (pgd, trades) at the resolved budget; TRADES'
    beta is 6 (the paper's 1/lambda) unless given."""
    method = check_choice(method, ADVERSARIAL_METHODS, "adversarial training method (--adv)")
    if beta is not None and method != "trades":
        raise DefdistillError(f"--beta weighs TRADES' robust term: it does not apply to --adv {method}")
    eps, steps, step_size = resolve_budget(dataset, eps, steps, step_size, beta)
    if method == "trades":
        return TRADES(eps, steps, step_size, beta=TRADES.beta if beta is None else float(beta))
    return ADVERSARIAL_METHODS[method](eps, steps, step_size)


def objective_meta(objective: Objective) -> dict[str, Any]:
    """An adversarial objective's settings for meta.json, prefixed `adv_` (adv_method, adv_eps,
    adv_steps, adv_step_size, adv_beta (None but for TRADES), adv_paper, ...)."""
    return {"adv_beta": None, **{f"adv_{k}": v for k, v in objective.describe().items()}}


def training_amp(amp: str | bool | None, device: torch.device, adversarial: bool) -> str | None:
    """`resolve_amp`, except that adversarial training runs in float32 (see
    `check_adversarial_execution`): `auto` is off for it, `on` and torchrun are refused."""
    if not adversarial:
        return resolve_amp(amp, device)
    dtype = None if amp in (None, "auto") else resolve_amp(amp, device)
    check_adversarial_execution(dtype, launched_world())
    return dtype


def temperature_cross_entropy(T: float) -> LossFn:
    """Cross-entropy of softmax(logits / T) against the hard labels."""

    def loss(logits: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits / T, labels)

    return loss


def warm_start(
    model: nn.Module,
    dataset: str,
    data_dir: str | Path,
    recipe: Recipe,
    device: torch.device,
    seed: int,
    progress: ProgressReporter = SILENT,
    description: str = "warm start at T=1",
    amp: str | None = None,
    num_workers: int = 0,
) -> list[float]:
    """Train `recipe.warmup_epochs_at_T1` ordinary epochs (cross-entropy at T=1, hard labels of
    the training split) before training at T; nothing when the recipe has none.

    Carlini's reference code (nn_robust_attacks, train_models.py, `train_distillation`) trains
    one such epoch and starts both the teacher at T and the student at T from it: from there
    plain SGD trains at T=100, where from a random initialisation it does not. Each run draws
    its own initialisation (`derive_seed`), so the teacher and the student warm-start from
    different weights: they share no starting point a transfer attack could exploit.
    """
    if recipe.warmup_epochs_at_T1 <= 0:
        return []
    x, y = load_dataset(dataset, "train", data_dir)
    warm = replace(
        recipe, epochs=recipe.warmup_epochs_at_T1, warmup_epochs_at_T1=0, lr_decay=1.0, momentum_decay=1.0
    )
    return fit(
        model, x, y, y, temperature_cross_entropy(1.0), warm, device, seed, progress, description,
        amp=amp, num_workers=num_workers,
    )  # fmt: skip


def base_meta(dataset: str, arch: str, role: str, T: float, seed: int, recipe: Recipe) -> dict[str, Any]:
    """The sidecar fields every run shares."""
    return {"dataset": dataset, "arch": arch, "role": role, "T": T, "seed": seed, **recipe_settings(recipe)}


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
    *,
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
    resume: bool = False,
    recipe: str | None = None,
    amp: str | bool | None = "auto",
    num_workers: int = 0,
    name: str | None = None,
    study: str | None = None,
    adv: str | None = None,
    adv_eps: float | None = None,
    adv_steps: int | None = None,
    adv_step_size: float | None = None,
    beta: float | None = None,
    force: bool = False,
) -> RunResult:
    """Train a teacher with cross-entropy on softmax(z/T); save it as `teacher-T<T>` (or `name`).

    A finished run of that name is trained again only with `force` (its records go stale).

    Every epoch leaves a checkpoint in the run folder; `resume` continues from it. `recipe`
    names a preset of RECIPES (default: the dataset's); a preset with a warm start trains its
    ordinary epochs at T=1 first. `amp` (auto, on, off) and `num_workers` are described at
    `resolve_amp` and `fit`; under torchrun the processes train one model together.

    `adv` trains it adversarially instead, at T=1: `pgd` (Madry et al. 2018, saved as
    `teacher-T1-pgdat`) or `trades` (Zhang et al. 2019, `teacher-T1-trades`, weight `beta`,
    default 6), within the L-inf budget `adv_eps`, `adv_steps`, `adv_step_size` (defaults:
    `resolve_budget`), in float32 on one process.
    """
    spec = get_dataset_spec(dataset)
    T = check_temperature(T)
    objective = None
    if adv is not None:
        if not math.isclose(T, 1.0):
            raise DefdistillError(f"--adv {adv} trains at T=1 (the papers' objective), not T={T:g}: drop --T")
        objective = adversarial_objective(adv, dataset, adv_eps, adv_steps, adv_step_size, beta)
    elif any(v is not None for v in (adv_eps, adv_steps, adv_step_size, beta)):
        raise DefdistillError(
            "--adv-eps, --adv-steps, --adv-step-size and --beta set adversarial training: "
            "add --adv pgd or --adv trades"
        )
    adv_meta = objective_meta(objective) if objective is not None else {}
    arch = arch or spec.default_arch
    get_arch_spec(arch)
    settings = make_recipe(dataset, epochs, batch_size, lr, recipe)
    check_seed(seed)
    check_num_workers(num_workers)
    torch_device = resolve_device(device)
    amp_dtype = training_amp(amp, torch_device, adversarial=objective is not None)
    if name is None:
        name = run_name("teacher", T)
        if objective is not None:
            name += "-" + ADV_RUN_SUFFIX[adv_meta["adv_method"]]
    path = run_dir(runs_dir, dataset, name)
    check_not_finished(path, force, resume)
    x_train, y_train = load_dataset(dataset, "train", data_dir)
    x_test, y_test = load_dataset(dataset, "test", data_dir)
    ensure_writable_dir(path, "--runs-dir")  # before training, not after it

    with session(torch_device) as (world, torch_device):
        checkpoint, notes = training_checkpoint(
            path, "teacher", dataset, arch, T, seed, settings, resume, **execution_settings(amp_dtype, world),
            **adv_meta,
        )  # fmt: skip
        started = time.perf_counter()
        # an adversarially trained teacher draws its own weights, not teacher-T1's
        init_seed = derive_seed(seed, "teacher", T, *([adv_meta["adv_method"]] if adv_meta else []))
        seed_everything(init_seed)
        model = build_model(arch, spec.shape, spec.num_classes, spec.mean, spec.std)
        if not (resume and checkpoint.exists()):  # a checkpoint already holds weights past the warm start
            warm_start(
                model, dataset, data_dir, settings, torch_device, init_seed, progress,
                f"{dataset} {name} warm start", amp_dtype, num_workers,
            )  # fmt: skip
        losses = fit(
            model, x_train, y_train, y_train, objective or temperature_cross_entropy(T), settings,
            torch_device, init_seed, progress, f"{dataset} {name}", checkpoint, amp_dtype, num_workers,
        )  # fmt: skip
        test_acc = accuracy(model, x_test, y_test, torch_device)
        meta = finish_meta(base_meta(dataset, arch, "teacher", T, seed, settings), started, losses, test_acc)
        meta.update(
            teacher=None, init_seed=init_seed, **execution_meta(amp_dtype, world, torch_device, num_workers),
            **adv_meta,
        )  # fmt: skip
        if study:  # a side run (the transfer surrogate): reached by name, never by --model teacher
            meta["study"] = study
        if world.is_main:
            meta = save_run(path, model.cpu(), meta)
            checkpoint.clear()
        barrier()
    return RunResult(path, meta, notes)


SURROGATE_SEED_OFFSET = 1


def train_surrogate(dataset: str = "digits", seed: int = 0, **options: Any) -> RunResult:
    """The transfer attack's source: an ordinary (T=1) network trained with another seed
    (seed + 1) than the runs it attacks, saved as `surrogate-T1`. Crafting on the defended
    model's own sibling, which shares its data order, would be close to a white-box attack."""
    return train_teacher(
        dataset, T=1.0, seed=seed + SURROGATE_SEED_OFFSET, name=SURROGATE_NAME, study="surrogate", **options
    )


def execution_settings(amp: str | None, world: World) -> dict[str, Any]:
    """What a resumed run must share besides the recipe: precision and process count change the
    trajectory (the data-loading workers do not)."""
    return {"amp": amp, "world_size": world.size}


def execution_meta(amp: str | None, world: World, device: torch.device, num_workers: int) -> dict[str, Any]:
    """Where and how a run was trained, for its sidecar."""
    return {"amp": amp, "world_size": world.size, "device": device.type, "num_workers": num_workers}
