"""Compositions of the steps: the demo that runs the whole study on one dataset."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..checks import check_eps, check_positive_int, check_seed, check_temperature
from ..core.fileio import ensure_writable_dir
from ..core.progress import SILENT, ProgressReporter
from ..core.runtime import resolve_device
from ..core.workspace import Workspace
from ..data.registry import get_dataset_spec
from ..evaluate.attacks import AttackSettings, attack_model, check_attacks
from ..evaluate.diagnose import Diagnosis, diagnose_model
from ..evaluate.worst_case import record_worst_case
from ..store.runs import run_name
from ..store.tables import rebuild_tables
from ..train.distill import distill
from ..train.loop import RunResult, make_recipe, train_surrogate, train_teacher

# Every budget: the standard attacks, the scale-invariant APGD-DLR, random noise (the floor) and
# unbounded CW; the strongest evaluation (AutoAttack) runs at the headline budget.
DEMO_ATTACKS = ("fgsm", "pgd", "apgd-dlr", "noise", "cw")
# The demo's share of the work, so that it answers in about a minute on 2 cores: the first 120
# test inputs, the grid's inner budgets, AutoAttack's Square with 1,000 queries, the models
# trained and attacked in 2 processes. The library's defaults stay as they are (`defdistill attack`).
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
    if jobs > 1:
        trained, notes, evaluated = _run_parallel(demo, jobs)
    else:
        trained, notes = _train(demo)
        evaluated = _evaluate_all(demo, [result.path for result in trained], jobs)
    runs = [result.path for result in trained]
    accuracy = {result.path.name: float(result.meta["clean_acc"]) for result in trained}
    diagnoses = []
    for model_notes, diagnosis in evaluated:
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
    """`_evaluate_one` for every run, one after the other (the trained models, `jobs` = 1)."""
    return [_evaluate_one(demo, path) for path in runs]


# The demo's work in `jobs` processes: each model's training, then per model two tasks, its
# attacks at every budget with its diagnosis (which reuses those rows and needs the surrogate)
# and its strongest evaluation (AutoAttack at the headline budget), so that two processes share
# three models evenly. Each task runs as soon as what it needs is trained; ready tasks start in
# this order of kinds (the training first: it unblocks the rest; then the longer tasks).
_KINDS = ("train", "grid", "strongest")


def _task(demo: _Demo, kind: str, what: str, path: Path | None) -> Any:
    """One unit of the parallel demo, run in a worker process (one torch thread)."""
    w = demo.workspace
    if kind == "train":
        if what == "student":
            return distill(
                demo.dataset, T=demo.T, teacher=run_name("teacher", demo.T), epochs=demo.epochs,
                seed=demo.seed, runs_dir=w.runs_dir, results_dir=w.results_dir, data_dir=w.data_dir,
                device=w.device,
            )  # fmt: skip
        if what == "surrogate":
            return train_surrogate(
                demo.dataset, demo.seed, epochs=demo.epochs, runs_dir=w.runs_dir, data_dir=w.data_dir,
                device=w.device,
            )  # fmt: skip
        return train_teacher(
            demo.dataset, T=float(what), epochs=demo.epochs, seed=demo.seed, runs_dir=w.runs_dir,
            data_dir=w.data_dir, device=w.device,
        )  # fmt: skip
    assert path is not None
    if kind == "grid":
        notes = _attack(demo, path, demo.attacks, demo.eps)
        diagnosis = diagnose_model(
            str(path), dataset=demo.dataset, eps=demo.eps, n=demo.n, seed=demo.seed, settings=demo.settings,
            runs_dir=w.runs_dir, results_dir=w.results_dir, data_dir=w.data_dir, device=w.device,
        )  # fmt: skip
        return notes, diagnosis
    return _attack(demo, path, demo.strongest, [demo.headline_eps])


def _attack(demo: _Demo, path: Path, attacks: Sequence[str], budgets: Sequence[float]) -> list[str]:
    if not attacks:
        return []
    w = demo.workspace
    report = attack_model(
        str(path), dataset=demo.dataset, attacks=attacks, eps=budgets, n=demo.n, seed=demo.seed,
        settings=demo.settings, runs_dir=w.runs_dir, results_dir=w.results_dir, data_dir=w.data_dir,
        device=w.device, progress=demo.progress,
    )  # fmt: skip
    return list(report.notes)


def _run_parallel(
    demo: _Demo, jobs: int
) -> tuple[list[RunResult], list[str], list[tuple[list[str], Diagnosis]]]:
    """Train and evaluate in `jobs` worker processes, each task as soon as its inputs exist:
    (the trained runs, the distillation's notes, per run its notes and diagnosis)."""
    quiet = replace(demo, progress=SILENT)
    models = ["1.0", *([f"{demo.T!r}"] if demo.T != 1.0 else []), "student"]
    needs = {"student": f"{demo.T!r}"}  # the student is distilled from teacher-T
    trained: dict[str, RunResult] = {}
    results: dict[tuple[str, str], Any] = {}
    ready: list[tuple[str, str]] = [("train", m) for m in models if m not in needs] + [("train", "surrogate")]
    total = len(models) * (2 if demo.strongest else 1) + len(models) + 1
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with (
        demo.progress.task("train, attack and diagnose", total) as advance,
        concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool,
    ):
        running: dict[concurrent.futures.Future[Any], tuple[str, str]] = {}
        while ready or running:
            ready.sort(key=lambda task: _KINDS.index(task[0]))
            while ready and len(running) < jobs:
                kind, what = ready.pop(0)
                path = trained[what].path if kind != "train" else None
                running[pool.submit(_task, quiet, kind, what, path)] = (kind, what)
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                kind, what = running.pop(future)
                results[kind, what] = future.result()  # a failure surfaces here, at once
                advance(1)
                if kind != "train":
                    continue
                trained[what] = results[kind, what]
                ready += [("train", m) for m, need in needs.items() if need == what]
                if what in models:
                    ready += [("strongest", what)] if demo.strongest else []
                    if "surrogate" in trained:
                        ready.append(("grid", what))
                if what == "surrogate":  # the diagnosis's transfer attack crafts on it
                    ready += [("grid", m) for m in models if m in trained]
    evaluated = []
    for m in models:
        notes, diagnosis = results["grid", m]
        notes = [*notes, *(n for n in results.get(("strongest", m), []) if n not in notes)]
        evaluated.append((notes, diagnosis))
    for m in models:  # the worst case over every record, once all are in (tasks ran concurrently)
        record_worst_case(demo.workspace.results_dir, demo.dataset, trained[m].path.name)
    return [trained[m] for m in models], list(trained["student"].notes), evaluated
