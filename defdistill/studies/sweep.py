"""Sweeps: one YAML spec, run here in parallel processes or on a Slurm cluster through submitit.

A spec (sweep_spec.py) names a study, a dataset and its settings. In a robustness sweep each
temperature is one configuration: the teacher trained at T, the student distilled from it at T
(and any further variants), and every attack on each (Papernot et al. 2016, Figure 5 and
Table 4, with the attacks that expose their result). In a privacy sweep each transfer set is one
configuration of the membership-inference study. A configuration does only what is missing: a
run whose folder holds a finished model made with the sweep's seed and epochs is not trained
again, and an attack whose rows are recorded on the sweep's inputs, with its seed and settings,
is not run again, so an interrupted sweep, or one whose Slurm jobs partly failed, is finished
by running it again. This module is the one definition of "finished" the experiments/ scripts
share. Results merge through the same locked, atomic table writers the commands use.

Executors: `local` runs `max_parallel` configurations at once in processes on this machine;
`slurm` submits one array job (one task per pending configuration) through submitit and
returns; `submitit-local` and `submitit-debug` run the same submitit job path here (in
subprocesses, or in this process), which is how the Slurm path is tested without a cluster.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..core.progress import SILENT, ProgressReporter
from ..core.workspace import Workspace
from ..errors import DefdistillError
from ..store.runs import META_FILE, SURROGATE_NAME, format_T, read_meta, run_dir, run_name
from .sweep_spec import (  # noqa: F401  (the spec's names, re-exported: `from .sweep import load_spec`)
    STUDIES,
    SWEEP_ATTACKS,
    SWEEPS_DIR,
    SlurmSettings,
    SweepSpec,
    Variant,
    load_spec,
    parse_spec,
)

EXECUTORS = ("local", "slurm", "submitit-local", "submitit-debug")


@dataclass(frozen=True)
class Training:
    """How a robustness sweep trains its runs."""

    seed: int
    epochs: int | None
    recipe: str | None
    amp: str
    num_workers: int


@dataclass(frozen=True)
class TemperatureConfig:
    """One temperature of a robustness sweep: everything a process (here or on a node) needs."""

    sweep: str
    dataset: str
    T: float
    students: bool
    variants: tuple[Variant, ...]
    training: Training
    attacks: tuple[str, ...]
    eps: tuple[float, ...]
    n: int | None
    workspace: Workspace
    attack_n: tuple[tuple[str, int], ...] = ()  # SweepSpec.attack_n, hashable
    gradients: bool = False

    @property
    def id(self) -> str:
        return f"{self.dataset}-T{format_T(self.T)}"

    @property
    def runs(self) -> list[tuple[str, int]]:
        """The runs attacked, each with the seed it is trained with (a born-again generation g
        with seed + g - 1, as `distill` seeds it)."""
        seed = self.training.seed
        runs = [(run_name("teacher", self.T), seed)]
        if self.students:
            runs.append((run_name("student", self.T), seed))
            for variant in self.variants:
                runs.extend((name, seed + g) for g, name in enumerate(variant.run_names(self.T)))
        return runs

    @property
    def models(self) -> list[str]:
        return [name for name, _ in self.runs]


@dataclass(frozen=True)
class PrivacyConfig:
    """One transfer set of a privacy sweep: the study's teacher, its students at every T and the
    membership attacks on each (studies.privacy.run_privacy)."""

    sweep: str
    dataset: str
    transfer_set: str
    temperatures: tuple[float, ...]
    shadows: int
    seed: int
    epochs: int | None
    workspace: Workspace

    @property
    def id(self) -> str:
        return f"{self.dataset}-privacy-{self.transfer_set}"


SweepConfig = TemperatureConfig | PrivacyConfig


@dataclass
class ConfigOutcome:
    """What one configuration did: the steps run and skipped, or the error that stopped it."""

    config: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


@dataclass
class SweepResult:
    """The outcome of `run_sweep`."""

    spec: SweepSpec
    executor: str
    configs: list[str]
    already_done: list[str]
    outcomes: list[ConfigOutcome] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)  # Slurm: submitted, not waited for
    log_dir: Path | None = None
    report: Path | None = None

    @property
    def failed(self) -> list[ConfigOutcome]:
        return [o for o in self.outcomes if o.error]


def configurations(spec: SweepSpec, *, base: Path | None = None) -> list[SweepConfig]:
    """The spec's configurations, with its folders made absolute (against `base`, the current
    directory by default) so that a Slurm node finds them wherever it starts."""
    workspace = spec.workspace(base)
    temperatures = tuple(dict.fromkeys(spec.temperatures))  # a repeated T is one configuration
    if spec.study == "privacy":
        return [
            _privacy_config(spec, transfer_set, temperatures, workspace)
            for transfer_set in spec.transfer_sets
        ]
    return [_temperature_config(spec, T, workspace) for T in temperatures]


def _privacy_config(
    spec: SweepSpec, transfer_set: str, temperatures: tuple[float, ...], workspace: Workspace
) -> PrivacyConfig:
    return PrivacyConfig(
        sweep=spec.name, dataset=spec.dataset, transfer_set=transfer_set, temperatures=temperatures,
        shadows=spec.shadows, seed=spec.seed, epochs=spec.epochs, workspace=workspace,
    )  # fmt: skip


def _temperature_config(spec: SweepSpec, T: float, workspace: Workspace) -> TemperatureConfig:
    from ..data.registry import get_dataset_spec

    eps = spec.eps if spec.eps is not None else get_dataset_spec(spec.dataset).eps_grid
    return TemperatureConfig(
        sweep=spec.name, dataset=spec.dataset, T=T, students=spec.students_at(T), variants=spec.variants,
        training=Training(spec.seed, spec.epochs, spec.recipe, spec.amp, spec.num_workers),
        attacks=spec.attacks, eps=tuple(eps), n=spec.n, workspace=workspace,
        attack_n=tuple(sorted(spec.attack_n.items())), gradients=spec.gradients,
    )  # fmt: skip


# --- what is finished: runs ----------------------------------------------------------------------


def _expected_epochs(config: TemperatureConfig) -> int:
    from ..train.loop import make_recipe

    return make_recipe(config.dataset, config.training.epochs, recipe=config.training.recipe).epochs


def _trained(config: TemperatureConfig, name: str, seed: int) -> bool:
    """Whether `name` is a finished run made with `seed` and the sweep's epochs (an error if it
    was made with others: the sweep would otherwise mix runs of two settings in one table)."""
    folder = run_dir(config.workspace.runs_dir, config.dataset, name)
    if not (folder / META_FILE).is_file():
        return False
    meta = read_meta(folder)  # a damaged sidecar is an error that says so
    want = {"seed": seed, "epochs": _expected_epochs(config)}
    for key, value in want.items():
        if meta.get(key) != value:
            raise DefdistillError(
                f"{folder} was trained with {key}={meta.get(key)!r}, the sweep asks for "
                f"{key}={value!r}: remove that run or give the sweep another runs_dir"
            )
    return True


# --- what is finished: attacks -------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _test_size(dataset: str, data_dir: Path) -> int:
    from ..data.registry import load_dataset

    return len(load_dataset(dataset, "test", data_dir)[1])


def _expected_n(config: TemperatureConfig, attack: str | None = None) -> int:
    """The number of test inputs `attack` sees (default: the others): the spec's n, or its
    attack_n for that attack, at most the test split."""
    size = _test_size(config.dataset, config.workspace.data_dir)
    n = size if config.n is None else min(config.n, size)
    return min(n, _attack_n(config, attack) or n)


def _attack_n(config: TemperatureConfig, attack: str | None) -> int | None:
    return dict(config.attack_n).get(attack) if attack is not None else None


def _expected_record(config: TemperatureConfig, attack: str, model_T: float) -> dict[str, Any]:
    """What a record of `attack` on a model trained at `model_T` holds when this sweep made it:
    its number of inputs, seed and settings digest (so a row measured with other settings, or
    crafted on another surrogate, is measured again and its record replaced)."""
    from torch import nn

    from ..evaluate.attacks import ATTACKS, AttackSettings, Surrogate, settings_digest
    from ..train.loop import SURROGATE_SEED_OFFSET

    spec = ATTACKS[attack]
    seed = config.training.seed
    settings = AttackSettings(model_T=model_T)
    if spec.uses_surrogate:  # the digest names the surrogate and its seed, not its weights
        surrogate = Surrogate(SURROGATE_NAME, nn.Module(), seed=seed + SURROGATE_SEED_OFFSET)
        settings = replace(settings, surrogate=surrogate)
    n = _expected_n(config, attack)
    return {
        "n": min(n, settings.decision_n) if spec.subset else n,  # hsj: a subset
        "seed": seed,
        "settings": settings_digest(spec, settings, spec.row_norm(settings), seed),
    }


def _missing_attacks(config: TemperatureConfig, model: str) -> list[str]:
    """The attacks on `model` (a finished run) without a record, as this sweep would make it, for
    every budget."""
    from ..checks import check_eps
    from ..evaluate.attacks import ATTACKS, AttackSettings
    from ..store.tables import read_record

    meta = read_meta(run_dir(config.workspace.runs_dir, config.dataset, model))
    model_T, weights = float(meta["T"]), meta["weights_sha256"]
    missing = []
    for attack in config.attacks:
        spec = ATTACKS[attack]
        norm = spec.row_norm(AttackSettings())
        budgets: list[float | None] = list(check_eps(config.eps)) if spec.bounded else [None]
        expected = _expected_record(config, attack, model_T)
        for eps in budgets:
            key = {"dataset": config.dataset, "model": model, "attack": attack, "norm": norm, "eps": eps}
            # a record of other weights (the run was retrained) is stale: measured again
            record = read_record(
                config.workspace.results_dir, "robustness", key | {"weights_sha256": weights}
            )
            if record is None or any(record.get(k) != v for k, v in expected.items()):
                missing.append(attack)
                break
    return missing


# --- what is finished: the privacy study -------------------------------------------------------


def _privacy_missing(config: PrivacyConfig) -> list[str]:
    """The models of the study whose membership records are missing or were made with another
    seed, number of shadows, epochs or transfer set."""
    from ..store.tables import read_record
    from ..train.loop import recipe_for
    from .privacy import ATTACKS, CONTROL_NAME, NO_TRANSFER_SET, student_run_name, teacher_run_name

    epochs = recipe_for(config.dataset).epochs if config.epochs is None else config.epochs  # the study's rule
    want = {"seed": config.seed, "shadows": config.shadows, "epochs": epochs}
    attacks = [a for a in ATTACKS if a != "lira" or config.shadows]
    models = [(teacher_run_name(), NO_TRANSFER_SET)]
    models += [(student_run_name(T, config.transfer_set), config.transfer_set) for T in config.temperatures]
    if config.transfer_set == "public":  # the control runs with the public transfer set
        models.append((CONTROL_NAME, NO_TRANSFER_SET))
    missing = []
    for model, transfer_set in models:
        expected = {**want, "transfer_set": transfer_set}
        for attack in attacks:
            key = {"dataset": config.dataset, "model": model, "attack": attack, "transfer_set": transfer_set}
            record = read_record(config.workspace.results_dir, "privacy", key)
            if record is None or any(record.get(k) != v for k, v in expected.items()):
                missing.append(model)
                break
    return missing


def pending_steps(config: SweepConfig) -> list[str]:
    """What is left of a configuration (empty: finished), judged from the runs and records."""
    if isinstance(config, PrivacyConfig):
        return [f"membership attacks on {model}" for model in _privacy_missing(config)]
    steps = []
    for model, seed in config.runs:
        if not _trained(config, model, seed):
            steps.append(f"train {model}")
            steps.extend(f"{attack} on {model}" for attack in config.attacks)
            steps.extend([f"gradients of {model}"] if config.gradients else [])
            continue
        steps.extend(f"{attack} on {model}" for attack in _missing_attacks(config, model))
        steps.extend([f"gradients of {model}"] if _gradients_missing(config, model) else [])
    return steps


def _gradients_missing(config: TemperatureConfig, model: str) -> bool:
    """Whether the sweep measures gradients and `model` lacks a row on the sweep's inputs."""
    from ..store.tables import read_record

    if not config.gradients:
        return False
    weights = read_meta(run_dir(config.workspace.runs_dir, config.dataset, model))["weights_sha256"]
    key = {"dataset": config.dataset, "model": model, "weights_sha256": weights}
    record = read_record(config.workspace.results_dir, "gradients", key)
    return record is None or record.get("n") != _expected_n(config)


# --- one configuration ------------------------------------------------------------------------


def _train_once(
    config: TemperatureConfig, runs: list[tuple[str, int]], train: Callable[[], Any], outcome: ConfigOutcome
) -> None:
    """Train `runs` (made by one call of `train`) unless they are finished; the lock makes a second
    process that needs the same run (the transfer surrogate) wait for the first instead of
    training it twice."""
    name = runs[-1][0]
    folder = run_dir(config.workspace.runs_dir, config.dataset, name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{name}.lock")):
        if all(_trained(config, run, seed) for run, seed in runs):
            outcome.skipped.extend(f"train {run}" for run, _ in runs)
            return
        train()
        outcome.done.extend(f"train {run}" for run, _ in runs)


def _train_runs(config: TemperatureConfig, progress: ProgressReporter, outcome: ConfigOutcome) -> None:
    """The teacher at T, then the student and every variant distilled from it at T. A run a
    preempted or timed-out job left half-trained continues from its checkpoint (resume)."""
    from ..train.distill import distill
    from ..train.loop import train_teacher

    w, t, seed = config.workspace, config.training, config.training.seed
    teacher = run_name("teacher", config.T)
    _train_once(
        config, [(teacher, seed)],
        lambda: train_teacher(
            config.dataset, T=config.T, epochs=t.epochs, seed=seed, runs_dir=w.runs_dir,
            data_dir=w.data_dir, device=w.device, progress=progress, resume=True, recipe=t.recipe,
            amp=t.amp, num_workers=t.num_workers,
        ),
        outcome,
    )  # fmt: skip
    if not config.students:
        return

    def student(variant: Variant | None) -> None:
        v = variant or Variant("")
        distill(
            config.dataset, T=config.T, teacher=teacher, epochs=t.epochs, seed=seed, runs_dir=w.runs_dir,
            results_dir=w.results_dir, data_dir=w.data_dir, device=w.device, progress=progress,
            method=v.method, arch=v.student_arch, transfer_set=v.transfer_set, generations=v.generations,
            name=f"{run_name('student', config.T)}-{v.name}" if variant else None, resume=True,
            recipe=t.recipe, amp=t.amp, num_workers=t.num_workers,
        )  # fmt: skip

    _train_once(config, [(run_name("student", config.T), seed)], lambda: student(None), outcome)
    for variant in config.variants:
        runs = [(name, seed + g) for g, name in enumerate(variant.run_names(config.T))]
        _train_once(config, runs, functools.partial(student, variant), outcome)


def _train_surrogate(config: TemperatureConfig, progress: ProgressReporter, outcome: ConfigOutcome) -> None:
    """The transfer attack's source, `surrogate-T1`: an ordinary network with seed + 1."""
    from ..train.loop import SURROGATE_SEED_OFFSET, train_surrogate

    w, t = config.workspace, config.training
    _train_once(
        config, [(SURROGATE_NAME, t.seed + SURROGATE_SEED_OFFSET)],
        lambda: train_surrogate(
            config.dataset, seed=t.seed, epochs=t.epochs, runs_dir=w.runs_dir, data_dir=w.data_dir,
            device=w.device, progress=progress, resume=True, recipe=t.recipe, amp=t.amp,
            num_workers=t.num_workers,
        ),
        outcome,
    )  # fmt: skip


def _attack_runs(config: TemperatureConfig, progress: ProgressReporter, outcome: ConfigOutcome) -> None:
    """Every attack a model lacks, with the sweep's budgets, inputs and seed."""
    from ..evaluate.attacks import attack_model

    w = config.workspace
    missing_by_model = {model: _missing_attacks(config, model) for model in config.models}
    if any("transfer" in missing for missing in missing_by_model.values()):
        _train_surrogate(config, progress, outcome)
    for model, missing in missing_by_model.items():
        outcome.skipped.extend(f"{a} on {model}" for a in config.attacks if a not in missing)
        groups: dict[int, list[str]] = {}  # attacks with the same number of inputs run together
        for attack in missing:
            groups.setdefault(_expected_n(config, attack), []).append(attack)
        for n, attacks in groups.items():
            attack_model(
                model, dataset=config.dataset, attacks=attacks, eps=list(config.eps), n=n,
                seed=config.training.seed, runs_dir=w.runs_dir, results_dir=w.results_dir,
                data_dir=w.data_dir, device=w.device, progress=progress, surrogate=SURROGATE_NAME,
            )  # fmt: skip
        outcome.done.extend(f"{a} on {model}" for a in missing)


def _measure_gradients(config: TemperatureConfig, progress: ProgressReporter, outcome: ConfigOutcome) -> None:
    from ..evaluate.sensitivity import measure_gradients

    w = config.workspace
    missing = [model for model in config.models if _gradients_missing(config, model)]
    if missing:
        measure_gradients(
            missing, dataset=config.dataset, n=config.n, runs_dir=w.runs_dir, results_dir=w.results_dir,
            data_dir=w.data_dir, device=w.device, progress=progress,
        )  # fmt: skip
    outcome.done.extend(f"gradients of {model}" for model in missing)


def _run_privacy(config: PrivacyConfig, progress: ProgressReporter, outcome: ConfigOutcome) -> None:
    """The membership-inference study for one transfer set, unless its records are finished. The
    lock keeps two transfer sets, which share the study's teacher run, from writing it at once."""
    from .privacy import run_privacy

    w = config.workspace
    step = f"privacy study ({config.transfer_set} transfer set)"
    lock = w.runs_dir / config.dataset / ".privacy.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        if not _privacy_missing(config):
            outcome.skipped.append(step)
            return
        run_privacy(
            config.dataset, temperatures=config.temperatures, shadows=config.shadows,
            transfer_set=config.transfer_set, epochs=config.epochs, seed=config.seed, runs_dir=w.runs_dir,
            results_dir=w.results_dir, data_dir=w.data_dir, device=w.device, progress=progress,
            control=config.transfer_set == "public",
        )  # fmt: skip
        outcome.done.append(step)


def run_configuration(config: SweepConfig, *, progress: ProgressReporter = SILENT) -> ConfigOutcome:
    """Run what is missing of one configuration; errors are returned, not raised, so one bad
    configuration does not stop the others (the executor reports them at the end)."""
    started = time.perf_counter()
    outcome = ConfigOutcome(config.id)
    try:
        if isinstance(config, PrivacyConfig):
            _run_privacy(config, progress, outcome)
        else:
            _train_runs(config, progress, outcome)
            _attack_runs(config, progress, outcome)
            _measure_gradients(config, progress, outcome)
    except DefdistillError as exc:
        outcome.error = str(exc)
    except Exception as exc:  # a worker's unexpected failure is reported with the others
        outcome.error = f"unexpected {type(exc).__name__}: {exc}"
    outcome.seconds = round(time.perf_counter() - started, 3)
    return outcome


# --- executors ----------------------------------------------------------------------------------


def _run_local(
    configs: list[SweepConfig], max_parallel: int, progress: ProgressReporter
) -> list[ConfigOutcome]:
    """Run configurations here, `max_parallel` processes at a time (in this process when 1).

    The children die with this process (a parent-death signal) and are stopped with it: an
    interrupt here (Ctrl-C, SIGTERM) sends SIGTERM to every child still running, waits briefly,
    then kills what is left, before it goes on up. A rerun continues from what was recorded.
    """
    import os
    from multiprocessing.connection import wait

    from ..core.processes import child_main, child_payload, stop_processes

    outcomes: list[ConfigOutcome] = []
    with progress.task("sweep", len(configs)) as advance:
        if max_parallel == 1 or len(configs) == 1:
            for config in configs:
                outcomes.append(run_configuration(config))
                advance(1)
            return outcomes
        # spawn, not fork: a forked copy of a process that already runs torch threads can hang
        context = multiprocessing.get_context("spawn")
        waiting = list(configs)
        running: dict[Any, tuple[Any, SweepConfig, Any]] = {}  # sentinel -> process, config, pipe
        try:
            while waiting or running:
                while waiting and len(running) < max_parallel:
                    config = waiting.pop(0)
                    receive, send = context.Pipe(duplex=False)
                    payload = child_payload(run_configuration, config)
                    process = context.Process(
                        target=child_main, args=(send, os.getpid(), payload), name=f"sweep-{config.id}"
                    )
                    process.start()
                    send.close()
                    running[process.sentinel] = (process, config, receive)
                ready = set(wait([*running, *(pipe for _, _, pipe in running.values())]))
                for sentinel, (process, config, pipe) in list(running.items()):
                    if sentinel not in ready and pipe not in ready:
                        continue
                    outcome = None
                    with contextlib.suppress(EOFError, OSError):
                        outcome = pipe.recv() if pipe.poll() else None
                    if outcome is None and process.is_alive():
                        continue  # the pipe closed before the process exited: wait for its exit
                    process.join()
                    pipe.close()
                    del running[sentinel]
                    outcomes.append(
                        outcome
                        or ConfigOutcome(config.id, error=f"worker exited with code {process.exitcode}")
                    )
                    advance(1)
        except BaseException:
            stop_processes([process for process, _, _ in running.values()])
            raise
    order = {c.id: i for i, c in enumerate(configs)}
    return sorted(outcomes, key=lambda o: order[o.config])


def _submitit_parameters(spec: SweepSpec, cluster: str, max_parallel: int) -> dict[str, Any]:
    """submitit's parameters for the spec's resources (GPUs and sbatch options on Slurm only)."""
    s = spec.slurm
    params: dict[str, Any] = {
        "name": f"defdistill-{spec.name}",
        "timeout_min": s.timeout_min,
        "gpus_per_node": s.gpus_per_node if cluster == "slurm" else 0,
        "cpus_per_task": s.cpus_per_task,
        "mem_gb": s.mem_gb,
        "slurm_array_parallelism": max_parallel,
    }
    if cluster != "slurm":
        return params
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(s, key):
            params[f"slurm_{key}"] = getattr(s, key)
    if s.setup:
        params["slurm_setup"] = list(s.setup)
    if s.additional:
        params["slurm_additional_parameters"] = dict(s.additional)
    return params


def submitit_executor(spec: SweepSpec, *, cluster: str, folder: Path, max_parallel: int) -> Any:
    """A submitit executor for `cluster` (slurm, local or debug) with the spec's resources."""
    import submitit

    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    except RuntimeError as exc:  # SlurmExecutor: no srun here
        raise DefdistillError(
            f"cannot submit to Slurm from this machine ({exc}): run the sweep on a cluster login node, "
            "or use --executor local"
        ) from None
    executor.update_parameters(**_submitit_parameters(spec, cluster, max_parallel))
    return executor


def _run_submitit(
    spec: SweepSpec,
    configs: list[SweepConfig],
    cluster: str,
    folder: Path,
    max_parallel: int,
    wait: bool,
    progress: ProgressReporter,
) -> tuple[list[ConfigOutcome], list[str]]:
    """Submit one job per configuration as an array; wait for them unless on Slurm without `wait`."""
    executor = submitit_executor(spec, cluster=cluster, folder=folder, max_parallel=max_parallel)
    with executor.batch():
        jobs = [executor.submit(run_configuration, config) for config in configs]
    job_ids = [str(job.job_id) for job in jobs]
    if not wait:
        return [], job_ids
    outcomes = []
    with progress.task(f"sweep ({cluster})", len(jobs)) as advance:
        for config, job in zip(configs, jobs, strict=True):
            try:
                outcomes.append(job.result())
            except Exception as exc:  # the job died (timeout, node failure): its log says why
                first = str(exc).strip().splitlines()[-1:] or [type(exc).__name__]
                outcomes.append(ConfigOutcome(config.id, error=f"job {job.job_id} failed: {first[0]}"))
            advance(1)
    return outcomes, job_ids


# --- the sweep ----------------------------------------------------------------------------------


def run_sweep(
    spec: SweepSpec | str | Path,
    *,
    executor: str = "local",
    max_parallel: int | None = None,
    wait: bool | None = None,
    progress: ProgressReporter = SILENT,
) -> SweepResult:
    """Run (or, on Slurm, submit) every configuration of `spec` that is not finished.

    `max_parallel` overrides the spec's (processes here, or the Slurm array's parallelism).
    `wait` (Slurm only; default False) blocks until the jobs end. Tables are rebuilt, and
    REPORT.md written when the spec asks for it, once nothing is left to run.
    """
    spec = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    parallel = _check_executor(spec, executor, max_parallel)
    configs = configurations(spec)
    workspace = configs[0].workspace
    already = [c.id for c in configs if not pending_steps(c)]
    todo = [c for c in configs if c.id not in already]
    result = SweepResult(spec, executor, [c.id for c in configs], already)
    if todo and executor == "local":
        result.outcomes = _run_local(todo, parallel, progress)
    elif todo:
        cluster = executor.removeprefix("submitit-")
        folder = (
            workspace.results_dir / SWEEPS_DIR / spec.name / f"{cluster}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        result.log_dir = folder
        wait = executor != "slurm" if wait is None else wait
        result.outcomes, result.job_ids = _run_submitit(spec, todo, cluster, folder, parallel, wait, progress)
    if not result.failed and (not todo or result.outcomes):
        result.report = _finish(spec, workspace.results_dir)
    _write_log(workspace.results_dir, result)
    return result


def _check_executor(spec: SweepSpec, executor: str, max_parallel: int | None) -> int:
    """Check the executor, the parallelism (returned), the device and the folders before anything
    runs, not once per configuration."""
    from ..core.fileio import ensure_writable_dir
    from ..core.runtime import resolve_device

    if executor not in EXECUTORS:
        raise DefdistillError(f"unknown executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    parallel = spec.max_parallel if max_parallel is None else max_parallel
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise DefdistillError(f"--max-parallel must be a positive integer, got {parallel}")
    if executor in ("local", "submitit-local", "submitit-debug"):
        resolve_device(spec.device)
    workspace = spec.workspace()
    ensure_writable_dir(workspace.results_dir, "results_dir")
    ensure_writable_dir(workspace.runs_dir, "runs_dir")
    return parallel


def _finish(spec: SweepSpec, results_dir: Path) -> Path | None:
    """Rebuild the tables, and write REPORT.md when the spec asks for it (its path)."""
    from .derive import derive

    # derived rows an interrupt lost are restored; students recorded before teacher-T1 finished
    # (parallel configurations) get their baseline now
    derive(results_dir, spec.workspace().runs_dir)
    if not spec.report:
        return None
    from ..report import write_report

    return write_report(results_dir, datasets=[spec.dataset]).report


def _write_log(results_dir: Path, result: SweepResult) -> None:
    """Keep the last invocation's outcome beside the results (what ran, what failed, job ids)."""
    from ..core.fileio import atomic_write_json

    log = {
        "spec": asdict(result.spec),
        "executor": result.executor,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "already_done": result.already_done,
        "outcomes": [asdict(o) for o in result.outcomes],
        "job_ids": result.job_ids,
        "log_dir": str(result.log_dir.relative_to(results_dir)) if result.log_dir else None,
    }
    atomic_write_json(results_dir / SWEEPS_DIR / result.spec.name / "last.json", log)
