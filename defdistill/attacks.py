"""Attacks through Foolbox 3 and the metrics every table reports.

Each attack is a registry entry: a norm, whether it takes an epsilon budget, and how to
build the Foolbox attack from `AttackSettings`. The metrics (success_rate, robust_acc,
median_dist) are defined once, in `attack_metrics`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# Foolbox imports GitPython, which refuses to import without a git binary unless told to be quiet.
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
import foolbox as fb  # noqa: E402

from .data import get_dataset_spec, load_dataset  # noqa: E402
from .errors import DefdistillError  # noqa: E402
from .progress import SILENT, ProgressReporter  # noqa: E402
from .runs import format_T, load_run, resolve_model  # noqa: E402
from .runtime import resolve_device, seed_everything  # noqa: E402
from .tables import record_rows  # noqa: E402
from .training import check_positive_int, predict_logits  # noqa: E402

NORMS = ("linf", "l2")
DEFAULT_EPS = (0.05, 0.1, 0.2, 0.3)


@dataclass(frozen=True)
class AttackSettings:
    """Attack hyper-parameters; the defaults are the ones the tables are made with.

    PGD: Madry et al.'s L-inf PGD as Foolbox implements it (random start, step = eps * rel_stepsize).
    CW: Carlini & Wagner's L2 attack (Adam on tanh variables, margin loss on the logits, binary
    search over the constant c). Foolbox's 10,000 steps x 9 searches is hours on a CPU; on
    digits 100 steps x 5 searches already finds an adversarial example for ~99% of inputs.
    """

    pgd_steps: int = 40
    pgd_rel_stepsize: float = 0.01 / 0.3
    pgd_random_start: bool = True
    cw_steps: int = 100
    cw_binary_search_steps: int = 5
    cw_stepsize: float = 0.01
    cw_confidence: float = 0.0
    cw_initial_const: float = 0.01
    batch_size: int = 512


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack."""

    name: str
    norm: str
    bounded: bool  # takes an epsilon budget; False for minimal-perturbation attacks
    description: str
    build: Callable[[AttackSettings], fb.attacks.Attack]


ATTACKS: dict[str, AttackSpec] = {}


def register_attack(spec: AttackSpec) -> AttackSpec:
    """Add an attack to the registry under `spec.name`."""
    ATTACKS[spec.name] = spec
    return spec


register_attack(
    AttackSpec(
        "fgsm", "linf", True, "Fast Gradient Sign Method (Goodfellow et al. 2015), one step",
        lambda s: fb.attacks.FGSM(),
    )
)
register_attack(
    AttackSpec(
        "pgd", "linf", True, "L-inf projected gradient descent on cross-entropy (Madry et al. 2018)",
        lambda s: fb.attacks.LinfPGD(
            steps=s.pgd_steps, rel_stepsize=s.pgd_rel_stepsize, random_start=s.pgd_random_start
        ),
    )
)
register_attack(
    AttackSpec(
        "cw", "l2", False, "Carlini-Wagner L2, minimal perturbation on the logits (Carlini & Wagner 2017)",
        lambda s: fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=s.cw_binary_search_steps,
            steps=s.cw_steps,
            stepsize=s.cw_stepsize,
            confidence=s.cw_confidence,
            initial_const=s.cw_initial_const,
            abort_early=True,
        ),
    )
)


def check_attacks(names: Sequence[str]) -> list[str]:
    """Validate attack names against the registry (order kept, duplicates dropped)."""
    names = [n.strip().lower() for n in names if n.strip()]
    if not names:
        raise DefdistillError(f"no attack given: choose from {', '.join(ATTACKS)}")
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise DefdistillError(f"unknown attack {unknown[0]!r}: choose from {', '.join(ATTACKS)}")
    return list(dict.fromkeys(names))


def check_eps(values: Sequence[float]) -> list[float]:
    """Validate epsilon budgets: finite, in [0, 1] (the input range)."""
    values = [float(v) for v in values]
    if not values:
        raise DefdistillError("no epsilon given: e.g. --eps 0.05,0.1,0.2,0.3")
    for v in values:
        if not math.isfinite(v) or v < 0 or v > 1:
            raise DefdistillError(f"epsilon must lie in [0, 1] (inputs are in [0, 1]), got {v}")
    return list(dict.fromkeys(values))


def perturbation_norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example L-inf or L2 norm of a perturbation batch."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(p=2, dim=1)


def attack_metrics(
    clean_correct: torch.Tensor, is_adv: torch.Tensor, distances: torch.Tensor
) -> dict[str, float | int]:
    """The contract's metrics from per-input outcomes.

    success_rate: adversarial examples found among the inputs classified correctly
    (Papernot's adversarial sample success rate); robust_acc: inputs still correct after the
    attack over all n; median_dist: median perturbation norm of the successful examples.
    """
    clean_correct, is_adv = clean_correct.bool(), is_adv.bool()
    n = len(clean_correct)
    n_correct = int(clean_correct.sum())
    success = clean_correct & is_adv
    n_success = int(success.sum())
    return {
        "n": n,
        "clean_acc": n_correct / n if n else math.nan,
        "robust_acc": int((clean_correct & ~is_adv).sum()) / n if n else math.nan,
        "success_rate": n_success / n_correct if n_correct else math.nan,
        # quantile, not Tensor.median: the latter returns the lower of the two middle values
        "median_dist": float(distances[success].double().quantile(0.5)) if n_success else math.nan,
    }


def run_attack(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: str,
    eps: Sequence[float] = DEFAULT_EPS,
    settings: AttackSettings = AttackSettings(),
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: ProgressReporter = SILENT,
) -> list[dict[str, Any]]:
    """Attack `model` on (x, y); one row of metrics per epsilon (one row for unbounded attacks)."""
    spec = ATTACKS[check_attacks([attack])[0]]
    device = torch.device(device)
    model = model.to(device).eval()
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)
    clean_correct = predict_logits(model, x, device).argmax(1) == y
    budgets: list[float | None] = list(check_eps(eps)) if spec.bounded else [None]
    batches = range(0, len(x), settings.batch_size)
    rows = []
    with progress.task(f"{attack}", len(budgets) * len(batches)) as advance:
        for budget in budgets:
            seed_everything(seed)
            fb_attack = spec.build(settings)
            started = time.perf_counter()
            is_adv, distances = [], []
            for start in batches:
                xb = x[start : start + settings.batch_size].to(device)
                yb = y[start : start + settings.batch_size].to(device)
                _, clipped, success = fb_attack(fmodel, xb, yb, epsilons=budget)
                is_adv.append(success.cpu())
                distances.append(perturbation_norms(clipped - xb, spec.norm).cpu())
                advance(1)
            seconds = time.perf_counter() - started
            metrics = attack_metrics(clean_correct.cpu(), torch.cat(is_adv), torch.cat(distances))
            rows.append(
                {"attack": spec.name, "norm": spec.norm, "eps": budget, **metrics, "seconds": round(seconds, 3)}
            )
    return rows


@dataclass
class AttackReport:
    """What `attack_model` measured and recorded."""

    model_path: Path
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def attack_model(
    model: str = "student",
    dataset: str = "digits",
    attacks: Sequence[str] = ("fgsm", "pgd", "cw"),
    eps: Sequence[float] = DEFAULT_EPS,
    n: int | None = None,
    T: float | None = None,
    seed: int = 0,
    settings: AttackSettings = AttackSettings(),
    runs_dir: str | Path = "runs",
    results_dir: str | Path = "results",
    data_dir: str | Path = "data",
    device: str = "auto",
    progress: ProgressReporter = SILENT,
) -> AttackReport:
    """Attack one model (role, run name or run directory) on the first n test inputs; record rows."""
    get_dataset_spec(dataset)
    names = check_attacks(attacks)
    budgets = check_eps(eps) if any(ATTACKS[a].bounded for a in names) else list(eps)
    if n is not None:
        check_positive_int(n, "--n")
    torch_device = resolve_device(device)
    path = resolve_model(model, runs_dir, dataset, T)
    net, meta = load_run(path, dataset=dataset, map_location=torch_device)
    x, y = load_dataset(dataset, "test", data_dir)
    if n is not None:
        x, y = x[:n], y[:n]
    identity = {"dataset": dataset, "model": path.name, "role": meta["role"], "T": float(meta["T"])}
    rows = []
    for name in names:
        attack_rows = [
            identity | row
            for row in run_attack(net, x, y, name, budgets, settings, torch_device, seed, progress)
        ]
        record_rows(results_dir, "robustness", attack_rows)  # each finished attack is kept at once
        rows.extend(attack_rows)
    notes = []
    if meta["role"] == "student" and meta.get("teacher_T") is not None and float(meta["T"]) > 1:
        notes.append(
            f"{path.name} was distilled at T={format_T(meta['T'])} and is attacked at T=1, where its softmax "
            "saturates: low FGSM/PGD success may be gradient masking; compare with CW."
        )
    return AttackReport(path, rows, notes)
