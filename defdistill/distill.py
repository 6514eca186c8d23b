"""Defensive distillation: a student trained on the teacher's soft labels softmax(z_t / T).

Papernot et al. (2016) train the teacher at T as well and deploy the student at T=1. With
`alpha` < 1 the soft term is mixed with hard-label cross-entropy as in Hinton et al. (2015).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import get_dataset_spec, load_dataset
from .errors import DefdistillError
from .models import build_model
from .progress import SILENT, ProgressReporter
from .runs import check_temperature, format_T, load_run, resolve_model, run_dir, run_name, save_run
from .runtime import resolve_device, seed_everything
from .tables import record_accuracy_gap
from .training import (
    LossFn,
    Recipe,
    RunResult,
    accuracy,
    base_meta,
    check_positive_int,
    finish_meta,
    fit,
    predict_logits,
    recipe_for,
)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    T: float,
    alpha: float = 1.0,
) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels).

    `batchmean` divides by the batch only (`mean` would also divide by the class count), and
    T^2 keeps the soft term's gradient independent of T (Hinton et al. 2015, section 2).
    """
    soft = F.kl_div(
        F.log_softmax(student_logits / T, dim=1),
        F.log_softmax(teacher_logits / T, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (T * T)
    if alpha >= 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, labels)


def _distillation_loss_fn(T: float, alpha: float) -> LossFn:
    def loss(logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return distillation_loss(logits, teacher_logits, labels, T, alpha)

    return loss


def choose_teacher(
    runs_dir: str | Path, dataset: str, T: float, teacher: str | None
) -> tuple[Path, list[str]]:
    """The teacher to distil from, and a notice when it is not Papernot's setting.

    Without `teacher`, `teacher-T<T>` is used if it exists, else `teacher-T1`, and the user
    is told that a teacher trained at T=1 makes this Hinton-style distillation.
    """
    if teacher is not None:
        return resolve_model(teacher, runs_dir, dataset), []
    same_T = run_dir(runs_dir, dataset, run_name("teacher", T))
    if (same_T / "meta.json").is_file():
        return same_T, []
    plain = run_dir(runs_dir, dataset, run_name("teacher", 1))
    if (plain / "meta.json").is_file():
        note = (
            f"no teacher-T{format_T(T)} in {Path(runs_dir) / dataset}: distilling from teacher-T1. "
            "This is Hinton-style distillation, not Papernot's defence, which trains the teacher at T "
            f"too (defdistill train-teacher --T {format_T(T)})."
        )
        return plain, [note] if not math.isclose(T, 1.0) else []
    raise DefdistillError(
        f"no teacher for {dataset!r} in {Path(runs_dir) / dataset}: "
        f"run `defdistill train-teacher --T {format_T(T)} --dataset {dataset}` first"
    )


def distill(
    dataset: str = "digits",
    T: float = 100.0,
    teacher: str | None = None,
    alpha: float = 1.0,
    epochs: int | None = None,
    seed: int = 0,
    arch: str | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    runs_dir: str | Path = "runs",
    results_dir: str | Path = "results",
    data_dir: str | Path = "data",
    device: str = "auto",
    progress: ProgressReporter = SILENT,
) -> RunResult:
    """Train `student-T<T>` on the teacher's soft labels at T; record its accuracy gap."""
    spec = get_dataset_spec(dataset)
    T = check_temperature(T)
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise DefdistillError(f"--alpha must lie in [0, 1], got {alpha}")
    base = recipe_for(dataset)
    recipe = Recipe(
        epochs=check_positive_int(epochs, "--epochs") if epochs is not None else base.epochs,
        batch_size=check_positive_int(batch_size, "--batch-size") if batch_size is not None else base.batch_size,
        lr=lr if lr is not None else base.lr,
        weight_decay=base.weight_decay,
    )
    torch_device = resolve_device(device)
    teacher_path, notes = choose_teacher(runs_dir, dataset, T, teacher)
    teacher_model, teacher_meta = load_run(teacher_path, dataset=dataset, map_location=torch_device)
    arch = arch or teacher_meta["arch"]
    x_train, y_train = load_dataset(dataset, "train", data_dir)
    x_test, y_test = load_dataset(dataset, "test", data_dir)

    started = time.perf_counter()
    # The teacher's logits over the transfer set, once (N x K floats), not once per batch.
    teacher_logits = predict_logits(teacher_model, x_train, torch_device)
    seed_everything(seed)
    student = build_model(arch, spec.shape, spec.num_classes, spec.mean, spec.std)
    name = run_name("student", T)
    losses = fit(
        student, x_train, y_train, teacher_logits, _distillation_loss_fn(T, alpha), recipe,
        torch_device, seed, progress, f"{dataset} {name}",
    )
    test_acc = accuracy(student, x_test, y_test, torch_device)
    meta = finish_meta(base_meta(dataset, arch, "student", T, seed, recipe), started, losses, test_acc)
    meta.update(
        teacher=teacher_path.name,
        teacher_T=teacher_meta["T"],
        teacher_acc=teacher_meta["clean_acc"],
        alpha=alpha,
        method="soft" if alpha >= 1.0 else "hinton",
        notes=notes,
    )
    path = run_dir(runs_dir, dataset, name)
    meta = save_run(path, student.cpu(), meta)
    record_accuracy_gap(results_dir, meta, student_name=name)
    return RunResult(path, meta, notes)
