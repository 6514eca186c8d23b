"""Benchmarks: our code paths timed side by side with plain references, reported as ratios.

    python benchmarks/run.py [--quick] [--results-dir results] [--threads N]

Writes results/benchmarks.json (a list of {name, ours_s, reference_s, ratio, note}, ratio =
ours / reference) and results/benchmarks.md. Absolute times depend on the machine and on what
else runs on it; ratios measured in the same process, on the same model and inputs, do much
less. Each pair is timed interleaved (ours, reference, then reference, ours, ...) after a
warm-up, so both see the same load, and the ratio reported is the median of the per-pair
ratios. Times are this process's CPU seconds (one torch thread), which another process's load
does not stretch; rows whose work waits (the checkpoint's fsync, several threads), the demo and
the Carlini-Wagner curve use the wall clock. Rows without a reference (the Carlini-Wagner curve,
the demo) have reference_s and ratio null.

Quick mode (under a minute on 2 cores) uses fewer repeats, a shorter teacher training and a
shorter Carlini-Wagner attack, and skips the Carlini-Wagner curve, the thread comparison, PGD
against torchattacks' call alone and the demo; the ratios compare like with like either way.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # Foolbox imports GitPython

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from defdistill.core.fileio import atomic_write_json, atomic_write_text  # noqa: E402
from defdistill.core.runtime import THREADS_ENV, configure_threads  # noqa: E402
from defdistill.data.registry import get_dataset_spec, load_dataset  # noqa: E402
from defdistill.evaluate.attacks import AttackSettings, foolbox_cw_search, run_attack  # noqa: E402
from defdistill.evaluate.worst_case import FULL_EVALUATION_ATTACKS  # noqa: E402
from defdistill.models import (
    build_model,  # noqa: E402
    predict_logits,  # noqa: E402
)
from defdistill.store.checkpoint import TrainingCheckpoint  # noqa: E402
from defdistill.store.runs import load_run  # noqa: E402
from defdistill.train.loop import (  # noqa: E402
    adversarial_objective,
    fit,
    recipe_for,
    temperature_cross_entropy,
    train_teacher,
)
from defdistill.train.losses import DistillationObjective  # noqa: E402

CPU = torch.device("cpu")
RATIO_TARGET = 1.05
TORCHATTACKS_GOAL = 1.0
ROW_KEYS = ("name", "ours_s", "reference_s", "ratio", "note")
MATMUL_SIZE = 1024
# cw_vs_raw_foolbox and the curve run Foolbox's own search (initial c 0.01, x10, bisection) at
# the Adam step of the defaults before issue 15, so that they compare like with like with
# Foolbox; the library's adaptive default is measured in benchmarks/cw_convergence.py.
CW_CURVE_STEPSIZE = 0.02
CW_INITIAL_CONST = 0.01


@dataclass(frozen=True)
class Config:
    """Sizes of one benchmark run."""

    quick: bool
    teacher_epochs: int  # the T=1 teacher every attack benchmark attacks
    train_pairs: int  # interleaved (ours, reference) pairs per training benchmark
    attack_pairs: int  # pairs per PGD benchmark (FGSM gets three times as many: it is cheap)
    cw_pairs: int
    n_attack: int  # test inputs attacked
    pgd_steps: int
    cw_steps: int
    cw_binary_search_steps: int
    cw_curve_steps: tuple[int, ...]  # the curve at the default Adam step size
    cw_curve_search_steps: tuple[int, ...]
    cw_curve_stepsizes: tuple[float, ...]  # other Adam step sizes, at the fewest binary-search steps
    throughput_images: int  # synthetic 28x28 images for the MNIST-sized throughput
    demo: bool
    eps: float = 0.1
    distill_T: float = 100.0
    seed: int = 0
    train_images: int | None = None  # the first N of the digits training split (None: all of it)
    threads_row: bool = True  # the multi-threaded epoch can take seconds on a busy machine
    torchattacks_pairs: int = 15  # the goal there is <= 1.0: more pairs, a steadier median
    images_only_row: bool = True  # pgd against torchattacks' call alone, for the record
    n_reference: int = 120  # inputs of the rows against torchattacks' APGD, Square, AutoAttack, the audit
    reference_pairs: int = 3
    autoattack_pairs: int = 2  # AutoAttack and the audit: each call takes seconds
    apgd_steps: int = 100
    square_queries: int = 1000
    l2_eps: float = 1.0  # digits images have 64 pixels: an L2 budget of 1 is an L-inf 0.125 spread out
    hsj_steps: int = 10
    hsj_initial_evals: int = 50
    hsj_max_evals: int = 200
    hsj_pairs: int = 2
    audit_budget: str = "standard"  # AuditBudgets by name: "standard" (the field's) or "fast"
    mnist_n: int = 100  # inputs of the MNIST full evaluation against torchattacks' AutoAttack (0: skip)
    mnist_dir: Path = Path("../shared/datasets")
    mnist_runs: Path = Path("build/bench/runs")  # the 1-epoch MNIST model and its surrogate, kept
    keep_cw_curve: Path | None = None  # take the Carlini-Wagner curve from this benchmarks.json


FULL = Config(
    quick=False, teacher_epochs=30, train_pairs=15, attack_pairs=5, cw_pairs=3, n_attack=360,
    pgd_steps=AttackSettings().pgd_steps, cw_steps=200,
    cw_binary_search_steps=3, cw_curve_steps=(25, 50, 100, 200, 500),
    cw_curve_search_steps=(3, 5, 9), cw_curve_stepsizes=(0.01, 0.05),
    throughput_images=4096, demo=True,
)  # fmt: skip
QUICK = Config(
    quick=True, teacher_epochs=8, train_pairs=7, attack_pairs=3, cw_pairs=3, n_attack=360,
    pgd_steps=AttackSettings().pgd_steps, cw_steps=20,
    cw_binary_search_steps=2, cw_curve_steps=(), cw_curve_search_steps=(), cw_curve_stepsizes=(),
    throughput_images=512, demo=False, threads_row=False, torchattacks_pairs=7, images_only_row=False,
    n_reference=40, reference_pairs=1, autoattack_pairs=1, apgd_steps=20, square_queries=200, hsj_steps=3,
    hsj_initial_evals=20, hsj_max_evals=50, hsj_pairs=1, mnist_n=0,
)  # fmt: skip


def row(name: str, ours_s: float | None, reference_s: float | None, ratio: float | None, note: str) -> dict:
    """One result row; times in seconds, rounded for people, ratio to 3 decimals."""
    return {
        "name": name,
        "ours_s": None if ours_s is None else round(ours_s, 4),
        "reference_s": None if reference_s is None else round(reference_s, 4),
        "ratio": None if ratio is None else round(ratio, 3),
        "note": note,
    }


# --- timing -------------------------------------------------------------------------------------


def paired_timing(
    ours: Callable[[Any], Any],
    reference: Callable[[Any], Any],
    pairs: int,
    setup: Callable[[], Any] = lambda: None,
    warmup: int = 1,
    clock: str = "cpu",
) -> tuple[float, float, float]:
    """Median seconds of `ours` and `reference` and the median of their per-pair ratios.

    Each call gets a fresh `setup()` (untimed). The order alternates (A B, B A, ...) so that
    neither side always runs first, and a burst of load hits both sides of a pair alike.
    `clock` is "cpu" (this process's CPU seconds: on one torch thread, the time another
    process holds the core is not counted, so a busy machine does not stretch one side of a
    pair) or "wall" (for work that waits: fsync, several threads).
    """
    if clock not in ("cpu", "wall"):
        raise ValueError(f"clock must be 'cpu' or 'wall', got {clock!r}")
    now = time.process_time if clock == "cpu" else time.perf_counter
    for _ in range(warmup):
        ours(setup())
        reference(setup())
    ours_t: list[float] = []
    ref_t: list[float] = []
    for i in range(pairs):
        sides = [(ours, ours_t), (reference, ref_t)]
        for fn, times in sides if i % 2 == 0 else sides[::-1]:
            arg = setup()
            started = now()
            fn(arg)
            times.append(now() - started)
    ratios = [a / b for a, b in zip(ours_t, ref_t, strict=True)]
    return statistics.median(ours_t), statistics.median(ref_t), statistics.median(ratios)


def interleaved_timing(
    ours: Callable[[], Any], references: Sequence[Callable[[], Any]], pairs: int
) -> tuple[float, list[float], list[float]]:
    """`paired_timing` against several references at once: each round runs ours and every
    reference in a rotated order; the ratios of a round share its run of ours. Returns the
    median seconds of ours, of each reference, and the median ratio against each (CPU clock)."""
    sides = [ours, *references]
    times: list[list[float]] = [[] for _ in sides]
    for i in range(pairs):
        order = list(range(len(sides)))
        order = order[i % len(order) :] + order[: i % len(order)]
        for k in order:
            started = time.process_time()
            sides[k]()
            times[k].append(time.process_time() - started)
    ratios = [statistics.median(a / b for a, b in zip(times[0], t, strict=True)) for t in times[1:]]
    return statistics.median(times[0]), [statistics.median(t) for t in times[1:]], ratios


# --- training -----------------------------------------------------------------------------------


def plain_epoch(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, lr: float, seed: int
) -> None:
    """The reference: a minimal hand-written epoch (Adam, shuffled index batches, hard labels)."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for idx in order.split(batch_size):
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def train_split(cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_dataset("digits", "train")
    return x[: cfg.train_images], y[: cfg.train_images]


def digits_model(seed: int) -> nn.Module:
    spec = get_dataset_spec("digits")
    torch.manual_seed(seed)
    return build_model(spec.default_arch, spec.shape, spec.num_classes, spec.mean, spec.std)


def bench_train_epoch(cfg: Config) -> dict:
    """Our teacher epoch (`fit` with the temperature cross-entropy at T=1) against `plain_epoch`."""
    x, y = train_split(cfg)
    recipe = replace(recipe_for("digits"), epochs=1)
    base = digits_model(cfg.seed)
    loss_fn = temperature_cross_entropy(1.0)
    ours_s, ref_s, ratio = paired_timing(
        lambda m: fit(m, x, y, y, loss_fn, recipe, CPU, cfg.seed),
        lambda m: plain_epoch(m, x, y, recipe.batch_size, recipe.lr, cfg.seed),
        cfg.train_pairs,
        setup=lambda: copy.deepcopy(base),
    )
    note = f"digits train split ({len(x)} images), {recipe.optimizer}, batch {recipe.batch_size}, one epoch"
    return row("train_epoch_vs_plain_loop", ours_s, ref_s, ratio, note)


def bench_train_epoch_with_checkpoint(cfg: Config) -> dict:
    """Our teacher epoch with the resumable checkpoint `train_teacher` saves after every epoch."""
    x, y = train_split(cfg)
    recipe = replace(recipe_for("digits"), epochs=1)
    base = digits_model(cfg.seed)
    loss_fn = temperature_cross_entropy(1.0)
    with tempfile.TemporaryDirectory(prefix="defdistill-bench-ckpt-") as folder:
        checkpoint = TrainingCheckpoint(Path(folder), {"role": "benchmark"})
        ours_s, ref_s, ratio = paired_timing(
            lambda m: fit(m, x, y, y, loss_fn, recipe, CPU, cfg.seed, checkpoint=checkpoint),
            lambda m: plain_epoch(m, x, y, recipe.batch_size, recipe.lr, cfg.seed),
            cfg.train_pairs,
            setup=lambda: copy.deepcopy(base),
            clock="wall",  # the fsync waits for the disk, which CPU time would not count
        )
    note = (
        "as train_epoch_vs_plain_loop, plus the checkpoint (weights, optimiser state, generators; "
        "safetensors, SHA-256, fsync, atomic rename) that train-teacher and distill save after each "
        "epoch; wall clock"
    )
    return row("train_epoch_with_checkpoint_vs_plain_loop", ours_s, ref_s, ratio, note)


def bench_threads(cfg: Config) -> dict:
    """Our epoch on every core against the same epoch on one thread (same process, interleaved)."""
    x, y = train_split(cfg)
    recipe = replace(recipe_for("digits"), epochs=1)
    base = digits_model(cfg.seed)
    loss_fn = temperature_cross_entropy(1.0)
    cores, before = os.cpu_count() or 1, torch.get_num_threads()

    def on(threads: int) -> Callable[[nn.Module], Any]:
        def epoch(m: nn.Module) -> None:
            torch.set_num_threads(threads)
            fit(m, x, y, y, loss_fn, recipe, CPU, cfg.seed)

        return epoch

    pairs = 2 if cfg.quick else 5  # few: on a busy machine the multi-threaded epoch can take seconds
    try:
        ours_s, ref_s, ratio = paired_timing(
            on(cores), on(1), pairs, setup=lambda: copy.deepcopy(base), clock="wall"
        )
    finally:
        torch.set_num_threads(before)
    note = (
        f"digits epoch on {cores} threads (one per core, torch's default) against 1 thread (the library's "
        f"default, {THREADS_ENV}); a thread that waits for a core another process holds stalls every "
        "operation, and the numbers differ in the last bits between thread counts; wall clock"
    )
    return row(f"train_epoch_{cores}_threads_vs_1_thread", ours_s, ref_s, ratio, note)


def bench_distill_epoch(cfg: Config, teacher: nn.Module) -> dict:
    """Our distillation epoch (cached teacher logits, soft labels at T) against `plain_epoch`."""
    x, y = train_split(cfg)
    recipe = replace(recipe_for("digits"), epochs=1)
    teacher_logits = predict_logits(teacher, x, CPU)  # once, as distill() caches them
    targets = {"logits": teacher_logits}
    objective = DistillationObjective(cfg.distill_T, 1.0, t_squared=recipe.t_squared)
    base = digits_model(cfg.seed + 1)
    ours_s, ref_s, ratio = paired_timing(
        lambda m: fit(m, x, y, targets, objective, recipe, CPU, cfg.seed),
        lambda m: plain_epoch(m, x, y, recipe.batch_size, recipe.lr, cfg.seed),
        cfg.train_pairs,
        setup=lambda: copy.deepcopy(base),
    )
    note = f"soft labels at T={cfg.distill_T:g} from cached teacher logits vs hard-label cross-entropy"
    return row("distill_epoch_vs_plain_loop", ours_s, ref_s, ratio, note)


def bench_adv_epoch(cfg: Config) -> dict:
    """A PGD adversarial-training epoch (Madry et al. 2018, the digits budget) against our plain
    epoch, both through `fit`: the price of the defence, not an overhead to bring to 1."""
    x, y = train_split(cfg)
    recipe = replace(recipe_for("digits"), epochs=1)
    base = digits_model(cfg.seed)
    objective = adversarial_objective("pgd", "digits")
    plain = temperature_cross_entropy(1.0)
    ours_s, ref_s, ratio = paired_timing(
        lambda m: fit(m, x, y, y, objective, recipe, CPU, cfg.seed),
        lambda m: fit(m, x, y, y, plain, recipe, CPU, cfg.seed),
        max(2, cfg.train_pairs // 3),  # an adversarial epoch costs several plain ones
        setup=lambda: copy.deepcopy(base),
    )
    note = (
        f"PGD-AT epoch (eps {objective.eps:g}, {objective.steps} steps of {objective.step_size:g}) vs a "
        f"plain epoch, both fit() on the digits train split ({len(x)} images); expected a little under "
        "steps + 1 (crafting computes no weight gradient): the cost of the defence, not an overhead"
    )
    return row("adv_epoch_vs_plain_epoch", ours_s, ref_s, ratio, note)


# --- attacks ------------------------------------------------------------------------------------


def attack_settings(cfg: Config) -> AttackSettings:
    settings = replace(
        AttackSettings(), pgd_steps=cfg.pgd_steps, cw_steps=cfg.cw_steps,
        cw_binary_search_steps=cfg.cw_binary_search_steps, cw_stepsize=CW_CURVE_STEPSIZE,
    )  # fmt: skip
    return foolbox_cw_search(settings, CW_INITIAL_CONST)


def raw_foolbox_attack(name: str, settings: AttackSettings) -> Any:
    """The Foolbox attack a user would build by hand with the same settings as ours."""
    import foolbox as fb

    if name == "fgsm":
        return fb.attacks.FGSM()
    if name == "pgd":
        return fb.attacks.LinfPGD(
            steps=settings.pgd_steps,
            rel_stepsize=settings.pgd_rel_stepsize,
            random_start=settings.pgd_random_start,
        )
    if name == "cw":
        return fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=settings.cw_binary_search_steps, steps=settings.cw_steps,
            stepsize=settings.cw_stepsize, confidence=settings.cw_confidence,
            initial_const=settings.cw_initial_const, abort_early=True,
        )  # fmt: skip
    raise ValueError(name)


def bench_attack_vs_foolbox(
    cfg: Config, name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, pairs: int | None = None
) -> dict:
    """`run_attack` (metrics included) against the same Foolbox attack called directly."""
    import foolbox as fb

    settings = attack_settings(cfg)
    eps = None if name == "cw" else cfg.eps
    outcome: dict[str, Any] = {}

    def ours(_: Any) -> None:
        outcome["ours"] = run_attack(model, x, y, name, [cfg.eps], settings, CPU, cfg.seed)[0]

    def reference(_: Any) -> None:
        torch.manual_seed(cfg.seed)
        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=CPU)
        _, clipped, is_adv = raw_foolbox_attack(name, settings)(fmodel, x, y, epsilons=[eps])
        outcome["reference"] = is_adv[0]
        outcome["reference_black"] = clipped[0].flatten(1).abs().amax(1) == 0

    ours_s, ref_s, ratio = paired_timing(ours, reference, pairs or cfg.attack_pairs)
    clean = predict_logits(model, x, CPU).argmax(1) == y
    # Foolbox's CW returns an all-zero image where its search failed; ours counts it as a failure
    ref_adv = outcome["reference"].cpu() & ~outcome["reference_black"].cpu()
    ref_robust = float((clean & ~ref_adv).float().mean())
    same = round(outcome["ours"]["robust_acc"] * len(x)) == round(ref_robust * len(x))
    detail = {"fgsm": f"eps {cfg.eps}", "pgd": f"{settings.pgd_steps} steps, eps {cfg.eps}"}.get(
        name,
        f"{settings.cw_steps} steps x {settings.cw_binary_search_steps} searches, Adam step "
        f"{settings.cw_stepsize:g}",
    )
    note = (
        f"{len(x)} digits test inputs, {detail}; robust accuracy {outcome['ours']['robust_acc']:.4f}, "
        f"{'the same as' if same else 'DIFFERENT from'} the reference's {ref_robust:.4f}"
    )
    return row(f"{name}_vs_raw_foolbox", ours_s, ref_s, ratio, note)


SKIPPED_TORCHATTACKS = "skipped: torchattacks is not installed (pip install -e '.[bench]')"


def torchattacks_pgd(cfg: Config, model: nn.Module) -> Any | None:
    """torchattacks.PGD with our PGD's eps, step (eps * rel_stepsize), steps and random start."""
    try:
        import torchattacks
    except ImportError:
        return None
    settings = attack_settings(cfg)
    return torchattacks.PGD(
        model,
        eps=cfg.eps,
        alpha=cfg.eps * settings.pgd_rel_stepsize,
        steps=settings.pgd_steps,
        random_start=settings.pgd_random_start,
    )


def plain_robustness(
    model: nn.Module, attack: Any, x: torch.Tensor, y: torch.Tensor, seed: int
) -> dict[str, float]:
    """One robustness row as a torchattacks user computes it in plain PyTorch: the clean
    predictions, the attack, the predictions on its examples, the metrics."""
    torch.manual_seed(seed)
    with torch.inference_mode():
        clean = model(x).argmax(1) == y
    adv = attack(x, y)
    with torch.inference_mode():
        fooled = model(adv).argmax(1) != y
    success = clean & fooled
    distances = (adv.detach() - x).flatten(1).abs().amax(1)
    return {
        "robust_acc": float((clean & ~fooled).float().mean()),
        "success_rate": float(success.sum() / clean.sum()) if clean.any() else math.nan,
        "median_dist": float(distances[success].double().quantile(0.5)) if success.any() else math.nan,
    }


def bench_pgd_vs_torchattacks(cfg: Config, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """Our PGD (Foolbox's LinfPGD through `run_attack`) against torchattacks.PGD, like for like.

    Both sides: the same model in eval mode, the same inputs, steps, step size and eps, a random
    start drawn after the same torch seed, and the whole robustness row (clean predictions, the
    attack, predictions on its adversarial examples, the metrics). Per step both run the same
    kernels (torch.profiler: one forward, one backward to the input only, sign, projection,
    clip), so what separates them is a cost per call, measured here on one input (about 2 ms:
    Foolbox's eagerpy layer). The same pair also moves by about 1.5% either way from one process
    to the next, with the memory layout under the memory-bound max-pool and ReLU kernels. A
    second row (full mode) times torchattacks' call alone, which returns images, no predictions.
    """
    attack = torchattacks_pgd(cfg, model)
    if attack is None:
        return [row("pgd_vs_torchattacks", None, None, None, SKIPPED_TORCHATTACKS)]
    import torchattacks

    settings = attack_settings(cfg)
    outcome: dict[str, dict] = {}

    def ours_on(xs: torch.Tensor, ys: torch.Tensor) -> Callable[[Any], None]:
        def run(_: Any) -> None:
            outcome["ours"] = run_attack(model, xs, ys, "pgd", [cfg.eps], settings, CPU, cfg.seed)[0]

        return run

    def reference_on(xs: torch.Tensor, ys: torch.Tensor) -> Callable[[Any], None]:
        def run(_: Any) -> None:
            outcome["reference"] = plain_robustness(model, attack, xs, ys, cfg.seed)

        return run

    ours_s, ref_s, ratio = paired_timing(ours_on(x, y), reference_on(x, y), cfg.torchattacks_pairs)
    ours_acc, ref_acc = outcome["ours"]["robust_acc"], outcome["reference"]["robust_acc"]
    one_ours, one_ref, _ = paired_timing(
        ours_on(x[:1], y[:1]), reference_on(x[:1], y[:1]), 4 * cfg.torchattacks_pairs
    )
    step = cfg.eps * settings.pgd_rel_stepsize
    note = (
        f"{len(x)} digits test inputs, {settings.pgd_steps} steps of {step:.4g}, eps {cfg.eps}, random start "
        f"on both; both compute the clean and adversarial predictions and the metrics (robust accuracy "
        f"{ours_acc:.4f} ours, {ref_acc:.4f} torchattacks {torchattacks.__version__}). Per step both run "
        f"the same kernels; the cost per call, on one input, is {one_ours * 1e3:.1f} ms against "
        f"{one_ref * 1e3:.1f} ms ({(one_ours - one_ref) * 1e3:+.1f} ms, {(one_ours - one_ref) / ref_s:+.1%} "
        "of the reference here: Foolbox's eagerpy wrappers, its two input-bounds checks, our seeding)"
    )
    rows = [row("pgd_vs_torchattacks", ours_s, ref_s, ratio, note)]
    if cfg.images_only_row:

        def images_only(_: Any) -> None:
            torch.manual_seed(cfg.seed)
            attack(x, y)

        ours_s, ref_s, ratio = paired_timing(ours_on(x, y), images_only, cfg.torchattacks_pairs)
        note = (
            "as pgd_vs_torchattacks, the reference being torchattacks' call alone (adversarial images, "
            f"no predictions): ours also makes the two forward passes the metrics need, against "
            f"{settings.pgd_steps} forward-backward steps"
        )
        rows.append(row("pgd_vs_torchattacks_images_only", ours_s, ref_s, ratio, note))
    return rows


def _torchattacks() -> Any | None:
    try:
        import torchattacks
    except ImportError:
        return None
    return torchattacks


# Our attacks against torchattacks' implementation of the same attack (Croce & Hein's reference
# code, ported): (our registry name, torchattacks class, its keyword arguments). Both sides run
# with the same eps, norm, steps (APGD), target classes (APGD-T: 9) and queries (Square).
TORCHATTACKS_PAIRS = (
    ("apgd-ce", "APGD", {"loss": "ce"}),
    ("apgd-dlr", "APGD", {"loss": "dlr"}),
    ("apgd-t", "APGDT", {}),
    ("square", "Square", {}),
)


def bench_attacks_vs_torchattacks(
    cfg: Config, model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> list[dict]:
    """Every APGD variant and Square, L-inf and L2, through `run_attack` (its Foolbox adapter, the
    metrics and per-input records) against torchattacks' class with the same settings computing the
    same robustness row in plain PyTorch (`plain_robustness`), on the same inputs. Goal: <= 1.0."""
    torchattacks = _torchattacks()
    if torchattacks is None:
        return [row("apgd-ce_linf_vs_torchattacks", None, None, None, SKIPPED_TORCHATTACKS)]
    x, y = x[: cfg.n_reference], y[: cfg.n_reference]
    steps, queries = cfg.apgd_steps, cfg.square_queries
    rows = []
    for norm, eps in (("linf", cfg.eps), ("l2", cfg.l2_eps)):
        settings = replace(AttackSettings(), norm=norm, apgd_steps=steps, square_queries=queries)
        for name, cls, extra in TORCHATTACKS_PAIRS:
            budget = {"n_queries": queries} if name == "square" else {"steps": steps}
            attack = getattr(torchattacks, cls)(
                model, norm="Linf" if norm == "linf" else "L2", eps=eps, n_restarts=1, seed=cfg.seed,
                **budget, **extra,
            )  # fmt: skip
            outcome: dict[str, dict] = {}

            def ours(
                _: Any,
                name: str = name,
                settings: AttackSettings = settings,
                eps: float = eps,
                outcome: dict = outcome,
            ) -> None:
                outcome["ours"] = run_attack(model, x, y, name, [eps], settings, CPU, cfg.seed)[0]

            def reference(_: Any, attack: Any = attack, outcome: dict = outcome) -> None:
                outcome["reference"] = plain_robustness(model, attack, x, y, cfg.seed)

            ours_s, ref_s, ratio = paired_timing(ours, reference, cfg.reference_pairs)
            what = f"{queries} queries" if name == "square" else f"{steps} steps"
            if name == "apgd-t":
                what += ", 9 target classes"
            note = (
                f"{len(x)} digits test inputs, {norm} eps {eps:g}, {what}, 1 restart; robust accuracy "
                f"{outcome['ours']['robust_acc']:.4f} ours, {outcome['reference']['robust_acc']:.4f} "
                f"torchattacks {torchattacks.__version__}"
            )
            rows.append(row(f"{name}_{norm}_vs_torchattacks", ours_s, ref_s, ratio, note))
    return rows


def torchattacks_autoattack(model: nn.Module, eps: float, seed: int, norm: str = "Linf") -> Any:
    """torchattacks' AutoAttack, standard version: APGD-CE, APGD-T, FAB-T, Square (5,000 queries)."""
    torchattacks = _torchattacks()
    assert torchattacks is not None
    return torchattacks.AutoAttack(model, norm=norm, eps=eps, version="standard", n_classes=10, seed=seed)


def autoattack_references(model: nn.Module, eps: float, seed: int) -> list[tuple[str, str, Any]]:
    """torchattacks' AutoAttack standard as shipped (10 steps) and at the paper's 100 steps:
    (row-name suffix, what it runs, the attack)."""
    return [
        (
            "",
            "at its default 10 steps for APGD-CE, APGD-T and FAB-T",
            torchattacks_autoattack(model, eps, seed),
        ),
        (
            "_100_steps",
            f"at the {AUTOATTACK_PAPER_STEPS} steps of the AutoAttack paper's standard version",
            torchattacks_autoattack_steps(model, eps, seed, AUTOATTACK_PAPER_STEPS),
        ),
    ]


def against_autoattack_references(
    ours: Callable[[], Any], model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: Config
) -> tuple[float, list[tuple[str, str, float, float, float]]]:
    """`ours` timed interleaved with both `autoattack_references` on the same inputs: the median
    seconds of ours, and per reference (row-name suffix, what it runs, seconds, ratio, robust accuracy)."""
    references = autoattack_references(model, cfg.eps, cfg.seed)
    robust: dict[str, float] = {}

    def reference(suffix: str, attack: Any) -> Callable[[], None]:
        def run() -> None:
            robust[suffix] = plain_robustness(model, attack, x, y, cfg.seed)["robust_acc"]

        return run

    ours_s, refs_s, ratios = interleaved_timing(
        ours, [reference(suffix, attack) for suffix, _, attack in references], cfg.autoattack_pairs
    )
    return ours_s, [
        (suffix, budget, ref_s, ratio, robust[suffix])
        for (suffix, budget, _), ref_s, ratio in zip(references, refs_s, ratios, strict=True)
    ]


def bench_autoattack_vs_torchattacks(
    cfg: Config, model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> list[dict]:
    """Our AutoAttack cascade (APGD-CE, APGD-T, Square 5,000 queries; no FAB-T) through `run_attack`
    against torchattacks' AutoAttack standard (the same plus FAB-T) on the same model and inputs,
    at its 10 steps and at the paper's 100."""
    name = "autoattack_vs_torchattacks_autoattack"
    torchattacks = _torchattacks()
    if torchattacks is None:
        return [row(name, None, None, None, SKIPPED_TORCHATTACKS)]
    x, y = x[: cfg.n_reference], y[: cfg.n_reference]
    outcome: dict[str, dict] = {}

    def ours() -> None:
        outcome["ours"] = run_attack(model, x, y, "autoattack", [cfg.eps], AttackSettings(), CPU, cfg.seed)[0]

    ours_s, references = against_autoattack_references(ours, model, x, y, cfg)
    rows = []
    for suffix, budget, ref_s, ratio, robust in references:
        note = (
            f"{len(x)} digits test inputs, L-inf eps {cfg.eps}; ours: APGD-CE, APGD-T (9 targets), "
            "100 steps, Square (5,000 queries), each on the inputs still standing; torchattacks "
            f"{torchattacks.__version__}: the same and FAB-T, {budget}; robust accuracy "
            f"{outcome['ours']['robust_acc']:.4f} ours, {robust:.4f} torchattacks"
        )
        rows.append(row(name + suffix, ours_s, ref_s, ratio, note))
    return rows


def bench_hsj_vs_foolbox(cfg: Config, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Our HopSkipJump row (`run_attack`: Foolbox's attack run on the inputs it can start from, the
    metrics, the per-input records) against Foolbox's HopSkipJumpAttack called directly."""
    import foolbox as fb

    settings = replace(
        AttackSettings(), hsj_steps=cfg.hsj_steps, hsj_initial_evals=cfg.hsj_initial_evals,
        hsj_max_evals=cfg.hsj_max_evals,
    )  # fmt: skip
    k = settings.decision_n
    xs, ys = x[:k], y[:k]
    outcome: dict[str, Any] = {}

    def ours(_: Any) -> None:
        outcome["ours"] = run_attack(model, xs, ys, "hsj", [], settings, CPU, cfg.seed)[0]

    def reference(_: Any) -> None:
        torch.manual_seed(cfg.seed)
        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=CPU)
        attack = fb.attacks.HopSkipJumpAttack(
            steps=settings.hsj_steps, initial_gradient_eval_steps=settings.hsj_initial_evals,
            max_gradient_eval_steps=settings.hsj_max_evals, constraint="linf",
        )  # fmt: skip
        _, clipped, is_adv = attack(fmodel, xs, ys, epsilons=None)
        outcome["reference"] = (clipped - xs).flatten(1).abs().amax(1), is_adv

    ours_s, ref_s, ratio = paired_timing(ours, reference, cfg.hsj_pairs, warmup=0)
    clean = predict_logits(model, xs, CPU).argmax(1) == ys
    dist, is_adv = outcome["reference"]
    within = clean & is_adv & (dist <= cfg.eps + 1e-6)
    ref_within = int(within.sum()) / int(clean.sum())
    mine = outcome["ours"]
    mine_within = sum(1 for d in mine["per_input"]["dist"] if d is not None and d <= cfg.eps + 1e-6) / int(
        clean.sum()
    )
    note = (
        f"first {k} digits test inputs, L-inf, {settings.hsj_steps} steps, {settings.hsj_initial_evals} to "
        f"{settings.hsj_max_evals} gradient-estimate queries; success within eps {cfg.eps}: "
        f"{mine_within:.4f} ours, {ref_within:.4f} Foolbox; success unbounded "
        f"{mine['success_rate']:.4f} ours, "
        f"median L-inf {mine['median_dist']:.4f} ours, "
        f"{float(dist[clean & is_adv].median()) if bool((clean & is_adv).any()) else math.nan:.4f} Foolbox"
    )
    return row("hsj_vs_foolbox", ours_s, ref_s, ratio, note)


def plain_pgd_at_epoch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: Any,
    eps: float,
    steps: int,
    step: float,
    seed: int,
) -> None:
    """The reference: a hand-written PGD adversarial-training epoch (Madry et al. 2018): per batch,
    L-inf PGD on the cross-entropy in train mode from a uniform random start, then one step on x'."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=generator)
    for idx in order.split(recipe.batch_size):
        xb, yb = x[idx], y[idx]
        x_adv = (xb + (2 * torch.rand(xb.shape, generator=generator) - 1) * eps).clamp(0, 1)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), yb, reduction="sum"), [x_adv])
            x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), xb - eps), xb + eps).clamp(0, 1)
        loss = F.cross_entropy(model(x_adv), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def bench_adv_epoch_vs_plain_pgd_at(cfg: Config) -> dict:
    """Our PGD adversarial-training epoch (`fit` with `adversarial_objective("pgd")`) against the
    same epoch written by hand (`plain_pgd_at_epoch`): the overhead of the library's loop."""
    x, y = train_split(cfg)
    recipe = replace(recipe_for("digits"), epochs=1)
    base = digits_model(cfg.seed)
    objective = adversarial_objective("pgd", "digits")
    ours_s, ref_s, ratio = paired_timing(
        lambda m: fit(m, x, y, y, objective, recipe, CPU, cfg.seed),
        lambda m: plain_pgd_at_epoch(
            m, x, y, recipe, objective.eps, objective.steps, objective.step_size, cfg.seed
        ),
        max(2, cfg.train_pairs // 3),
        setup=lambda: copy.deepcopy(base),
    )
    note = (
        f"PGD-AT epoch (eps {objective.eps:g}, {objective.steps} steps of {objective.step_size:g}, "
        "crafted in "
        f"train mode) on the digits train split ({len(x)} images), both sides the same passes"
    )
    return row("adv_epoch_vs_plain_pgd_at_loop", ours_s, ref_s, ratio, note)


def bench_audit_vs_torchattacks(
    cfg: Config, model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> list[dict]:
    """`defdistill.audit` (naive FGSM and PGD, APGD-CE, APGD-DLR, APGD-T, Square, noise, transfer,
    BPDA, HopSkipJump, its preflight and verdict) against torchattacks' AutoAttack standard on
    the same model and inputs at the same eps (at its 10 steps and at the paper's 100), both
    robust accuracies beside the times."""
    name = "audit_vs_torchattacks_autoattack"
    torchattacks = _torchattacks()
    if torchattacks is None:
        return [row(name, None, None, None, SKIPPED_TORCHATTACKS)]
    from defdistill import audit
    from defdistill.studies.audit import audit_budgets

    budgets = audit_budgets(cfg.audit_budget)
    x, y = x[: cfg.n_reference], y[: cfg.n_reference]
    x_train, _ = train_split(cfg)
    outcome: dict[str, Any] = {}

    def ours() -> None:
        outcome["ours"] = audit(
            model, x, y, eps=[cfg.eps], x_train=x_train, seed=cfg.seed, dataset="digits", budgets=budgets
        )

    ours_s, references = against_autoattack_references(ours, model, x, y, cfg)
    result = outcome["ours"]
    rows = []
    for suffix, budget, ref_s, ratio, robust in references:
        note = (
            f"{len(x)} digits test inputs, L-inf eps {cfg.eps}, the audit's {cfg.audit_budget} budgets "
            "(its attacks: "
            f"{', '.join(a['name'] for a in result.attacks)}; the surrogate distilled from the digits train "
            f"split); worst-case robust accuracy {result.robust_accuracy[f'{cfg.eps:g}']:.4f} ours (naive "
            f"{result.naive_robust_accuracy[f'{cfg.eps:g}']:.4f}), {robust:.4f} "
            f"torchattacks {torchattacks.__version__} AutoAttack standard {budget}; verdict: {result.verdict}"
        )
        rows.append(row(name + suffix, ours_s, ref_s, ratio, note))
    return rows


def cw_curve(cfg: Config, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """Carlini-Wagner success and median L2 against Adam steps and binary-search steps (at the
    default Adam step size), then against the step size (at the fewest binary-search steps)."""
    default = CW_CURVE_STEPSIZE
    grid = [(default, search, steps) for search in cfg.cw_curve_search_steps for steps in cfg.cw_curve_steps]
    fewest = min(cfg.cw_curve_search_steps, default=3)
    grid += [
        (lr, fewest, steps) for lr in cfg.cw_curve_stepsizes for steps in cfg.cw_curve_steps if steps >= 100
    ]
    points = []
    for stepsize, search, steps in grid:
        settings = foolbox_cw_search(
            replace(AttackSettings(), cw_steps=steps, cw_binary_search_steps=search, cw_stepsize=stepsize),
            CW_INITIAL_CONST,
        )
        started = time.perf_counter()
        result = run_attack(model, x, y, "cw", settings=settings, device=CPU, seed=cfg.seed)[0]
        points.append(
            {
                "steps": steps,
                "binary_search_steps": search,
                "stepsize": stepsize,
                "n": len(x),
                "success_rate": result["success_rate"],
                "median_l2": result["median_dist"],
                "seconds": time.perf_counter() - started,
            }
        )
    return points


def cw_curve_rows(points: Sequence[dict], n: int) -> list[dict]:
    return [
        row(
            f"cw_curve_steps{p['steps']}_search{p['binary_search_steps']}_stepsize{p['stepsize']:g}",
            p["seconds"],
            None,
            None,
            f"success {p['success_rate']:.4f}, median L2 {p['median_l2']:.4f} on {n} digits test inputs "
            f"(teacher-T1)",
        )  # fmt: skip
        for p in points
    ]


# --- throughput, demo ---------------------------------------------------------------------------


def multiply_accumulates(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on one input (convolutions and linear layers)."""
    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output.numel() * k
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    handles = [
        m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return total


def matmul_peak_gflops(size: int = MATMUL_SIZE, repeats: int = 8) -> float:
    """Best float32 matrix-multiply rate of this process, in GFLOP/s."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        started = time.process_time()
        torch.mm(a, b)
        best = min(best, time.process_time() - started)
    return 2 * size**3 / best / 1e9


def bench_mnist_throughput(cfg: Config) -> dict:
    """Training images/s of papernot-mnist on synthetic 28x28 data, beside the matmul peak."""
    spec = get_dataset_spec("mnist")
    generator = torch.Generator().manual_seed(cfg.seed)
    x = torch.rand(cfg.throughput_images, *spec.shape, generator=generator)
    y = torch.randint(0, spec.num_classes, (cfg.throughput_images,), generator=generator)
    torch.manual_seed(cfg.seed)
    model = build_model("papernot-mnist", spec.shape, spec.num_classes, spec.mean, spec.std)
    recipe = replace(recipe_for("mnist"), epochs=1)
    loss_fn = temperature_cross_entropy(1.0)
    fit(
        copy.deepcopy(model),
        x[: recipe.batch_size * 2],
        y[: recipe.batch_size * 2],
        y,
        loss_fn,
        recipe,
        CPU,
        0,
    )
    peak = matmul_peak_gflops()
    started = time.process_time()
    fit(model, x, y, y, loss_fn, recipe, CPU, cfg.seed)
    seconds = time.process_time() - started
    peak = max(peak, matmul_peak_gflops())
    # forward + gradient of the inputs + gradient of the weights: three passes of the same size
    flops = 3 * 2 * multiply_accumulates(model, spec.shape) * len(x)
    at_peak = flops / (peak * 1e9)
    note = (
        f"{len(x) / seconds:.0f} images/s ({recipe.optimizer}, batch {recipe.batch_size}), "
        f"{flops / seconds / 1e9:.1f} GFLOP/s against {peak:.1f} GFLOP/s, the best float32 "
        f"{MATMUL_SIZE}x{MATMUL_SIZE} matrix multiply of the same run ({at_peak / seconds:.0%} of it); "
        "reference_s: the same FLOPs at that rate"
    )
    if seconds < at_peak:  # seen on AMD Zen: oneDNN's convolution kernels outrun MKL's sgemm
        note += "; above 100%: the convolutions' oneDNN kernels outrun torch.mm's float32 GEMM on this CPU"
    return row("mnist_train_throughput_vs_matmul_peak", seconds, at_peak, seconds / at_peak, note)


def defdistill_command() -> list[str]:
    """The command line of the package this process imports (PYTHONPATH first), not an installed script."""
    return [sys.executable, "-c", "from defdistill.cli import run; run()"]


def plain_digits_epoch_wall(repeats: int = 3) -> float:
    """Median wall seconds of `plain_epoch` on the digits train split (the demo's unit)."""
    x, y = load_dataset("digits", "train")
    recipe = recipe_for("digits")
    base = digits_model(0)
    times = []
    for i in range(repeats + 1):
        model = copy.deepcopy(base)
        started = time.perf_counter()
        plain_epoch(model, x, y, recipe.batch_size, recipe.lr, i)
        if i:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_demo() -> dict:
    """Wall time and peak resident memory of `defdistill demo --quiet` in a fresh folder, and the
    same as a multiple of a plain digits epoch's wall time measured just before and after."""
    before = plain_digits_epoch_wall()
    with tempfile.TemporaryDirectory(prefix="defdistill-bench-demo-") as folder:
        started = time.perf_counter()
        done = subprocess.run(
            [*defdistill_command(), "demo", "--quiet"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return row("demo_wall_time", None, None, None, f"the demo failed (exit {done.returncode}): {tail[0]}")
    epoch = statistics.median([before, plain_digits_epoch_wall()])
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_mib = usage.ru_maxrss / 1024  # KiB on Linux
    note = (
        "defdistill demo --quiet (digits, defaults: 2 processes) in a fresh folder; wall clock; "
        "reference_s: one "
        f"plain digits epoch (wall, the median around the demo), ratio: the demo in plain epochs; CPU of the "
        f"demo's processes {usage.ru_utime + usage.ru_stime:.0f} s; peak resident memory {peak_mib:.0f} MiB"
    )
    return row("demo_wall_time", seconds, epoch, seconds / epoch, note)


MNIST_ATTACKS = FULL_EVALUATION_ATTACKS
# The budgets of AutoAttack's standard version as its authors define it (Croce & Hein 2020:
# 100 iterations for APGD-CE, APGD-T and FAB-T); torchattacks' version="standard" runs 10.
AUTOATTACK_PAPER_STEPS = 100


def torchattacks_autoattack_steps(model: nn.Module, eps: float, seed: int, steps: int) -> Any:
    """torchattacks' AutoAttack standard cascade (APGD-CE, APGD-T, FAB-T, Square 5,000 queries,
    one restart each, each on the inputs still standing) with `steps` iterations for the first three."""
    ta = _torchattacks()
    assert ta is not None
    common = {"eps": eps, "norm": "Linf", "n_restarts": 1}
    return ta.MultiAttack(
        [
            ta.APGD(model, seed=seed, loss="ce", steps=steps, **common),
            ta.APGDT(model, seed=seed + 1, n_classes=10, steps=steps, **common),
            ta.FAB(model, seed=seed + 2, multi_targeted=True, n_classes=10, steps=steps, **common),
            ta.Square(model, seed=seed + 3, n_queries=5000, **common),
        ]
    )


@dataclass
class ImagePasses:
    """Images through a classifier's forward: without a gradient, and with the input's gradient."""

    forward: int = 0
    backward: int = 0

    def cost(self, forward_s: float, backward_s: float) -> float:
        return self.forward * forward_s + self.backward * backward_s

    def __str__(self) -> str:
        return f"{self.forward:,} images forward, {self.backward:,} forward-backward"


@contextlib.contextmanager
def counting_image_passes(passes: ImagePasses) -> Iterator[None]:
    """Count the images of every top-level classifier forward (ours load their model from the run,
    the reference is handed one: a global hook sees both; the transfer surrogate counts too)."""
    from defdistill.models import ImageClassifier

    def hook(module: nn.Module, args: tuple, _output: Any) -> None:
        if isinstance(module, ImageClassifier) and args and isinstance(args[0], torch.Tensor):
            if torch.is_grad_enabled() and args[0].requires_grad:
                passes.backward += len(args[0])
            else:
                passes.forward += len(args[0])

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def per_image_pass_seconds(model: nn.Module, shape: tuple[int, ...], batch: int = 100) -> tuple[float, float]:
    """CPU seconds per image of a plain forward and of a forward with the backward to the input,
    at `batch` images (the evaluation's batch), the median of 5."""
    net = copy.deepcopy(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.rand(batch, *shape)

    def timed(fn: Callable[[], Any]) -> float:
        fn()
        times = []
        for _ in range(5):
            started = time.process_time()
            fn()
            times.append(time.process_time() - started)
        return statistics.median(times) / batch

    def forward() -> None:
        with torch.no_grad():
            net(x)

    def backward() -> None:
        net(x.clone().requires_grad_(True)).sum().backward()

    return timed(forward), timed(backward)


def bench_mnist_full_evaluation(cfg: Config, data_dir: Path, runs_dir: Path) -> list[dict]:
    """The full evaluation of one MNIST model at its headline budget (`attack_model` with the MNIST
    sweep's L-inf attacks at eps 0.1, then the per-input worst case over them) against torchattacks'
    AutoAttack standard on the same model and inputs, at its default 10 steps and at the paper's
    100; one run of each, in turn (each side minutes), with the image passes each side made."""
    names = (
        "mnist_full_evaluation_vs_torchattacks_autoattack",
        "mnist_full_evaluation_vs_torchattacks_autoattack_100_steps",
    )
    torchattacks = _torchattacks()
    if torchattacks is None:
        return [row(name, None, None, None, SKIPPED_TORCHATTACKS) for name in names]
    if not (data_dir / "MNIST").is_dir():
        skipped = f"skipped: no MNIST under {data_dir} (--mnist-dir)"
        return [row(name, None, None, None, skipped) for name in names]
    from defdistill.evaluate.attacks import attack_model
    from defdistill.evaluate.worst_case import read_worst_case
    from defdistill.store.runs import run_dir
    from defdistill.train.loop import train_surrogate

    teacher = run_dir(runs_dir, "mnist", "teacher-T1")
    if not (teacher / "meta.json").is_file():
        train_teacher("mnist", T=1.0, epochs=1, runs_dir=runs_dir, data_dir=data_dir, device="cpu")
    if not (run_dir(runs_dir, "mnist", "surrogate-T1") / "meta.json").is_file():
        train_surrogate("mnist", 0, epochs=1, runs_dir=runs_dir, data_dir=data_dir, device="cpu")
    model, _ = load_run(teacher, dataset="mnist")
    model.eval()
    x, y = load_dataset("mnist", "test", data_dir)
    x, y = x[: cfg.mnist_n], y[: cfg.mnist_n]
    references = autoattack_references(model, 0.1, cfg.seed)
    robust: dict[str, float] = {}
    passes = {side: ImagePasses() for side in ("ours", *(suffix for suffix, _, _ in references))}
    seconds: dict[str, float] = {}

    def ours() -> None:
        with tempfile.TemporaryDirectory(prefix="defdistill-bench-mnist-") as results:
            attack_model(
                "teacher-T1", dataset="mnist", attacks=MNIST_ATTACKS, eps=[0.1], n=cfg.mnist_n, seed=cfg.seed,
                runs_dir=runs_dir, results_dir=results, data_dir=data_dir, device="cpu",
            )  # fmt: skip
            robust["ours"] = float(read_worst_case(results)["ensemble_robust_acc"].iloc[-1])

    def reference(suffix: str, attack: Any) -> Callable[[], None]:
        def run() -> None:
            robust[suffix] = plain_robustness(model, attack, x, y, cfg.seed)["robust_acc"]

        return run

    sides = [("ours", ours), *((suffix, reference(suffix, attack)) for suffix, _, attack in references)]
    for side, fn in sides:
        with counting_image_passes(passes[side]):
            started = time.process_time()
            fn()
            seconds[side] = time.process_time() - started
    forward_s, backward_s = per_image_pass_seconds(model, tuple(x.shape[1:]))
    ours_cost = passes["ours"].cost(forward_s, backward_s)
    common = (
        f"papernot-mnist trained 1 epoch, first {cfg.mnist_n} MNIST test inputs, L-inf eps 0.1; ours: "
        f"{', '.join(MNIST_ATTACKS)} (the full evaluation's attacks; AutoAttack with 100 APGD steps and "
        "Square's 5,000 queries), each on every input (each row is reported), with their records and "
        f"the per-input worst case: {passes['ours']}. torchattacks {torchattacks.__version__} AutoAttack "
        "standard (APGD-CE, APGD-T, FAB-T, Square 5,000 queries, each on the inputs still standing)"
    )
    rows = []
    for (side, budget, _), name in zip(references, names, strict=True):
        bound = ours_cost / passes[side].cost(forward_s, backward_s)
        note = (
            f"{common} {budget}: {passes[side]}. At this run's per-image costs ({forward_s * 1e6:.0f} us "
            f"forward, {backward_s * 1e6:.0f} us forward-backward, batch 100) the passes alone cost "
            f"{bound:.2f} times the reference's: the ratio of two implementations that spend nothing beyond "
            "their passes. Robust accuracy: "
            f"worst case {robust['ours']:.4f} ours, {robust[side]:.4f} torchattacks"
        )
        rows.append(row(name, seconds["ours"], seconds[side], seconds["ours"] / seconds[side], note))
    return rows


def previous_cw_curve(path: Path) -> list[dict]:
    """The Carlini-Wagner curve of a previous full run's benchmarks.json (its cw_curve_ rows)."""
    if not path.is_file():
        return []
    import json
    import re

    points = []
    for r in json.loads(path.read_text()):
        name = re.fullmatch(r"cw_curve_steps(\d+)_search(\d+)_stepsize([\d.]+)", r["name"])
        found = re.search(r"success ([\d.]+), median L2 ([\d.]+) on (\d+)", r["note"])
        if name and found:
            points.append({
                "steps": int(name[1]), "binary_search_steps": int(name[2]), "stepsize": float(name[3]),
                "n": int(found[3]), "success_rate": float(found[1]), "median_l2": float(found[2]),
                "seconds": r["ours_s"],
            })  # fmt: skip
    return points


# --- the run ------------------------------------------------------------------------------------


def trained_teacher(cfg: Config, runs_dir: Path) -> nn.Module:
    """A T=1 digits teacher, trained for this run."""
    result = train_teacher(T=1.0, epochs=cfg.teacher_epochs, seed=cfg.seed, runs_dir=runs_dir, device="cpu")
    model, _ = load_run(result.path, dataset="digits")
    return model.eval()


def run_benchmarks(cfg: Config, log: Callable[[str], None] = print) -> tuple[list[dict], list[dict]]:
    """Every benchmark of `cfg`: the result rows, and the Carlini-Wagner curve points."""
    rows: list[dict] = []

    def add(new: dict) -> None:
        rows.append(new)
        ratio = "" if new["ratio"] is None else f" ratio {new['ratio']:.3f}"
        log(f"{new['name']}: ours {new['ours_s']} s, reference {new['reference_s']} s{ratio}")

    with tempfile.TemporaryDirectory(prefix="defdistill-bench-") as folder:
        teacher = trained_teacher(cfg, Path(folder) / "runs")
    x, y = load_dataset("digits", "test")
    x, y = x[: cfg.n_attack], y[: cfg.n_attack]
    add(bench_train_epoch(cfg))
    add(bench_distill_epoch(cfg, teacher))
    add(bench_train_epoch_with_checkpoint(cfg))
    add(bench_adv_epoch(cfg))
    add(bench_adv_epoch_vs_plain_pgd_at(cfg))
    if cfg.threads_row:
        add(bench_threads(cfg))
    add(bench_attack_vs_foolbox(cfg, "fgsm", teacher, x, y, pairs=3 * cfg.attack_pairs))
    add(bench_attack_vs_foolbox(cfg, "pgd", teacher, x, y))
    add(bench_attack_vs_foolbox(cfg, "cw", teacher, x, y, pairs=cfg.cw_pairs))
    for new in bench_pgd_vs_torchattacks(cfg, teacher, x, y):
        add(new)
    for new in bench_attacks_vs_torchattacks(cfg, teacher, x, y):
        add(new)
    for new in bench_autoattack_vs_torchattacks(cfg, teacher, x, y):
        add(new)
    add(bench_hsj_vs_foolbox(cfg, teacher, x, y))
    for new in bench_audit_vs_torchattacks(cfg, teacher, x, y):
        add(new)
    add(bench_mnist_throughput(cfg))
    if cfg.mnist_n:
        for new in bench_mnist_full_evaluation(cfg, cfg.mnist_dir, cfg.mnist_runs):
            add(new)
    points = previous_cw_curve(cfg.keep_cw_curve) if cfg.keep_cw_curve else cw_curve(cfg, teacher, x, y)
    for new in cw_curve_rows(points, len(x)):
        add(new)
    if cfg.demo:
        add(bench_demo())
    return rows, points


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def table_rows(rows: Sequence[dict]) -> list[str]:
    """The Markdown lines of the timed rows (the machine row and the Carlini-Wagner curve's points
    are shown elsewhere): name, ours, reference, ratio, note."""
    return [
        "| "
        + " | ".join([r["name"], _fmt(r["ours_s"]), _fmt(r["reference_s"]), _fmt(r["ratio"]), r["note"]])
        + " |"
        for r in rows
        if not r["name"].startswith("cw_curve_") and r["name"] != "machine"
    ]


def markdown(rows: Sequence[dict], points: Sequence[dict], cfg: Config, context: dict[str, str]) -> str:
    """The human-readable report: the ratio table, the Carlini-Wagner curve, the context."""
    lines = [
        "# Benchmarks",
        "",
        f"Mode: {'quick' if cfg.quick else 'full'}. "
        + "; ".join(f"{k}: {v}" for k, v in context.items())
        + ".",
        "",
        "ratio = ours / reference, the median of interleaved pairs (target <= "
        f"{RATIO_TARGET}; against torchattacks <= {TORCHATTACKS_GOAL}). Times are this process's CPU "
        "seconds (one torch thread: another process's load does not count) unless the note says wall clock.",
        "",
        "| benchmark | ours (s) | reference (s) | ratio | note |",
        "| --- | --- | --- | --- | --- |",
        *table_rows(rows),
    ]
    if points:
        lines += [
            "",
            f"## Carlini-Wagner L2 on {points[0]['n']} digits test inputs (teacher-T1, T=1)",
            "",
            "Success rate / median L2 of the successful examples / seconds, by Adam steps (rows) and "
            f"binary-search steps (columns); Foolbox's search from initial c {CW_INITIAL_CONST:g} (x10 "
            "until found, then bisection), abort early: the defaults before issue 15 were 200 steps x 3 "
            f"searches at Adam step {CW_CURVE_STEPSIZE:g}. The library's default now searches c per "
            "input (results/cw_convergence.md). The seconds are single runs at the load of their moment "
            "(not interleaved): compare them roughly."
            + (
                f" This run took the curve from {cfg.keep_cw_curve} (an earlier full run)."
                if cfg.keep_cw_curve
                else ""
            ),
        ]
        for stepsize in sorted({p["stepsize"] for p in points}, key=lambda v: v != CW_CURVE_STEPSIZE):
            at = [p for p in points if p["stepsize"] == stepsize]
            searches = sorted({p["binary_search_steps"] for p in at})
            lines += [
                "",
                f"Adam step {stepsize:g}:",
                "",
                "| steps | " + " | ".join(f"{s} searches" for s in searches) + " |",
                "| --- | " + " | ".join("---" for _ in searches) + " |",
            ]
            for steps in sorted({p["steps"] for p in at}):
                cells = []
                for search in searches:
                    hit = [p for p in at if p["steps"] == steps and p["binary_search_steps"] == search]
                    cells.append(
                        f"{hit[0]['success_rate']:.3f} / {hit[0]['median_l2']:.3f} / {hit[0]['seconds']:.1f}"
                        if hit
                        else ""
                    )
                lines.append(f"| {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def keep_freed_memory() -> str:
    """Ask glibc's malloc to keep freed memory in the process; say what the allocator does.

    By default glibc returns freed memory at the top of its heap to the system and unmaps large
    blocks at once, so the next step's activations fault in fresh zeroed pages: on the digits PGD
    attack about 130,000 minor page faults per call, 10-20% of its time, and how many depends on
    the heap layout the calls before left, which differs between the two sides of a pair (at
    equal work, ratios from 0.94 to 1.03 on the same machine). Process-wide, so both sides alike;
    the demo runs in its own process with the default.
    """
    if not sys.platform.startswith("linux"):
        return "the platform's default malloc"
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return "the platform's default malloc"
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    if mallopt(m_mmap_threshold, 64 << 20) and mallopt(m_trim_threshold, 1 << 30):
        return "glibc malloc keeping freed memory (mmap threshold 64 MiB, trim threshold 1 GiB)"
    return "glibc's default malloc (mallopt refused)"


def run_context() -> dict[str, str]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "CPU cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "load average at start": f"{load:.1f}",
    }


def cpu_model() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_row(context: dict[str, str]) -> dict:
    """The machine the rows were measured on, as a row without times (README's block reads it)."""
    return row(
        "machine", None, None, None, f"{cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}"
    )


README_BEGIN = (
    "<!-- benchmarks:timing (generated by benchmarks/run.py --readme from results/benchmarks.json) -->"
)
README_END = "<!-- /benchmarks:timing -->"


def readme_block(rows: Sequence[dict]) -> str:
    """README's timing sentences, from the rows of a full run."""
    by_name = {r["name"]: r for r in rows}
    machine = by_name.get("machine", {}).get("note", "an unrecorded machine")
    parts = []
    demo = by_name.get("demo_wall_time")
    if demo and demo["ours_s"] is not None and demo["ratio"] is not None:
        parts.append(
            f"`make demo` took {demo['ours_s']:.0f} s there, {demo['ratio']:.0f} times a plain training "
            f"epoch of the digits network measured beside it ({demo['reference_s']:.2f} s): the multiple, "
            "unlike the "
            "seconds, carries over to another machine"
        )
    mnist = by_name.get("mnist_full_evaluation_vs_torchattacks_autoattack")
    paper = by_name.get("mnist_full_evaluation_vs_torchattacks_autoattack_100_steps")
    if mnist and mnist["ratio"] is not None:
        text = (
            f"the full L-inf evaluation of one MNIST model ({len(MNIST_ATTACKS)} attacks on 100 inputs, "
            f"eps 0.1) took {mnist['ratio']:.2f} times the time of torchattacks' AutoAttack standard on "
            "the same inputs (which runs APGD and FAB-T for 10 steps"
        )
        if paper and paper["ratio"] is not None:
            text += f"; {paper['ratio']:.2f} times its time at the paper's 100 steps, as our AutoAttack runs"
        parts.append(text + ")")
    text = "; ".join(parts) if parts else "no full benchmark run is committed"
    body = f"Measured by `make bench` on {machine} (results/benchmarks.md): {text}."
    return f"{README_BEGIN}\n{body}\n{README_END}"


DOCS_BEGIN = (
    "<!-- benchmarks:table (generated by benchmarks/run.py --readme from results/benchmarks.json) -->"
)
DOCS_END = "<!-- /benchmarks:table -->"
DOCS_PAGE = Path("docs") / "performance.md"  # beside README.md


def docs_block(rows: Sequence[dict]) -> str:
    """docs/performance.md's table: every row with a time, its ratio, and its full note."""
    by_name = {r["name"]: r for r in rows}
    machine = by_name.get("machine", {}).get("note", "an unrecorded machine")
    lines = [
        DOCS_BEGIN,
        f"Measured on {machine} (results/benchmarks.md has the run's load and allocator).",
        "",
        "| benchmark | ours (s) | reference (s) | ratio | what both sides ran, and what they found |",
        "| --- | --- | --- | --- | --- |",
        *table_rows(rows),
        DOCS_END,
    ]
    return "\n".join(lines)


def _replace_block(path: Path, begin: str, end: str, block: str) -> bool:
    text = path.read_text()
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(path, head + block + tail)
    return True


def update_readme(path: Path, rows: Sequence[dict]) -> bool:
    """Replace README's generated timing block, and the table of docs/performance.md beside it;
    False where README has no block."""
    docs = path.parent / DOCS_PAGE
    if docs.is_file():
        _replace_block(docs, DOCS_BEGIN, DOCS_END, docs_block(rows))
    return _replace_block(path, README_BEGIN, README_END, readme_block(rows))


def write_results(results_dir: Path, rows: Sequence[dict], text: str) -> tuple[Path, Path]:
    """results/benchmarks.json and .md, each written atomically."""
    json_path, md_path = Path(results_dir) / "benchmarks.json", Path(results_dir) / "benchmarks.md"
    atomic_write_json(json_path, list(rows))
    atomic_write_text(md_path, text)
    return json_path, md_path


# The rows `--only` can measure again by themselves (the others share a trained digits teacher).
ONLY_ROWS: dict[str, Callable[[Config], list[dict]]] = {
    "mnist_full_evaluation": lambda cfg: bench_mnist_full_evaluation(cfg, cfg.mnist_dir, cfg.mnist_runs),
    "autoattack": lambda cfg: bench_autoattack_vs_torchattacks(cfg, *digits_reference(cfg)),
    "audit": lambda cfg: bench_audit_vs_torchattacks(cfg, *digits_reference(cfg)),
    "demo_wall_time": lambda cfg: [bench_demo()],
}


def digits_reference(cfg: Config) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The trained digits teacher and the test inputs the attack rows share (as run_benchmarks)."""
    with tempfile.TemporaryDirectory(prefix="defdistill-bench-") as folder:
        teacher = trained_teacher(cfg, Path(folder) / "runs")
    x, y = load_dataset("digits", "test")
    return teacher, x[: cfg.n_attack], y[: cfg.n_attack]


def remeasure(
    names: Sequence[str], cfg: Config, results_dir: Path, context: dict[str, str], readme: Path | None
) -> int:
    """Measure the rows `names` (ONLY_ROWS) again and put them in place of their namesakes in
    results_dir's benchmarks.json; the header says which rows this later run measured."""
    import json

    unknown = [n for n in names if n not in ONLY_ROWS]
    if unknown:
        print(f"error: --only knows {', '.join(ONLY_ROWS)}, not {', '.join(unknown)}", file=sys.stderr)
        return 2
    json_path, md_path = results_dir / "benchmarks.json", results_dir / "benchmarks.md"
    try:
        rows = json.loads(json_path.read_text())
        header = next(line for line in md_path.read_text().splitlines() if line.startswith("Mode: "))
    except (OSError, ValueError, StopIteration) as err:
        print(f"error: --only needs an earlier full run in {results_dir}: {err}", file=sys.stderr)
        return 2
    new = [r for name in names for r in ONLY_ROWS[name](cfg)]
    for r in new:
        print(f"{r['name']}: ours {r['ours_s']} s, reference {r['reference_s']} s, ratio {r['ratio']}")
    by_name = {r["name"]: r for r in new}
    merged = [by_name.pop(r["name"], r) for r in rows]
    at = next((i for i, r in enumerate(merged) if r["name"].startswith("cw_curve_")), len(merged))
    merged[at:at] = list(by_name.values())  # rows the earlier run did not have
    full = replace(cfg, quick=False)
    earlier = header.removeprefix("Mode: full. ").rstrip(".")
    later = ", ".join(r["name"] for r in new)
    context = {
        "earlier full run": earlier,
        f"measured again in a later run ({time.strftime('%Y-%m-%d')})": later,
        "load average at its start": context["load average at start"],
    }
    write_results(results_dir, merged, markdown(merged, previous_cw_curve(json_path), full, context))
    if readme is not None and update_readme(readme, merged):
        print(f"updated the timing block of {readme}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small sizes: under a minute on 2 cores.")
    parser.add_argument(
        "--results-dir", type=Path, default=Path("results"), help="Where to write the results."
    )
    parser.add_argument(
        "--threads", type=int, default=None, help=f"CPU threads (default: the library's, see {THREADS_ENV})."
    )
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="Leave glibc's malloc as it is: ratios then also depend on page faults (keep_freed_memory).",
    )
    parser.add_argument("--mnist-dir", type=Path, default=Path("../shared/datasets"), help="Where MNIST is.")
    parser.add_argument(
        "--keep-cw-curve", type=Path, default=None,
        help="Take the Carlini-Wagner curve from this benchmarks.json instead of measuring it again.",
    )  # fmt: skip
    parser.add_argument(
        "--only",
        default=None,
        help="Comma-separated rows to measure again (" + ", ".join(ONLY_ROWS) + "); the other rows of "
        "--results-dir's benchmarks.json are kept as they are.",
    )
    parser.add_argument("--readme", type=Path, default=None, help="Rewrite this README's timing block.")
    parser.add_argument(
        "--readme-from",
        type=Path,
        default=None,
        help="Only rewrite --readme's block from this benchmarks.json.",
    )
    args = parser.parse_args(argv)
    if args.readme_from is not None:
        import json

        return (
            0 if args.readme and update_readme(args.readme, json.loads(args.readme_from.read_text())) else 1
        )
    allocator = "glibc's default malloc" if args.default_malloc else keep_freed_memory()
    if args.threads is not None:
        os.environ[THREADS_ENV] = str(args.threads)  # read again by every seed_everything
    configure_threads()
    cfg = replace(QUICK if args.quick else FULL, mnist_dir=args.mnist_dir)
    if args.keep_cw_curve is not None:
        cfg = replace(cfg, keep_cw_curve=args.keep_cw_curve)
    context = run_context()
    context["allocator"] = allocator
    started = time.perf_counter()
    if args.only is not None:
        return remeasure(args.only.split(","), cfg, args.results_dir, context, args.readme)
    rows, points = run_benchmarks(cfg, log=lambda line: print(line, flush=True))
    rows.insert(0, machine_row(context))
    context["wall time of this run"] = f"{time.perf_counter() - started:.0f} s"
    paths = write_results(args.results_dir, rows, markdown(rows, points, cfg, context))
    print(f"wrote {paths[0]} and {paths[1]} in {context['wall time of this run']}")
    if args.readme is not None and not cfg.quick and update_readme(args.readme, rows):
        print(f"updated the timing block of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
