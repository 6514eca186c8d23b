"""Compositions of the steps: the demo that runs the whole study on one dataset."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..checks import check_eps, check_positive_int, check_seed, check_temperature
from ..core.fileio import ensure_writable_dir
from ..core.progress import SILENT, ProgressReporter
from ..core.runtime import resolve_device
from ..data.registry import get_dataset_spec
from ..evaluate.attacks import DEFAULT_EPS, AttackSettings, attack_model, check_attacks
from ..evaluate.diagnose import Diagnosis, diagnose_model
from ..store.runs import run_name
from ..store.tables import rebuild_tables
from ..train.distill import distill
from ..train.loop import make_recipe, train_teacher


@dataclass
class DemoReport:
    """What the demo produced."""

    runs: list[Path]
    tables: dict[str, pd.DataFrame]
    seconds: float
    notes: list[str] = field(default_factory=list)
    diagnoses: list[Diagnosis] = field(default_factory=list)  # the gradient-masking verdict per model


def run_demo(
    dataset: str = "digits",
    T: float = 100.0,
    attacks: Sequence[str] = ("fgsm", "pgd", "pgd-margin", "cw"),
    eps: Sequence[float] = DEFAULT_EPS,
    n: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    settings: AttackSettings = AttackSettings(),
    runs_dir: str | Path = "runs",
    results_dir: str | Path = "results",
    data_dir: str | Path = "data",
    device: str = "auto",
    progress: ProgressReporter = SILENT,
) -> DemoReport:
    """Teachers at T=1 and T, the student at T, every attack on every model, a gradient-masking
    diagnosis of each (which adds transfer, HopSkipJump, APGD-DLR, noise, pgd-long and eps-1 PGD
    rows), then the tables."""
    get_dataset_spec(dataset)
    T = check_temperature(T)
    attacks = check_attacks(attacks)
    eps = check_eps(eps)
    # Every input is checked before the first model trains, not minutes later at the attacks.
    if n is not None:
        check_positive_int(n, "--n")
    make_recipe(dataset, epochs)
    check_seed(seed)
    resolve_device(device)
    ensure_writable_dir(Path(runs_dir) / dataset, "--runs-dir")
    ensure_writable_dir(results_dir, "--results-dir")
    started = time.perf_counter()
    common = dict(
        dataset=dataset, seed=seed, runs_dir=runs_dir, data_dir=data_dir, device=device, progress=progress
    )
    runs = [train_teacher(T=1.0, epochs=epochs, **common).path]
    if T != 1.0:
        runs.append(train_teacher(T=T, epochs=epochs, **common).path)
    student = distill(T=T, teacher=run_name("teacher", T), epochs=epochs, results_dir=results_dir, **common)
    runs.append(student.path)
    notes = list(student.notes)
    for path in runs:
        report = attack_model(
            model=str(path),
            attacks=attacks,
            eps=eps,
            n=n,
            settings=settings,
            results_dir=results_dir,
            **common,
        )
        notes.extend(report.notes)
    diagnoses = [
        diagnose_model(model=str(path), eps=eps, n=n, settings=settings, results_dir=results_dir, **common)
        for path in runs
    ]
    tables = rebuild_tables(results_dir)
    return DemoReport(runs, tables, time.perf_counter() - started, notes, diagnoses)
