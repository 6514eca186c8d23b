"""Distillation: a student trained on the teacher's soft labels softmax(z_t / T), and its variants.

Papernot et al. (2016) train the teacher at T as well and deploy the student at T=1 (method
`soft`). `hinton` mixes hard-label cross-entropy in (Hinton et al. 2015); the feature and relation
methods of losses.py add a term on intermediate layers. Students may be smaller than the teacher,
trained on another transfer set, or born again (Furlanello et al. 2018, "Born-Again Neural
Networks": each generation, of the same architecture, teaches the next). The robust methods
(`ard`, Goldblum et al. 2020; `rslad`, Zi et al. 2021) train the student on adversarial inputs
it crafts against itself within an L-inf budget, matching the teacher's clean outputs.

The teacher's outputs on the transfer set (logits, and hooked features where a method needs them)
are computed once and cached beside the teacher, keyed by its weights and the inputs, so every
method and temperature reuses them: softmax(z/T) is taken from the cached logits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..checks import check_num_workers, check_positive_int, check_seed, check_temperature
from ..core.distributed import barrier, current_world, main_first, session
from ..core.fileio import atomic_write_with, ensure_writable_dir
from ..core.progress import SILENT, ProgressReporter
from ..core.runtime import derive_seed, resolve_device, seed_everything
from ..data.registry import get_dataset_spec, load_dataset
from ..errors import DefdistillError
from ..models import EVAL_BATCH, accuracy, build_model, count_parameters, get_arch_spec
from ..store.runs import (
    ROLES,
    check_not_finished,
    format_T,
    load_run,
    resolve_model,
    run_dir,
    run_name,
    save_run,
)
from ..store.tables import record_accuracy_gap, undefended_baseline
from .loop import (
    Recipe,
    RunResult,
    base_meta,
    execution_meta,
    execution_settings,
    finish_meta,
    fit,
    make_recipe,
    objective_meta,
    resolve_budget,
    training_amp,
    training_checkpoint,
    warm_start,
)
from .losses import (
    DistillationObjective,
    MethodSpec,
    capture_outputs,
    distillation_loss,
    get_method,
    resolve_layer,
)
from .robust import Objective

__all__ = ["distill", "distillation_loss", "choose_teacher", "teacher_outputs", "DistillResult"]

TRANSFER_SETS = ("train", "unlabeled", "noise")
NO_LABEL = -1  # the label of a transfer example without one: cross-entropy would fail on it, loudly
CACHE_DIR = "cache"
CACHE_VERSION = "1"
FEATURE_PREFIX = "features/"
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]{0,99}$")


@dataclass
class DistillResult(RunResult):
    """The last generation's run; `generations` lists every generation's run, in order."""

    generations: list[RunResult] = field(default_factory=list)


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


# --- options ---------------------------------------------------------------------------------


def resolve_method(method: str | None, alpha: float | None) -> tuple[MethodSpec, float]:
    """The method and its alpha. Without a method, alpha < 1 means `hinton`, else `soft`."""
    if alpha is not None and method is not None and not get_method(method).uses_alpha:
        raise DefdistillError(
            f"--alpha does not apply to --method {method}: "
            "its terms' weights are its paper's (see `distill --help`)"
        )
    if alpha is not None and not (
        isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0.0 <= alpha <= 1.0
    ):
        raise DefdistillError(f"--alpha must lie in [0, 1], got {alpha}")
    if method is None:
        method = "hinton" if alpha is not None and alpha < 1.0 else "soft"
    spec = get_method(method)
    alpha = spec.default_alpha if alpha is None else float(alpha)
    if spec.name == "soft" and alpha < 1.0:
        raise DefdistillError(
            f"--method soft trains on soft labels only, so --alpha {alpha} does not apply: "
            "use --method hinton to mix in hard labels"
        )
    if spec.name == "hinton" and alpha >= 1.0:
        raise DefdistillError("--method hinton with --alpha 1 is --method soft: pick an alpha below 1")
    return spec, alpha


def check_run_name(name: str) -> str:
    """A run name is a plain folder name that cannot be mistaken for a role."""
    if not isinstance(name, str) or not RUN_NAME.match(name) or name in ROLES:
        raise DefdistillError(
            f"--name {name!r} is not a usable run name: use letters, digits and . _ + = - "
            "(not starting with a dot, not 'teacher' or 'student'), e.g. student-T100-small"
        )
    return name


def default_student_name(T: float, method: str, arch: str, teacher_arch: str, transfer_set: str) -> str:
    """`student-T<T>` for Papernot's and Hinton's losses on the teacher's architecture and data;
    otherwise the method, architecture and transfer set that differ are appended."""
    parts = [run_name("student", T)]
    if method not in ("soft", "hinton"):
        parts.append(method)  # student-T30-ard, student-T1-rslad
    if arch != teacher_arch:
        parts.append(arch)
    if transfer_set != "train":
        parts.append(transfer_set)
    return "-".join(parts)


def transfer_set_inputs(
    dataset: str, transfer_set: str, data_dir: str | Path, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs the teacher labels and the student learns from, and their labels (-1 where none).

    `unlabeled` is the training images with their labels withheld; `noise` is as many uniform
    noise images in [0, 1], drawn from `seed` (the data-free end of the scale).
    """
    if transfer_set not in TRANSFER_SETS:
        raise DefdistillError(
            f"unknown transfer set {transfer_set!r}: choose one of {', '.join(TRANSFER_SETS)}"
        )
    x, y = load_dataset(dataset, "train", data_dir)
    if transfer_set == "train":
        return x, y
    if transfer_set == "noise":
        x = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))
    return x, torch.full_like(y, NO_LABEL)


# --- the teacher's outputs, cached -----------------------------------------------------------


def _inputs_digest(x: torch.Tensor) -> str:
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def teacher_cache_path(
    teacher_path: Path, teacher_meta: dict[str, Any], transfer_set: str, x: torch.Tensor
) -> tuple[Path, dict[str, str]]:
    """Where the teacher's outputs on `x` are cached, and the identity the file must carry."""
    identity = {
        "version": CACHE_VERSION,
        "teacher_sha256": str(teacher_meta["weights_sha256"]),
        "dataset": str(teacher_meta["dataset"]),
        "transfer_set": transfer_set,
        "inputs_sha256": _inputs_digest(x),
        "n": str(len(x)),
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    return teacher_path / CACHE_DIR / f"{key}.safetensors", identity


def compute_teacher_outputs(
    model: nn.Module, x: torch.Tensor, layers: list[str], device: torch.device, batch_size: int = EVAL_BATCH
) -> dict[str, torch.Tensor]:
    """Logits and the outputs of `layers` on `x` (eval mode, no autograd), on the CPU."""
    model.to(device).eval()
    chunks: dict[str, list[torch.Tensor]] = {"logits": [], **{FEATURE_PREFIX + p: [] for p in layers}}
    with torch.inference_mode(), capture_outputs(model, layers) as hooked:
        for start in range(0, len(x), batch_size):
            chunks["logits"].append(model(x[start : start + batch_size].to(device)).float().cpu())
            for path in layers:
                chunks[FEATURE_PREFIX + path].append(hooked[path].float().cpu())
    return {k: torch.cat(v).contiguous() for k, v in chunks.items()}


def _read_cache(path: Path, identity: dict[str, str], n: int) -> dict[str, torch.Tensor]:
    """The cached tensors, or {} when the file is absent, damaged or for other inputs."""
    if not path.is_file():
        return {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            if handle.metadata() != identity:
                return {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return {}  # a derived file: recompute rather than fail
    if any(len(t) != n for t in tensors.values()) or "logits" not in tensors:
        return {}
    return tensors


def teacher_outputs(
    teacher: nn.Module,
    teacher_path: Path,
    teacher_meta: dict[str, Any],
    transfer_set: str,
    x: torch.Tensor,
    layers: list[str],
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], bool]:
    """The teacher's logits (and `layers`' outputs) on `x`, from the cache when it has them.

    Returns the tensors and whether they all came from the cache. Missing layers are computed
    and the cache is rewritten (atomically) with the union; a cache that cannot be written is
    skipped, since it only saves time.
    """
    path, identity = teacher_cache_path(teacher_path, teacher_meta, transfer_set, x)
    cached = _read_cache(path, identity, len(x))
    missing = [p for p in layers if FEATURE_PREFIX + p not in cached]
    if cached and not missing:
        return cached, True
    fresh = compute_teacher_outputs(teacher, x, missing, device)
    tensors = {**cached, **fresh}
    with contextlib.suppress(OSError):  # a read-only teacher folder: distil without caching
        atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=identity))
    return tensors, False


# --- one generation --------------------------------------------------------------------------


def _probe_shapes(model: nn.Module, layer: str, shape: tuple[int, int, int]) -> tuple[int, ...]:
    """The output shape (without the batch) of `layer` for one input, from a dry forward pass."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad(), capture_outputs(model, [layer]) as hooked:
        model(torch.zeros(2, *shape, device=device))
    model.train(was_training)
    return tuple(hooked[layer].shape[1:])


@dataclass(frozen=True)
class _Plan:
    """Everything validated before any training starts."""

    dataset: str
    T: float
    method: MethodSpec
    alpha: float
    arch: str | None
    layer: str | None
    weight: float
    transfer_set: str
    recipe: Recipe
    generations: int
    resume: bool = False
    data_dir: str | Path = "data"  # for the warm start, which trains on the labelled training split
    amp: str | None = None  # resolve_amp's dtype name
    num_workers: int = 0
    objective: Objective | None = None  # a robust method's (ard, rslad), at its budget


def robust_objective(
    spec: MethodSpec,
    dataset: str,
    T: float,
    alpha: float,
    transfer_set: str,
    teacher: str | None,
    eps: float | None = None,
    steps: int | None = None,
    step_size: float | None = None,
) -> Objective | None:
    """A robust method's objective at its budget (defaults: loop.resolve_budget); None for the
    others, which take no budget."""
    if spec.objective is None:  # not a robust method
        if any(v is not None for v in (eps, steps, step_size)):
            raise DefdistillError(
                f"--adv-eps, --adv-steps and --adv-step-size apply to --method ard or rslad, not {spec.name}"
            )
        return None
    if teacher is None:
        raise DefdistillError(
            f"--method {spec.name} distils a teacher you name: pass --teacher (a robust one such as "
            "teacher-T1-pgdat from `train-teacher --adv pgd`, or the standard teacher-T1)"
        )
    if not spec.uses_T and not math.isclose(T, spec.default_T):
        raise DefdistillError(
            f"--method {spec.name} uses the teacher's soft labels at T={spec.default_T:g} "
            "(its paper's): drop --T"
        )
    if spec.name == "ard" and transfer_set != "train":
        raise DefdistillError(
            "--method ard crafts its inputs with the true labels, which "
            f"--transfer-set {transfer_set} withholds: use --transfer-set train, or --method rslad"
        )
    budget = resolve_budget(dataset, eps, steps, step_size)
    return spec.objective(*budget, T=T, alpha=alpha) if spec.uses_alpha else spec.objective(*budget)


def _build_student(plan: _Plan, arch: str, device: torch.device) -> nn.Module:
    """A fresh student of `arch` for the dataset's inputs, on `device`."""
    spec = get_dataset_spec(plan.dataset)
    try:
        return build_model(arch, spec.shape, spec.num_classes, spec.mean, spec.std).to(device)
    except RuntimeError as exc:
        raise DefdistillError(
            f"architecture {arch!r} does not fit {plan.dataset!r} inputs of shape {spec.shape} ({exc}): "
            "pick another --student-arch (see `defdistill archs`)"
        ) from None


@dataclass(frozen=True)
class _FeatureTerm:
    """A feature method's term and the layers it hooks in the student and the teacher."""

    loss: nn.Module
    student_layer: str
    teacher_layer: str


def _feature_term(plan: _Plan, student: nn.Module, teacher: nn.Module) -> _FeatureTerm | None:
    """The feature term of a feature method (None for the others), built for the shapes of the
    hooked layer's outputs in both networks."""
    build = plan.method.build
    if build is None:
        return None
    layer = plan.layer or plan.method.layer
    if layer is None:
        raise DefdistillError(f"--method {plan.method.name} hooks a layer of both networks: pass --layer")
    shape = get_dataset_spec(plan.dataset).shape
    student_layer, teacher_layer = resolve_layer(student, layer), resolve_layer(teacher, layer)
    s_shape = _probe_shapes(student, student_layer, shape)
    t_shape = _probe_shapes(teacher, teacher_layer, shape)
    if plan.method.needs_spatial and (len(s_shape) != 3 or len(t_shape) != 3):
        raise DefdistillError(
            f"--method {plan.method.name} needs spatial feature maps, but layer {layer!r} gives "
            f"{s_shape} in the student and {t_shape} in the teacher: use a convolutional "
            "student, or --layer naming a convolutional layer of both"
        )
    return _FeatureTerm(build(s_shape, t_shape), student_layer, teacher_layer)


def _batch_targets(
    plan: _Plan,
    teacher: _Teacher,
    x_transfer: torch.Tensor,
    term: _FeatureTerm | None,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor] | torch.Tensor, bool]:
    """What `fit` slices per batch: the teacher's logits (and hooked features) on the transfer
    set, or for a robust objective its clean logits alone; whether they came from the cache."""
    layers = [term.teacher_layer] if term else []
    outputs, from_cache = main_first(  # rank 0 writes the cache the other ranks then read
        lambda: teacher_outputs(
            teacher.model, teacher.path, teacher.meta, plan.transfer_set, x_transfer, layers, device
        )
    )
    if plan.objective is not None:  # the robust objectives take the teacher's clean logits
        return outputs["logits"], from_cache
    targets = {"logits": outputs["logits"]}
    if term:
        targets["features"] = outputs[FEATURE_PREFIX + term.teacher_layer]
    return targets, from_cache


def _student_meta(
    plan: _Plan,
    teacher: _Teacher,
    student: nn.Module,
    term: _FeatureTerm | None,
    generation: int,
) -> dict[str, Any]:
    """What a student's sidecar records besides the common fields: its teacher and method."""
    return dict(
        teacher=teacher.path.name,
        teacher_T=teacher.meta["T"],
        teacher_acc=teacher.meta["clean_acc"],
        teacher_arch=teacher.meta["arch"],
        teacher_params=count_parameters(teacher.model),
        params=count_parameters(student),
        method=plan.method.name,
        method_citation=plan.method.citation,
        alpha=plan.alpha if plan.method.uses_alpha else None,
        feature_layer=term.student_layer if term else None,
        teacher_feature_layer=term.teacher_layer if term else None,
        feature_weight=plan.weight if plan.method.uses_features else None,
        regressor_params=count_parameters(term.loss) if term else 0,
        transfer_set=plan.transfer_set,
        generation=generation,
        generations=plan.generations,
    )


@dataclass(frozen=True)
class _Teacher:
    """The run a generation distils: its folder, network and sidecar."""

    path: Path
    model: nn.Module
    meta: dict[str, Any]


def _distill_generation(
    plan: _Plan,
    teacher: _Teacher,
    name: str,
    generation: int,
    seed: int,
    transfer: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    notes: list[str],
    results_dir: str | Path,
    runs_dir: str | Path,
    device: torch.device,
    progress: ProgressReporter,
) -> RunResult:
    """One student `name` distilled from `teacher` on the `transfer` set, tested on `test`,
    saved and recorded."""
    arch = plan.arch or teacher.meta["arch"]
    path = run_dir(runs_dir, plan.dataset, name)
    adv_meta = objective_meta(plan.objective) if plan.objective is not None else {}
    checkpoint, resume_notes = training_checkpoint(
        path, "student", plan.dataset, arch, plan.T, seed, plan.recipe, plan.resume,
        teacher_sha256=teacher.meta["weights_sha256"], method=plan.method.name, alpha=plan.alpha,
        layer=plan.layer, feature_weight=plan.weight, transfer_set=plan.transfer_set, generation=generation,
        **execution_settings(plan.amp, current_world()), **adv_meta,
    )  # fmt: skip
    notes.extend(resume_notes)  # the caller's list: the command line prints it
    started = time.perf_counter()
    init_seed = derive_seed(seed, "student", plan.T)
    seed_everything(init_seed)
    student = _build_student(plan, arch, device)
    if not (plan.resume and checkpoint.exists()):  # the teacher's warm start, when the recipe has one
        warm_start(
            student, plan.dataset, plan.data_dir, plan.recipe, device, init_seed, progress,
            f"{name} warm start", plan.amp, plan.num_workers,
        )  # fmt: skip
    term = _feature_term(plan, student, teacher.model)
    x_transfer, y_transfer = transfer
    targets, from_cache = _batch_targets(plan, teacher, x_transfer, term, device)
    with capture_outputs(student, [term.student_layer] if term else []) as hooked:
        objective = plan.objective or DistillationObjective(
            plan.T,
            plan.alpha,
            term.loss if term else None,
            plan.weight,
            term.student_layer if term else None,
            student_outputs=hooked,
            t_squared=plan.recipe.t_squared,
        )
        losses = fit(
            student, x_transfer, y_transfer, targets, objective, plan.recipe, device, init_seed,
            progress, f"{plan.dataset} {name}", checkpoint, plan.amp, plan.num_workers,
        )  # fmt: skip
    test_acc = accuracy(student, *test, device)
    meta = finish_meta(
        base_meta(plan.dataset, arch, "student", plan.T, seed, plan.recipe), started, losses, test_acc
    )
    meta.update(
        **_student_meta(plan, teacher, student, term, generation),
        teacher_outputs_cached=from_cache,
        init_seed=init_seed,
        notes=notes,
        **execution_meta(plan.amp, current_world(), device, plan.num_workers),
        **adv_meta,
    )
    if current_world().is_main:
        meta = save_run(path, student.cpu(), meta)
        checkpoint.clear()
        baseline = undefended_baseline(runs_dir, plan.dataset)  # teacher-T1's accuracy, if trained yet
        record_accuracy_gap(results_dir, meta, student_name=name, baseline=baseline)
    barrier()  # the next generation loads this run on every rank
    return RunResult(path, meta, list(notes))


def distill(
    dataset: str = "digits",
    *,
    T: float | None = None,
    teacher: str | None = None,
    alpha: float | None = None,
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
    method: str | None = None,
    name: str | None = None,
    generations: int = 1,
    transfer_set: str = "train",
    layer: str | None = None,
    feature_weight: float | None = None,
    resume: bool = False,
    recipe: str | None = None,
    amp: str | bool | None = "auto",
    num_workers: int = 0,
    adv_eps: float | None = None,
    adv_steps: int | None = None,
    adv_step_size: float | None = None,
    force: bool = False,
) -> DistillResult:
    """Train a student from the teacher at T with `method`; record its accuracy gap. A finished
    run of the student's name is trained again only with `force` (its records go stale).

    T defaults to the method's: 100 (Papernot et al.'s), 30 for `ard` (Goldblum et al.'s), 1 for
    `rslad`, whose soft labels are the teacher's at T=1. `ard` and `rslad` need a named `teacher`
    and train within the L-inf budget `adv_eps`, `adv_steps`, `adv_step_size` (defaults:
    loop.resolve_budget, the dataset's), in float32 on one process; they are saved as
    `student-T30-ard` and `student-T1-rslad`.

    `arch` is the student's architecture (default: the teacher's). With `generations` > 1 the
    runs are `<name>-gen1` ... `<name>-genN`, each taught by the one before (born-again
    networks); generation g is seeded with seed + g - 1. `layer` overrides the module path a
    feature method hooks, `feature_weight` the weight of its term. `amp` and `num_workers`
    are as in `train_teacher`; under torchrun the processes train each student together.
    """
    get_dataset_spec(dataset)
    spec, alpha = resolve_method(method, alpha)
    T = check_temperature(spec.default_T if T is None else T)
    check_positive_int(generations, "--generations")
    if arch is not None:
        get_arch_spec(arch)
    if transfer_set not in TRANSFER_SETS:
        raise DefdistillError(
            f"unknown transfer set {transfer_set!r}: choose one of {', '.join(TRANSFER_SETS)}"
        )
    if transfer_set != "train" and alpha < 1.0:
        raise DefdistillError(
            f"--method {spec.name} with alpha {alpha} needs hard labels, which --transfer-set {transfer_set} "
            "does not have: pass --alpha 1 (soft labels only) or --transfer-set train"
        )
    if not spec.uses_features and (layer is not None or feature_weight is not None):
        raise DefdistillError(
            f"--layer and --feature-weight apply to feature methods, not --method {spec.name}"
        )
    weight = spec.weight if feature_weight is None else feature_weight
    if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
        raise DefdistillError(f"--feature-weight must be a finite number >= 0, got {weight}")
    if name is not None:
        check_run_name(name)
    objective = robust_objective(
        spec, dataset, T, alpha, transfer_set, teacher, adv_eps, adv_steps, adv_step_size
    )
    settings = make_recipe(dataset, epochs, batch_size, lr, recipe)
    if transfer_set != "train" and settings.warmup_epochs_at_T1 > 0:
        raise DefdistillError(
            f"recipe {settings.name!r} warm-starts the student on the labelled training split, which "
            f"--transfer-set {transfer_set} withholds: pass --recipe digits (no warm start)"
        )
    check_seed(seed)
    check_num_workers(num_workers)
    torch_device = resolve_device(device)
    plan = _Plan(
        dataset, T, spec, alpha, arch, layer, float(weight), transfer_set, settings, generations, resume,
        data_dir, training_amp(amp, torch_device, adversarial=objective is not None), num_workers, objective,
    )  # fmt: skip
    with session(torch_device) as (_, torch_device):
        return _distill_generations(
            plan, teacher, seed, name, runs_dir, results_dir, data_dir, torch_device, progress, force
        )


def _distill_generations(
    plan: _Plan,
    teacher: str | None,
    seed: int,
    name: str | None,
    runs_dir: str | Path,
    results_dir: str | Path,
    data_dir: str | Path,
    torch_device: torch.device,
    progress: ProgressReporter,
    force: bool = False,
) -> DistillResult:
    dataset, T, spec, arch, transfer_set, generations = (
        plan.dataset, plan.T, plan.method, plan.arch, plan.transfer_set, plan.generations
    )  # fmt: skip
    teacher_path, notes = choose_teacher(runs_dir, dataset, T, teacher)
    teacher_model, teacher_meta = load_run(teacher_path, dataset=dataset, map_location=torch_device)
    ensure_writable_dir(Path(runs_dir) / dataset, "--runs-dir")  # before training, not after it
    ensure_writable_dir(results_dir, "--results-dir")
    base_name = name or default_student_name(
        T, spec.name, arch or teacher_meta["arch"], teacher_meta["arch"], transfer_set
    )
    for generation in range(1, generations + 1):  # before any training
        run = base_name if generations == 1 else f"{base_name}-gen{generation}"
        check_not_finished(run_dir(runs_dir, dataset, run), force, plan.resume, "--name for a new run")
    x_transfer, y_transfer = transfer_set_inputs(dataset, transfer_set, data_dir, seed)
    x_test, y_test = load_dataset(dataset, "test", data_dir)

    results: list[RunResult] = []
    for generation in range(1, generations + 1):
        run = base_name if generations == 1 else f"{base_name}-gen{generation}"
        result = _distill_generation(
            plan, _Teacher(teacher_path, teacher_model, teacher_meta), run, generation, seed + generation - 1,
            (x_transfer, y_transfer), (x_test, y_test), notes if generation == 1 else [], results_dir,
            runs_dir, torch_device, progress,
        )  # fmt: skip
        results.append(result)
        teacher_path = result.path
        teacher_model, teacher_meta = load_run(teacher_path, dataset=dataset, map_location=torch_device)
    last = results[-1]
    return DistillResult(last.path, last.meta, notes, generations=results)
