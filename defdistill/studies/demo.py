"""Compositions of the steps: the demo that runs the whole study on one dataset."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from ..checks import check_eps, check_positive_int, check_seed, check_temperature
from ..core.fileio import ensure_writable_dir
from ..core.progress import SILENT, ProgressReporter
from ..core.runtime import resolve_device
from ..core.workspace import Workspace
from ..data.registry import get_dataset_spec
from ..evaluate.attacks import AttackSettings, attack_model, check_attacks
from ..evaluate.diagnose import Diagnosis, diagnose_model
from ..store.runs import run_name
from ..store.tables import rebuild_tables
from ..train.distill import distill
from ..train.loop import RunResult, make_recipe, train_surrogate, train_teacher

# Every budget: the standard attacks, the scale-invariant APGD-DLR, random noise (the floor) and
# unbounded CW; the strongest evaluation (AutoAttack) runs at the headline budget.
DEMO_ATTACKS = ("fgsm", "pgd", "apgd-dlr", "noise", "cw")
# The demo's share of the work, so that it answers in about a minute on 2 cores: the first 120
# test inputs, the grid's inner budgets, AutoAttack's Square with 1,000 queries, the models
# attacked in 2 processes. The library's defaults stay as they are (`defdistill attack`).
DEMO_N = 120
DEMO_SQUARE_QUERIES = 1000
DEMO_JOBS = 2


@dataclass
class DemoReport:
    """What the demo produced."""

    runs: list[Path]
    tables: dict[str, pd.DataFrame]
    seconds: float
    notes: list[str] = field(default_factory=list)
    diagnoses: list[Diagnosis] = field(default_factory=list)  # the gradient-masking verdict per model
    accuracy: dict[str, float] = field(default_factory=dict)  # run name -> test accuracy (full test split)


@dataclass(frozen=True)
class _Demo:
    """The demo's checked inputs."""

    dataset: str
    T: float
    attacks: list[str]
    strongest: list[str]
    eps: list[float]
    headline_eps: float
    n: int | None
    epochs: int | None
    seed: int
    settings: AttackSettings
    workspace: Workspace
    progress: ProgressReporter


def run_demo(
    dataset: str = "digits",
    *,
    T: float = 100.0,
    attacks: Sequence[str] = DEMO_ATTACKS,
    strongest: Sequence[str] = ("autoattack",),
    eps: Sequence[float] | None = None,
    n: int | None = DEMO_N,
    epochs: int | None = None,
    seed: int = 0,
    settings: AttackSettings = AttackSettings(square_queries=DEMO_SQUARE_QUERIES),
    runs_dir: str | Path = "runs",
    results_dir: str | Path = "results",
    data_dir: str | Path = "data",
    device: str = "auto",
    progress: ProgressReporter = SILENT,
    jobs: int = DEMO_JOBS,
) -> DemoReport:
    """Teachers at T=1 and T, the student at T (and the transfer surrogate), every attack on every
    model at every budget, the `strongest` evaluation (AutoAttack) at the dataset's headline budget,
    a gradient-masking diagnosis of each model (which adds transfer, HopSkipJump, pgd-long and
    eps-1 rows), then the tables."""
    workspace = Workspace(Path(runs_dir), Path(results_dir), Path(data_dir), device)
    check_positive_int(jobs, "--jobs")
    demo = _check_demo(dataset, T, attacks, strongest, eps, n, epochs, seed, settings, workspace, progress)
    started = time.perf_counter()
    trained, notes = _train(demo)
    runs = [result.path for result in trained]
    accuracy = {result.path.name: float(result.meta["clean_acc"]) for result in trained}
    diagnoses = []
    for model_notes, diagnosis in _evaluate_all(demo, runs, jobs):
        notes.extend(n for n in model_notes if n not in notes)
        diagnoses.append(diagnosis)
    library_queries = AttackSettings().square_queries
    if demo.strongest and demo.settings.square_queries != library_queries:
        notes.append(
            f"the demo attacks the first {demo.n} test inputs and runs AutoAttack's Square with "
            f"{demo.settings.square_queries:,} queries ({library_queries:,} in the library): "
            "`defdistill attack --attacks autoattack` evaluates a model in full"
        )
    tables = rebuild_tables(workspace.results_dir)
    return DemoReport(runs, tables, time.perf_counter() - started, notes, diagnoses, accuracy)


def _check_demo(
    dataset: str,
    T: float,
    attacks: Sequence[str],
    strongest: Sequence[str],
    eps: Sequence[float] | None,
    n: int | None,
    epochs: int | None,
    seed: int,
    settings: AttackSettings,
    workspace: Workspace,
    progress: ProgressReporter,
) -> _Demo:
    """Check every input before the first model trains, not minutes later at the attacks."""
    spec = get_dataset_spec(dataset)
    T = check_temperature(T)
    names = check_attacks(attacks)
    strong = check_attacks(strongest) if strongest else []
    # the grid's inner budgets by default: the largest and smallest add little to the answer
    inner = spec.eps_grid[1:-1] if len(spec.eps_grid) > 2 else spec.eps_grid
    budgets = check_eps(inner if eps is None else eps)
    headline = spec.headline_eps if spec.headline_eps in budgets else budgets[len(budgets) // 2]
    if n is not None:
        check_positive_int(n, "--n")
    make_recipe(dataset, epochs)
    check_seed(seed)
    resolve_device(workspace.device)
    ensure_writable_dir(workspace.runs_dir / dataset, "--runs-dir")
    ensure_writable_dir(workspace.results_dir, "--results-dir")
    return _Demo(dataset, T, names, strong, budgets, headline, n, epochs, seed, settings, workspace, progress)


def _train(demo: _Demo) -> tuple[list[RunResult], list[str]]:
    """teacher-T1, teacher-T (unless T is 1) and student-T; the distillation's notes."""
    w = demo.workspace

    def teacher(T: float) -> RunResult:
        return train_teacher(
            demo.dataset, T=T, epochs=demo.epochs, seed=demo.seed, runs_dir=w.runs_dir,
            data_dir=w.data_dir, device=w.device, progress=demo.progress, force=True,
        )  # fmt: skip

    trained = [teacher(1.0)]
    if demo.T != 1.0:
        trained.append(teacher(demo.T))
    student = distill(
        demo.dataset, T=demo.T, teacher=run_name("teacher", demo.T), epochs=demo.epochs, seed=demo.seed,
        runs_dir=w.runs_dir, results_dir=w.results_dir, data_dir=w.data_dir, device=w.device,
        progress=demo.progress, force=True,
    )  # fmt: skip
    trained.append(student)
    train_surrogate(  # the transfer attack's source, trained with another seed
        demo.dataset, demo.seed, epochs=demo.epochs, runs_dir=w.runs_dir, data_dir=w.data_dir,
        device=w.device, progress=demo.progress, force=True,
    )  # fmt: skip
    return trained, list(student.notes)


def _evaluate_one(demo: _Demo, path: Path) -> tuple[list[str], Diagnosis]:
    """Every attack on one run at every budget, the strongest at the headline budget, then its
    diagnosis (which reuses those rows); the attacks' notes and the diagnosis."""
    w = demo.workspace
    notes: list[str] = []
    for attacks, budgets in ((demo.attacks, demo.eps), (demo.strongest, [demo.headline_eps])):
        if not attacks:
            continue
        report = attack_model(
            str(path), dataset=demo.dataset, attacks=attacks, eps=budgets, n=demo.n, seed=demo.seed,
            settings=demo.settings, runs_dir=w.runs_dir, results_dir=w.results_dir, data_dir=w.data_dir,
            device=w.device, progress=demo.progress,
        )  # fmt: skip
        notes.extend(n for n in report.notes if n not in notes)
    diagnosis = diagnose_model(
        str(path), dataset=demo.dataset, eps=demo.eps, n=demo.n, seed=demo.seed, settings=demo.settings,
        runs_dir=w.runs_dir, results_dir=w.results_dir, data_dir=w.data_dir, device=w.device,
        progress=demo.progress,
    )  # fmt: skip
    return notes, diagnosis


def _evaluate_all(demo: _Demo, runs: list[Path], jobs: int) -> list[tuple[list[str], Diagnosis]]:
    """`_evaluate_one` for every run, in `jobs` processes (one torch thread each; the records are
    written under the tables' file lock). Worker processes report no progress bars: each
    finished model is one step of the caller's."""
    if jobs <= 1 or len(runs) <= 1:
        return [_evaluate_one(demo, path) for path in runs]
    quiet = replace(demo, progress=SILENT)
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with (
        demo.progress.task("attack and diagnose", len(runs)) as advance,
        concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool,
    ):
        futures = [pool.submit(_evaluate_one, quiet, path) for path in runs]
        for future in concurrent.futures.as_completed(futures):
            future.result()  # a failure surfaces here, at once
            advance(1)
        return [future.result() for future in futures]
